// FileStore: one file per key in a shared directory. A writer renames a finished temp file
// into place, so a reader sees either no file or the whole value, never half of one.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <thread>

#include <unistd.h>

#include "framework/distributed/store.h"
#include "framework/error.h"

namespace zt {

namespace {

namespace fs = std::filesystem;

// Keys may hold any characters ("gloo/0/rank_1"); file names keep [A-Za-z0-9_-] and escape
// the rest as %XX, so two keys never share a file and no key starts with '.' (temp files do).
std::string file_name_for(const std::string& key) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '_' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out.empty() ? "%" : out;
}

class FileStore : public Store {
 public:
  FileStore(std::string dir, std::chrono::milliseconds timeout)
      : dir_(std::move(dir)), timeout_(timeout), fresh_after_(fs::file_time_type::clock::now() - timeout) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    ZT_CHECK(!ec && fs::is_directory(dir_), "store: cannot create or open directory '", dir_, "': ", ec.message());
  }

  std::string describe() const override { return "directory '" + dir_ + "'"; }

  std::optional<std::vector<char>> try_get(const std::string& key) override {
    const fs::path path = fs::path(dir_) / file_name_for(key);
    std::error_code ec;
    const auto written = fs::last_write_time(path, ec);
    if (ec) return std::nullopt;
    if (written < fresh_after_) {  // an earlier job's key: wait for this job's
      stale_seen_ = true;
      return std::nullopt;
    }
    std::ifstream f(path, std::ios::binary);
    if (!f.good()) return std::nullopt;
    return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }

  void set(const std::string& key, const std::vector<char>& value) override {
    static std::atomic<uint64_t> counter{0};
    const fs::path final_path = fs::path(dir_) / file_name_for(key);
    const fs::path tmp = fs::path(dir_) / (".tmp-" + std::to_string(::getpid()) + "-" +
                                          std::to_string(counter.fetch_add(1)) + "-" + file_name_for(key));
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      ZT_CHECK(f.good(), "store: cannot write '", tmp.string(), "'");
      f.write(value.data(), static_cast<std::streamsize>(value.size()));
      ZT_CHECK(f.good(), "store: write to '", tmp.string(), "' failed");
    }
    std::error_code ec;
    fs::rename(tmp, final_path, ec);
    ZT_CHECK(!ec, "store: cannot publish key '", key, "' as '", final_path.string(), "': ", ec.message());
  }

  std::vector<char> get(const std::string& key) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    auto pause = std::chrono::microseconds(200);
    for (;;) {
      stale_seen_ = false;
      if (auto value = try_get(key)) return *std::move(value);
      ZT_CHECK(std::chrono::steady_clock::now() < deadline, "store: timed out after ",
               std::chrono::duration<double>(timeout_).count(), " s waiting for key '", key, "' in '", dir_, "' (",
               stale_seen_ ? "the key there is stale, written before this job started: a crashed job's leftover; "
                             "give each job a fresh store directory"
                           : "did every rank start, with the same store directory?",
               ")");
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(20000));
    }
  }

  std::chrono::milliseconds timeout() const override { return timeout_; }

 private:
  std::string dir_;
  std::chrono::milliseconds timeout_;
  fs::file_time_type fresh_after_;  // keys written before this are an earlier job's
  std::atomic<bool> stale_seen_{false};
};

}  // namespace

std::shared_ptr<Store> make_file_store(const std::string& dir, std::chrono::milliseconds timeout) {
  ZT_CHECK(!dir.empty(), "store: empty directory name");
  return std::make_shared<FileStore>(dir, timeout);
}

std::shared_ptr<Store> make_store_from_env() {
  if (const char* dir = std::getenv("ZTRAIN_STORE_DIR"); dir && *dir) return make_file_store(dir);
  ZT_CHECK(!std::getenv("MASTER_ADDR"), "store: MASTER_ADDR is set but the TCP store is not implemented; ",
           "set ZTRAIN_STORE_DIR to a directory every rank can reach (build/bin/launch does this)");
  ZT_FAIL("store: ZTRAIN_STORE_DIR is not set; start the ranks with build/bin/launch, or set it to a fresh ",
          "directory shared by every rank");
}

}  // namespace zt
