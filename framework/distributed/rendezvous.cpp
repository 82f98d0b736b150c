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
  std::vector<bool> arrived(static_cast<size_t>(info.world_size), false);
  arrived[static_cast<size_t>(info.rank)] = true;
  int missing = info.world_size - 1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    for (int r = 0; r < info.world_size; ++r) {
      if (arrived[static_cast<size_t>(r)]) continue;
      const auto value = store.try_get("rollcall/" + std::to_string(r));
      if (!value) continue;
      const Identity other = parse_identity(*value);
      ZT_CHECK(other.world_size == info.world_size, "rendezvous: rank ", r, " (", other.process, ") was started with ",
               other.variables, " but this rank (pid ", ::getpid(), ") with ", info.variables,
               "; every rank of a job must be started with the same world size");
      arrived[static_cast<size_t>(r)] = true;
      --missing;
    }
    if (missing == 0) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string list;
      int listed = 0;
      for (int r = 0; r < info.world_size && listed < 16; ++r)
        if (!arrived[static_cast<size_t>(r)]) list += (listed++ ? ", " : "") + std::to_string(r);
      if (missing > listed) list += ", ... (" + std::to_string(missing) + " in all)";
      ZT_FAIL("rendezvous: after ", std::chrono::duration<double>(timeout).count(), " s (parallel.rendezvous_timeout_s) ",
              missing, " of ", info.world_size, " ranks never arrived in the store ", store.describe(), ": rank",
              missing == 1 ? " " : "s ", list, ". This rank has ", info.variables,
              "; check that every rank was started, with the same world size and store directory");
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
