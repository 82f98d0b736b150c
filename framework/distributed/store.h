#pragma once
// Rendezvous key-value store: ranks publish and wait for small blobs (Gloo addresses, the
// NCCL unique id). FileStore works on one machine or a shared filesystem.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace zt {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  // Blocks until key exists or the timeout passes (then throws zt::Error naming the key).
  virtual std::vector<char> get(const std::string& key) = 0;
  // The value if the key exists now; never waits.
  virtual std::optional<std::vector<char>> try_get(const std::string& key) = 0;
  virtual std::chrono::milliseconds timeout() const = 0;
  // Where the keys live, for messages ("directory '/tmp/x'").
  virtual std::string describe() const = 0;
};

// One file per key in `dir`, written atomically (temp file + rename). The directory is
// created when missing. Use a fresh directory per job (launch and the trainer put each job in
// its own subfolder). A key file older than the store's creation minus `timeout` is stale (a
// crashed job's leftover, since ranks of one job start within the timeout of each other): it
// reads as absent until this job rewrites it, and a get that times out on it says so.
std::shared_ptr<Store> make_file_store(const std::string& dir,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(120));

// The store this process's launcher arranged: a FileStore in $ZTRAIN_STORE_DIR. (A TCP store
// for MASTER_ADDR/MASTER_PORT is not implemented yet; that setting alone is a clear error.)
std::shared_ptr<Store> make_store_from_env();

}  // namespace zt
