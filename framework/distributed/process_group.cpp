// rank_info_from_env, the single-rank group, and make_process_group (backend choice).
#include "framework/distributed/process_group.h"

#include <cstdlib>
#include <map>
#include <mutex>

#include "framework/distributed/process_group_gloo.h"
#include "framework/distributed/process_group_nccl.h"
#include "framework/error.h"

namespace zt {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  ZT_CHECK(end && *end == '\0' && x >= 0 && x <= (1 << 20), name, "='", v, "' is not a non-negative integer");
  return static_cast<int>(x);
}

// A world of one: every collective is the identity (all_gather copies), on any device.
class SingleRankGroup : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce(Tensor& t, ReduceOp) override { ZT_CHECK(t.defined(), "all_reduce of an undefined tensor"); }
  void all_gather(const Tensor& in, Tensor& out) override {
    Shape expected{1};
    expected.insert(expected.end(), in.shape().begin(), in.shape().end());
    ZT_CHECK(out.shape() == expected, "all_gather: output shape ", shape_str(out.shape()), ", expected ",
             shape_str(expected));
    out.copy_(in.view(expected));
  }
  void broadcast(Tensor& t, int root) override {
    ZT_CHECK(root == 0, "broadcast: root ", root, " outside a group of 1 rank");
  }
  void barrier() override {}
};

// Groups made from one Store see it under prefixes "group0/", "group1/", ... in creation
// order; every rank creates its groups in the same order, so the prefixes agree across ranks
// and two groups never read each other's keys. Counting per Store object (not per process)
// lets ranks that are threads of one test process, each with its own Store, count
// independently.
class PrefixStore : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> inner, std::string prefix) : inner_(std::move(inner)), prefix_(std::move(prefix)) {}
  void set(const std::string& key, const std::vector<char>& value) override { inner_->set(prefix_ + key, value); }
  std::vector<char> get(const std::string& key) override { return inner_->get(prefix_ + key); }
  std::optional<std::vector<char>> try_get(const std::string& key) override { return inner_->try_get(prefix_ + key); }
  std::chrono::milliseconds timeout() const override { return inner_->timeout(); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::shared_ptr<Store> inner_;
  std::string prefix_;
};

std::shared_ptr<Store> next_group_store(std::shared_ptr<Store> store) {
  // Keyed by address, with a weak_ptr to tell a live store from a new one that reuses the
  // address of a dead one (whose count must not carry over).
  static std::mutex mu;
  static std::map<const Store*, std::pair<std::weak_ptr<Store>, int>> counters;
  std::string prefix;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = counters.begin(); it != counters.end();)
      it = it->second.first.expired() ? counters.erase(it) : std::next(it);
    auto& entry = counters[store.get()];
    if (entry.first.expired()) entry = {store, 0};
    prefix = "group" + std::to_string(entry.second++) + "/";
  }
  return std::make_shared<PrefixStore>(std::move(store), prefix);
}

}  // namespace

RankInfo rank_info_from_env() {
  // One launcher's triple of variable names; the first launcher whose rank variable is set wins.
  struct Names {
    const char *launcher, *rank, *size, *local;
  };
  static const Names kLaunchers[] = {
      {"launch", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
  };
  RankInfo info;
  for (const Names& n : kLaunchers) {
    const char* r = std::getenv(n.rank);
    const char* w = std::getenv(n.size);
    if ((!r || !*r) && (!w || !*w)) continue;
    ZT_CHECK(r && *r && w && *w, n.rank, " is ", r && *r ? std::string("set to '") + r + "'" : std::string("not set"),
             " but ", n.size, " is ", w && *w ? std::string("set to '") + w + "'" : std::string("not set"),
             ": a launcher (", n.launcher, ") sets both; set both or neither");
    info.launcher = n.launcher;
    info.rank = env_int(n.rank, 0);
    info.world_size = env_int(n.size, 1);
    info.local_rank = env_int(n.local, 0);
    ZT_CHECK(info.world_size >= 1, n.size, "=", info.world_size, " must be at least 1");
    ZT_CHECK(info.rank < info.world_size, n.rank, "=", info.rank, " is outside ", n.size, "=", info.world_size);
    const char* l = std::getenv(n.local);
    info.variables = std::string(n.rank) + "=" + r + " " + n.size + "=" + w + " " + n.local + "=" + (l && *l ? l : "(unset)");
    break;
  }
  return info;
}

namespace {
// A collective that already ran: wait() has nothing left to do.
class DoneWork : public Work {
 public:
  void wait() override {}
};
}  // namespace

std::shared_ptr<Work> ProcessGroup::all_reduce_async(Tensor t, ReduceOp op) {
  all_reduce(t, op);
  return std::make_shared<DoneWork>();
}

void ProcessGroup::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  const int64_t n = out.numel();
  ZT_CHECK(in.numel() == n * size() && in.dtype() == out.dtype(), "reduce_scatter: input of ", in.numel(),
           " elements for ", size(), " ranks x ", n, " (", dtype_name(in.dtype()), " -> ", dtype_name(out.dtype()), ")");
  Tensor all = in.contiguous().clone().reshape({size(), n});
  all_reduce(all, op);
  out.copy_(all.select(0, rank()).view(out.shape()));
}

