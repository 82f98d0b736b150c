#include "trainers/parallel_context.h"

#include <cstdlib>
#include <sstream>

#include <zlib.h>

#include "framework/distributed/rendezvous.h"
#include "framework/error.h"
#include "trainers/model_state.h"

namespace zt {

namespace {

// The rendezvous directory: $ZTRAIN_STORE_DIR (build/bin/launch sets it per job), else the
// config's parallel.store_dir; in either, a subfolder of the job's own when a launcher or
// scheduler names the job (job_id_from_env), so a store directory reused after a crashed job,
// or shared by two jobs, never mixes their keys.
std::shared_ptr<Store> rendezvous_store(const Config& c, const ParallelLayout& l) {
  std::string dir;
  if (const char* env = std::getenv("ZTRAIN_STORE_DIR"); env && *env) dir = env;
  ZT_CHECK(!dir.empty() || !c.parallel.store_dir.empty(), l.world_size, " ranks (started by ", l.launcher,
           ") need a rendezvous directory that every rank can see: set ZTRAIN_STORE_DIR or "
           "parallel.store_dir (a shared filesystem across nodes), or start the ranks with build/bin/launch");
  if (dir.empty()) dir = c.parallel.store_dir;
  if (const std::string job = job_id_from_env(); !job.empty()) dir += "/job-" + job;
  return make_file_store(dir);
}

int local_world_size(const ParallelLayout& l) {
  for (const char* v : {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"})
    if (const char* s = std::getenv(v); s && *s) return std::max(1, std::atoi(s));
  return l.world_size;  // unknown: assume one machine
}

}  // namespace

ParallelLayout ParallelLayout::of(const RankInfo& info, int64_t tensor_parallel_size) {
  const int T = static_cast<int>(tensor_parallel_size);
  ZT_CHECK(T >= 1 && info.world_size % T == 0, "parallel.tensor_parallel_size ", T, " does not divide the ",
           info.world_size, " rank", info.world_size == 1 ? "" : "s", " of this job (started by ", info.launcher,
           "); start a multiple of ", T, " ranks, e.g. build/bin/launch --nproc ", T, " -- build/bin/train ...");
  ParallelLayout l;
  l.world_size = info.world_size;
  l.rank = info.rank;
  l.local_rank = info.local_rank;
  l.launcher = info.launcher;
  l.tp_size = T;
  l.tp_rank = info.rank % T;
  l.dp_size = info.world_size / T;
  l.dp_rank = info.rank / T;
  return l;
}

std::string ParallelLayout::describe() const {
  std::ostringstream s;
  s << world_size << " rank" << (world_size == 1 ? "" : "s");
  if (world_size > 1) s << " (" << launcher << ")";
  s << ": tensor parallel " << tp_size << " x data parallel " << dp_size;
  return s.str();
}

Device rank_device(const std::string& name, const ParallelLayout& l, int local_ranks) {
  Device d = resolve_device(name);
  if (!d.is_cuda() || l.world_size == 1) return d;
  const bool index_given = name.find(':') != std::string::npos;
  if (index_given) return d;  // the user pinned it (one rank per machine, say)
  const int gpus = cuda_device_count();
  ZT_CHECK(local_ranks <= gpus, local_ranks, " ranks on this machine need one GPU each, but ", gpus,
           " GPU(s) are visible; start at most ", gpus, " ranks per machine or set train.device=cpu");
  return Device::cuda(l.local_rank);
}

ParallelContext single_rank_context(Device device) {
  ParallelContext ctx;
  ctx.device = device;
  ctx.world = ctx.tp = ctx.dp = make_process_group(device.is_cuda() ? "nccl" : "gloo", RankInfo{}, nullptr, device);
  return ctx;
}

ParallelContext make_parallel_context(const Config& c, const std::string& config_yaml) {
  ParallelContext ctx;
  ctx.layout = ParallelLayout::of(rank_info_from_env(), c.parallel.tensor_parallel_size);
  const ParallelLayout& l = ctx.layout;
  ctx.device = rank_device(c.train.device, l, local_world_size(l));
  const std::string backend = ctx.device.is_cuda() ? "nccl" : "gloo";
  if (l.world_size == 1) {
    ParallelContext one = single_rank_context(ctx.device);
    one.layout = l;
    return one;
  }
  std::shared_ptr<Store> store = rendezvous_store(c, l);
  // Every rank arrives, with the same world size, within parallel.rendezvous_timeout_s, or
  // each says which ranks are missing; only then does the backend connect.
  roll_call(*store, rank_info_from_env(), std::chrono::seconds(c.parallel.rendezvous_timeout_s));
  std::vector<int> all(static_cast<size_t>(l.world_size));
  for (int r = 0; r < l.world_size; ++r) all[static_cast<size_t>(r)] = r;
  ctx.world = make_subgroup(backend, l.rank, all, "world", store, ctx.device);

  // Same config everywhere: a rank started with another --set would train another model.
  // The fingerprint is zlib's crc32 and the length (std::hash may differ between builds, and
  // ranks on different nodes may run different builds of the same version).
  const uint64_t crc = ::crc32_z(0, reinterpret_cast<const Bytef*>(config_yaml.data()), config_yaml.size());
  const uint64_t mine = ((static_cast<uint64_t>(config_yaml.size()) & 0x7fffffffull) << 32) | crc;
  std::vector<int64_t> slots(static_cast<size_t>(l.world_size), 0);
  slots[static_cast<size_t>(l.rank)] = static_cast<int64_t>(mine);
  Tensor h = Tensor::from_vector(slots, {l.world_size}, ctx.device);
  ctx.world->all_reduce(h, ReduceOp::sum);  // every rank's hash in its own slot
  const std::vector<int64_t> all_hashes = h.to_vector<int64_t>();
  for (int r = 0; r < l.world_size; ++r)
    ZT_CHECK(all_hashes[static_cast<size_t>(r)] == all_hashes[0], "rank ", r, " runs a different config than rank 0 ",
             "(different --set values or config files); every rank must resolve the same config");

  std::vector<int> tp_ranks, dp_ranks;
  const int group = l.rank / l.tp_size;
  for (int t = 0; t < l.tp_size; ++t) tp_ranks.push_back(group * l.tp_size + t);
  for (int d = 0; d < l.dp_size; ++d) dp_ranks.push_back(d * l.tp_size + l.tp_rank);
  ctx.tp = make_subgroup(backend, l.rank, tp_ranks, "tp" + std::to_string(group), store, ctx.device);
  ctx.dp = make_subgroup(backend, l.rank, dp_ranks, "dp" + std::to_string(l.tp_rank), store, ctx.device);
  return ctx;
}

}  // namespace zt
