#include "trainers/data_parallel.h"

#include <algorithm>

#include "framework/error.h"
#include "framework/op_range.h"

namespace zt {

DataParallelGradients::DataParallelGradients(std::vector<Parameter>& params, std::shared_ptr<ProcessGroup> group,
                                             std::shared_ptr<const ParameterBuckets> layout, int zero_stage)
    : params_(params), group_(std::move(group)), layout_(std::move(layout)), zero_stage_(zero_stage) {
  ZT_CHECK(group_, "data parallelism: no process group");
  ZT_CHECK(layout_, "data parallelism: no parameter layout");
  ZT_CHECK(zero_stage_ >= 0 && zero_stage_ <= 2, "data parallelism: zero_stage ", zero_stage_, " (0, 1 or 2)");
  ZT_CHECK(layout_->shards() == (zero_stage_ >= 1 ? group_->size() : 1), "data parallelism: a layout of ",
           layout_->shards(), " shards for zero_stage ", zero_stage_, " over ", group_->size(), " ranks");
  ZT_CHECK(!params_.empty(), "data parallelism: no parameters");
  const Device device = params_.front().var.device();
  for (size_t b = 0; b < layout_->buckets().size(); ++b) {
    const ParameterBucket& pb = layout_->buckets()[b];
    Bucket bucket;
    if (zero_stage_ < 2) {
      bucket.flat = Tensor::zeros({pb.numel}, DType::f32, device);
      for (const BucketSlot& s : pb.slots) {
        Variable& var = params_[static_cast<size_t>(s.param)].var;
        var.preassign_grad(bucket.flat.slice(0, s.offset, s.offset + s.numel).view(var.shape()));
      }
    } else {
      bucket.shard = Tensor::zeros({layout_->shard_numel(static_cast<int64_t>(b))}, DType::f32, device);
    }
    for (const BucketSlot& s : pb.slots)
      bucket_of_.push_back({params_[static_cast<size_t>(s.param)].var.impl().get(), static_cast<int64_t>(b)});
    buckets_.push_back(std::move(bucket));
  }
  std::sort(bucket_of_.begin(), bucket_of_.end());
}

void DataParallelGradients::zero_grad() {
  for (Bucket& b : buckets_) {
    if (b.flat.defined()) b.flat.fill_(0.0);
    if (b.shard.defined()) b.shard.fill_(0.0);
  }
  if (zero_stage_ == 2)
    for (auto& p : params_) p.var.zero_grad();  // drops a gradient a failed step may have left
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
    ++buckets_[static_cast<size_t>(it->second)].ready;
    launch_ready();
  };
}

void DataParallelGradients::launch(int64_t index) {
  ZT_OP_RANGE("dp_reduce");
  Bucket& b = buckets_[static_cast<size_t>(index)];
  if (zero_stage_ == 0) {
    b.work = group_->all_reduce_async(b.flat, ReduceOp::sum);
    return;
  }
  if (zero_stage_ == 1) {
    b.work = group_->reduce_scatter_in_place_async(b.flat, ReduceOp::sum);
    return;
  }
  // Stage 2: the members' gradients into a transient bucket, then dropped.
  const ParameterBucket& pb = layout_->buckets()[static_cast<size_t>(index)];
  b.in_flight = Tensor::zeros({pb.numel}, DType::f32, params_.front().var.device());
  for (const BucketSlot& s : pb.slots) {
    Variable& var = params_[static_cast<size_t>(s.param)].var;
    if (!var.has_grad()) continue;
    b.in_flight.slice(0, s.offset, s.offset + s.numel).copy_(var.grad().reshape({-1}));
    var.zero_grad();
  }
  b.work = group_->reduce_scatter_in_place_async(b.in_flight, ReduceOp::sum);
}

void DataParallelGradients::launch_ready() {
  while (next_launch_ < num_buckets() &&
         buckets_[static_cast<size_t>(next_launch_)].ready ==
             static_cast<int64_t>(layout_->buckets()[static_cast<size_t>(next_launch_)].slots.size()))
    launch(next_launch_++);
}

void DataParallelGradients::finish_micro_batch(bool last) {
  if (!syncs(last)) return;
  // Buckets whose parameters backward never reached (unused, or no hook ran) go now, in order.
  for (; next_launch_ < num_buckets(); ++next_launch_) launch(next_launch_);
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    if (b.work) b.work->wait();
    b.work.reset();
    if (b.in_flight.defined()) {
      const int64_t lo = layout_->shard_begin(static_cast<int64_t>(i));
      b.shard.add_(b.in_flight.slice(0, lo, lo + layout_->shard_numel(static_cast<int64_t>(i))));
      b.in_flight = Tensor();
    }
  }
}

PieceGradient DataParallelGradients::gradient() const {
  if (zero_stage_ < 2) return gradient_from_params(params_);
  return [this](const ShardPiece& piece) {
    return buckets_[static_cast<size_t>(piece.bucket)].shard.slice(0, piece.shard_offset,
                                                                    piece.shard_offset + piece.numel);
  };
}

void DataParallelGradients::all_gather_weights(const std::vector<Tensor>& resident) {
  if (zero_stage_ == 0) return;
  ZT_OP_RANGE("dp_all_gather");
  if (!resident.empty()) {
    ZT_CHECK(resident.size() == layout_->buckets().size(), "all_gather_weights: ", resident.size(),
             " weight buckets for a layout of ", layout_->buckets().size());
    for (const Tensor& bucket : resident) {
      Tensor flat = bucket;
      group_->all_gather_in_place(flat);
      flat.storage()->bump_version();  // written by the collective: the leaves' data changed
    }
    return;
  }
  Tensor buffer = Tensor::zeros({layout_->largest_bucket()}, DType::f32, params_.front().var.device());
  const auto& pieces = layout_->pieces();
  auto piece = pieces.begin();
  for (size_t b = 0; b < layout_->buckets().size(); ++b) {
    const ParameterBucket& pb = layout_->buckets()[b];
    Tensor flat = buffer.slice(0, 0, pb.numel);
    const int64_t lo = layout_->shard_begin(static_cast<int64_t>(b));
    for (; piece != pieces.end() && piece->bucket == static_cast<int64_t>(b); ++piece) {
      const Tensor w = params_[static_cast<size_t>(piece->param)].var.tensor().view({-1});
      flat.slice(0, lo + piece->shard_offset, lo + piece->shard_offset + piece->numel)
          .copy_(w.slice(0, piece->param_begin, piece->param_begin + piece->numel));
    }
    group_->all_gather_in_place(flat);
    for (const BucketSlot& s : pb.slots) {
      Tensor w = params_[static_cast<size_t>(s.param)].var.tensor().view({-1});
      w.copy_(flat.slice(0, s.offset, s.offset + s.numel));  // bumps the version: bf16 copies recast
    }
  }
}

int64_t DataParallelGradients::gradient_bytes() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += (b.flat.defined() ? b.flat.numel() : 0) + (b.shard.defined() ? b.shard.numel() : 0);
  return 4 * n;
}

}  // namespace zt
