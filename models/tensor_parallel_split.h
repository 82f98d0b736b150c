#pragma once
// How a parameter is split over T tensor-parallel ranks, and the two directions between the
// whole tensor and rank r's shard (init, checkpoints saved under one layout and loaded under
// another, generate from a tensor-parallel run).
//
// A split dimension of size S is `parts` equal blocks (qkv's weight: q | k | v), and each
// block is cut into T equal pieces; rank r holds piece r of every block, in block order. So
// rank r of the fused qkv projection holds the q, k and v rows of heads [r H/T, (r+1) H/T):
// whole heads, what its local attention needs.
#include <vector>

#include "framework/tensor.h"

namespace zt {

struct ShardSpec {
  int dim = -1;   // -1: replicated, every rank holds the whole tensor
  int parts = 1;  // blocks of the split dimension that are split separately
  bool sharded() const { return dim >= 0; }
  bool operator==(const ShardSpec&) const = default;
};

// Rank `rank`'s shard of `full` (contiguous, on full's device); `full` itself when replicated
// or ranks == 1. The split dimension must divide by parts * ranks (zt::Error otherwise).
Tensor shard_of(const Tensor& full, const ShardSpec& spec, int rank, int ranks);
// The whole tensor from every rank's shard, in rank order (inverse of shard_of).
Tensor unshard(const std::vector<Tensor>& shards, const ShardSpec& spec);

}  // namespace zt
