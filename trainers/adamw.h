#pragma once
// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, PyTorch's formulation:
//   p -= lr * wd * p                      (only for parameters with decay = true)
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// State (m, v: f32, like the parameters; t) lives in flat buffers, one per parameter bucket
// (trainers/parameter_buckets.h), holding only this data-parallel rank's shard of each bucket
// under ZeRO (parallel.zero_stage >= 1) and the whole bucket otherwise. Checkpoints see it per
// parameter, whole (full_state / load_state), so a checkpoint resumes under any data-parallel
// size and any zero_stage.
//
// The f32 master weights are the parameters themselves, except under ZeRO with bf16 compute
// (a sharded layout and bf16 `weights`): then AdamW keeps the masters of its shard only, flat
// per bucket next to m and v (4/D bytes per parameter instead of 4), and every parameter leaf
// becomes compute-resident (framework/autograd/mixed_precision.h): its data a bf16 view of a
// flat bucket laid out like the f32 one (weight_buckets()), its gradient still f32. step()
// writes the bf16 weights of its pieces, rounded from the new masters as a cast rounds, so the
// training is bit for bit that of stage 0; the caller all-gathers the bf16 buckets in place
// (DataParallelGradients::all_gather_weights). Everything that needs the f32 values reads
// them here: master() per piece, full_state().weights for checkpoints, load_masters().
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/distributed/process_group.h"
#include "models/parameter_registry.h"
#include "trainers/parameter_buckets.h"

namespace zt {

struct AdamWOptions {
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
};

// The reduced gradient of one piece of this rank's shard (numel elements, contiguous f32),
// or an undefined tensor when its parameter has none (the piece is then left alone).
using PieceGradient = std::function<Tensor(const ShardPiece&)>;
// The default source: the piece's elements of its parameter's .grad.
PieceGradient gradient_from_params(const std::vector<Parameter>& params);

class AdamW {
 public:
  // `layout` must describe `params` (the same list); one shard: every parameter is updated.
  // `weights`: what the leaves hold. f32: the masters. bf16 (a sharded layout only): the
  // compute weights, AdamW the masters of its shard (see above); the leaves are converted here.
  AdamW(std::vector<Parameter>& params, AdamWOptions options, std::shared_ptr<const ParameterBuckets> layout,
        DType weights = DType::f32);
  // Unsharded, one bucket of everything.
  AdamW(std::vector<Parameter>& params, AdamWOptions options);

  // One update with learning rate lr of this rank's pieces; pieces without a gradient are
  // left alone. Each gradient is used times grad_scale (gradient clipping's factor,
  // grad_clip.h: clip_factor), as if it had been scaled in place first, without that pass.
  // Sharded, only this rank's pieces of the weights change (and, keeping the masters, of the
  // bf16 weight buckets): the caller all-gathers them (DataParallelGradients::all_gather_weights).
  void step(double lr, double grad_scale = 1.0);
  void step(double lr, double grad_scale, const PieceGradient& gradient);

  int64_t steps_taken() const { return t_; }
  const ParameterBuckets& layout() const { return *layout_; }
  const std::shared_ptr<const ParameterBuckets>& layout_shared() const { return layout_; }
  // Bytes of m and v held by this rank, and of the f32 masters when it keeps them.
  int64_t state_bytes() const;
  // Whether this rank keeps the f32 masters of its shard (the leaves are bf16 compute weights).
  bool keeps_masters() const { return !master_.empty(); }
  // Bytes of the model's weights this rank holds outside the optimizer: the bf16 buckets when
  // it keeps the masters, else the f32 parameters.
  int64_t weight_bytes() const;
  // Keeping the masters: per bucket, the flat bf16 weights every leaf views (else empty).
  const std::vector<Tensor>& weight_buckets() const { return weights_; }
  // The f32 master values of one of this rank's pieces (a view of the masters or the parameter).
  Tensor master(const ShardPiece& piece) const;

  struct FullState {
    std::map<std::string, Tensor> m, v;  // keyed by parameter name, each the parameter's shape
    std::map<std::string, Tensor> weights;  // the f32 masters, when AdamW keeps them (else empty)
  };
  // The state per parameter, whole. Unsharded: views of the flat buffers. Sharded: a
  // collective over `dp` (every rank of the data-parallel group calls it), bucket by bucket,
  // into host tensors on rank `root` of the group only (the others return empty maps), so the
  // device holds one extra bucket at a time and one rank of a node the host copy.
  FullState full_state(ProcessGroup* dp, int root = 0) const;
  // Restores state saved per parameter (full_state's form) by a run with the same parameters,
  // whatever its data-parallel size or sharding: each rank takes its pieces. Shapes are checked.
  void load_state(int64_t t, const std::map<std::string, Tensor>& m, const std::map<std::string, Tensor>& v);
  // Keeping the masters: the f32 weights per parameter, whole (a checkpoint's "model/<name>"):
  // this rank takes its pieces, the leaves their bf16 rounding. Otherwise nothing to do (the
  // parameters are the masters, loaded as the model).
  void load_masters(const std::map<std::string, Tensor>& weights);

 private:
  Tensor state_piece(const std::vector<Tensor>& flat, const ShardPiece& piece) const;
  // Checks that `map` holds a tensor of every parameter's shape (`what` names it in errors).
  void check_per_parameter(const std::map<std::string, Tensor>& map, const char* what) const;

  std::vector<Parameter>& params_;
  AdamWOptions opt_;
  std::shared_ptr<const ParameterBuckets> layout_;
  int64_t t_ = 0;
  std::vector<Tensor> m_, v_;  // per bucket: this rank's shard, f32
  std::vector<Tensor> master_;  // per bucket: this rank's shard of the f32 masters (when kept)
  std::vector<Tensor> weights_;  // per bucket, whole: the leaves' bf16 weights (when kept)
};

}  // namespace zt