namespace {
int64_t chunk_of(const ProcessGroup& g, const Tensor& flat, const char* op) {
  ZT_CHECK(flat.defined() && flat.dim() == 1 && flat.is_contiguous(), op, ": needs a contiguous 1-D tensor, got ",
           flat.defined() ? shape_str(flat.shape()) : std::string("an undefined one"));
  ZT_CHECK(flat.numel() % g.size() == 0, op, ": ", flat.numel(), " elements do not split into ", g.size(), " chunks");
  return flat.numel() / g.size();
}
}  // namespace

std::shared_ptr<Work> ProcessGroup::reduce_scatter_in_place_async(Tensor flat, ReduceOp op) {
  chunk_of(*this, flat, "reduce_scatter_in_place");
  return all_reduce_async(std::move(flat), op);
}

void ProcessGroup::all_gather_in_place(Tensor& flat) {
  const int64_t n = chunk_of(*this, flat, "all_gather_in_place");
  const Tensor mine = flat.slice(0, rank() * n, (rank() + 1) * n).clone();
  Tensor out = flat.view({size(), n});
  all_gather(mine, out);
}

std::shared_ptr<ProcessGroup> make_process_group(const std::string& backend, const RankInfo& info,
                                                 std::shared_ptr<Store> store, Device device) {
  ZT_CHECK(backend == "gloo" || backend == "nccl" || backend == "auto", "process group: unknown backend '",
           backend, "' (expected gloo, nccl or auto)");
  ZT_CHECK(info.world_size >= 1 && info.rank >= 0 && info.rank < info.world_size, "process group: rank ",
           info.rank, " outside a world of ", info.world_size);
  if (info.world_size == 1) return std::make_shared<SingleRankGroup>();
  ZT_CHECK(store, "process group: ", info.world_size, " ranks need a rendezvous store (ZTRAIN_STORE_DIR)");

  store = next_group_store(std::move(store));
  const std::string chosen = backend != "auto" ? backend : (device.is_cuda() ? "nccl" : "gloo");
  if (chosen == "gloo") {
    ZT_CHECK(device.is_cpu(), "process group: the gloo backend works on CPU tensors, not ", device.str(),
             " (use nccl)");
#ifdef ZTRAIN_WITH_GLOO
    return make_gloo_process_group(info, std::move(store));
#else
    ZT_FAIL("process group: this ztrain was built without Gloo (install libgloo-dev and rebuild) so ",
            info.world_size, " CPU ranks cannot talk");
#endif
  }
  ZT_CHECK(device.is_cuda(), "process group: the nccl backend needs a CUDA device, got ", device.str());
#ifdef ZTRAIN_WITH_NCCL
  return make_nccl_process_group(info, std::move(store), device);
#else
  ZT_FAIL("process group: this ztrain was built without NCCL (needs CUDA and NCCL at build time), so ",
          info.world_size, " CUDA ranks cannot talk");
#endif
}

std::shared_ptr<ProcessGroup> make_subgroup(const std::string& backend, int world_rank, const std::vector<int>& ranks,
                                            const std::string& name, std::shared_ptr<Store> store, Device device) {
  ZT_CHECK(!ranks.empty(), "process group '", name, "': no ranks");
  int index = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    ZT_CHECK(i == 0 || ranks[i] > ranks[i - 1], "process group '", name, "': ranks must be ascending and distinct");
    if (ranks[i] == world_rank) index = static_cast<int>(i);
  }
  ZT_CHECK(index >= 0, "process group '", name, "': world rank ", world_rank, " is not one of its members");
  RankInfo info;
  info.rank = index;
  info.world_size = static_cast<int>(ranks.size());
  if (info.world_size == 1) return make_process_group(backend, info, nullptr, device);
  ZT_CHECK(store, "process group '", name, "': ", ranks.size(), " ranks need a rendezvous store");
  // The named prefix replaces the creation-order counter: disjoint groups ("tp0", "tp1")
  // are created in the same order on their own members but must not share keys.
  return make_process_group(backend, info, std::make_shared<PrefixStore>(std::move(store), name + "/"), device);
}

}  // namespace zt
