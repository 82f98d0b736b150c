#include "framework/distributed/rendezvous.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "framework/error.h"

namespace zt {

namespace {

std::string self_identity(const RankInfo& info) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '?';
  std::ostringstream s;
  s << info.world_size << "\n" << info.variables << "\n" << "pid " << ::getpid() << " on " << host;
  return s.str();
}

struct Identity {
  int world_size = 0;
  std::string variables, process;
};

Identity parse_identity(const std::vector<char>& bytes) {
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  Identity id;
  std::string first;
  std::getline(in, first);
  id.world_size = std::atoi(first.c_str());
  std::getline(in, id.variables);
  std::getline(in, id.process);
  return id;
}

}  // namespace

void roll_call(Store& store, const RankInfo& info, std::chrono::milliseconds timeout) {
  const std::string mine = self_identity(info);
  const std::vector<char> mine_bytes(mine.begin(), mine.end());
  store.set("rollcall/" + std::to_string(info.rank), mine_bytes);
  // Ranks are checked in order and a sweep stops at the first one missing, so a poll costs
  // O(arrived) even for a world of 2^20 that will never fill.
  std::vector<bool> arrived(static_cast<size_t>(info.world_size), false);
  arrived[static_cast<size_t>(info.rank)] = true;
  const auto check = [&](int r) {
    if (arrived[static_cast<size_t>(r)]) return true;
    const auto value = store.try_get("rollcall/" + std::to_string(r));
    if (!value) return false;
    const Identity other = parse_identity(*value);
    ZT_CHECK(other.world_size == info.world_size, "rendezvous: rank ", r, " (", other.process, ") was started with ",
             other.variables, " but this rank (pid ", ::getpid(), ") with ", info.variables,
             "; every rank of a job must be started with the same world size");
    arrived[static_cast<size_t>(r)] = true;
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (int next = 0;;) {
    while (next < info.world_size && check(next)) ++next;
    if (next == info.world_size) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      // Name the first missing ranks; count them all when the world is small enough to scan.
      constexpr int kScanAll = 65536, kListed = 16;
      std::string list;
      int listed = 0, missing = 0;
      const bool complete = info.world_size <= kScanAll;
      for (int r = next; r < info.world_size && (complete || listed < kListed); ++r) {
        if (check(r)) continue;
        ++missing;
        if (listed < kListed) list += (listed++ ? ", " : "") + std::to_string(r);
      }
      if (complete && missing > listed) list += ", ... (" + std::to_string(missing) + " in all)";
      if (!complete) list += " and maybe more of the " + std::to_string(info.world_size) + " ranks expected";
      ZT_FAIL("rendezvous: after ", std::chrono::duration<double>(timeout).count(), " s (parallel.rendezvous_timeout_s) ",
              complete ? std::to_string(missing) + " of " + std::to_string(info.world_size) + " ranks" : std::string("ranks"),
              " never arrived in the store ", store.describe(), ": rank", missing == 1 ? " " : "s ", list,
              ". This rank has ", info.variables, "; check that every rank was started, with the same world size and "
              "store directory");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  // Two processes that both think they are this rank: the later write won.
  const auto again = store.try_get("rollcall/" + std::to_string(info.rank));
  ZT_CHECK(!again || *again == mine_bytes, "rendezvous: two processes were started as rank ", info.rank, " (",
           parse_identity(again.value_or(std::vector<char>())).process, " and pid ", ::getpid(), ", ",
           info.variables, "); give every process its own rank");
}

std::string job_id_from_env() {
  std::string id;
  if (const char* v = std::getenv("ZTRAIN_JOB_ID"); v && *v) {
    id = v;
  } else if (const char* slurm = std::getenv("SLURM_JOB_ID"); slurm && *slurm) {
    id = slurm;
    if (const char* step = std::getenv("SLURM_STEP_ID"); step && *step) id += std::string(".") + step;
  } else {
    for (const char* job : {"PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"})
      if (const char* v = std::getenv(job); v && *v) {
        id = v;
        break;
      }
  }
  for (char& ch : id)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') ch = '_';
  return id;
}

}  // namespace zt
