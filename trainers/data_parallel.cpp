#include "trainers/data_parallel.h"

#include <algorithm>

#include "framework/error.h"
#include "framework/op_range.h"

namespace zt {

namespace {
// Views start on 256-byte boundaries, so vectorised kernels (AdamW, norms) see aligned rows.
constexpr int64_t kAlignElems = 64;
int64_t align_up(int64_t n) { return (n + kAlignElems - 1) / kAlignElems * kAlignElems; }
}  // namespace

DataParallelGradients::DataParallelGradients(std::vector<Parameter>& params, std::shared_ptr<ProcessGroup> group,
                                             int64_t bucket_bytes)
    : group_(std::move(group)) {
  ZT_CHECK(group_, "data parallelism: no process group");
  ZT_CHECK(bucket_bytes > 0, "data parallelism: bucket size must be > 0 bytes, got ", bucket_bytes);
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / 4);
  // Plan: reverse registration order, a new bucket when the next parameter would overflow.
  std::vector<std::vector<Parameter*>> plan;
  int64_t fill = cap;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    ZT_CHECK(it->var.dtype() == DType::f32, "data parallelism: parameter '", it->name, "' is ",
             dtype_name(it->var.dtype()), "; gradient buckets hold f32 parameters");
    const int64_t n = align_up(it->var.numel());
    if (fill + n > cap && fill > 0) {
      plan.emplace_back();
      fill = 0;
    }
    plan.back().push_back(&*it);
    fill += n;
  }
  for (const auto& members : plan) {
    int64_t total = 0;
    for (const Parameter* p : members) total += align_up(p->var.numel());
    Bucket b;
    b.flat = Tensor::zeros({total}, DType::f32, members.front()->var.device());
    b.params = static_cast<int64_t>(members.size());
    int64_t offset = 0;
    for (Parameter* p : members) {
      p->var.preassign_grad(b.flat.slice(0, offset, offset + p->var.numel()).view(p->var.shape()));
      bucket_of_.push_back({p->var.impl().get(), static_cast<int64_t>(buckets_.size())});
      offset += align_up(p->var.numel());
    }
    buckets_.push_back(std::move(b));
  }
  std::sort(bucket_of_.begin(), bucket_of_.end());
}

void DataParallelGradients::zero_grad() {
  for (Bucket& b : buckets_) b.flat.fill_(0.0);
}

LeafGradReadyHook DataParallelGradients::sync_hook() {
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.work.reset();
  }
  next_launch_ = 0;
  return [this](VariableImpl& leaf) {
    const auto it = std::lower_bound(bucket_of_.begin(), bucket_of_.end(), std::pair<const VariableImpl*, int64_t>{&leaf, -1});
    if (it == bucket_of_.end() || it->first != &leaf) return;  // not one of ours (an input that requires grad)
    ++buckets_[it->second].ready;
    launch_ready();
  };
}

void DataParallelGradients::launch_ready() {
  while (next_launch_ < num_buckets() && buckets_[next_launch_].ready == buckets_[next_launch_].params) {
    ZT_OP_RANGE("dp_all_reduce");
    Bucket& b = buckets_[next_launch_++];
    b.work = group_->all_reduce_async(b.flat, ReduceOp::sum);
  }
}

void DataParallelGradients::finish() {
  ZT_OP_RANGE("dp_all_reduce");
  // Buckets whose parameters backward never reached (unused, or no hook ran) go now, in order.
  for (; next_launch_ < num_buckets(); ++next_launch_)
    buckets_[next_launch_].work = group_->all_reduce_async(buckets_[next_launch_].flat, ReduceOp::sum);
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();
    b.work.reset();
  }
}

}  // namespace zt
