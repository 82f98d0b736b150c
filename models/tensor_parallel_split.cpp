#include "models/tensor_parallel_split.h"

#include "framework/error.h"

namespace zt {

Tensor shard_of(const Tensor& full, const ShardSpec& spec, int rank, int ranks) {
  if (!spec.sharded() || ranks == 1) return full;
  ZT_CHECK(spec.dim < full.dim() && spec.parts >= 1, "shard_of: split dim ", spec.dim, " of a tensor of shape ",
           shape_str(full.shape()));
  const int64_t size = full.size(spec.dim);
  ZT_CHECK(size % (spec.parts * ranks) == 0, "tensor parallelism: dimension ", spec.dim, " of size ", size, " (",
           spec.parts, " block", spec.parts == 1 ? "" : "s", ") does not split into ", ranks, " equal shards");
  const int64_t block = size / spec.parts, piece = block / ranks;
  Shape shape = full.shape();
  shape[spec.dim] = piece * spec.parts;
  Tensor out = Tensor::empty(shape, full.dtype(), full.device());
  for (int b = 0; b < spec.parts; ++b) {
    const int64_t from = b * block + rank * piece;
    out.slice(spec.dim, b * piece, (b + 1) * piece).copy_(full.slice(spec.dim, from, from + piece));
  }
  return out;
}

Tensor unshard(const std::vector<Tensor>& shards, const ShardSpec& spec) {
  ZT_CHECK(!shards.empty(), "unshard: no shards");
  const int ranks = static_cast<int>(shards.size());
  if (!spec.sharded() || ranks == 1) return shards[0];
  const int64_t piece_parts = shards[0].size(spec.dim);
  ZT_CHECK(piece_parts % spec.parts == 0, "unshard: dimension ", spec.dim, " of size ", piece_parts,
           " is not ", spec.parts, " blocks");
  const int64_t piece = piece_parts / spec.parts, block = piece * ranks;
  Shape shape = shards[0].shape();
  shape[spec.dim] = block * spec.parts;
  Tensor out = Tensor::empty(shape, shards[0].dtype(), shards[0].device());
  for (int r = 0; r < ranks; ++r) {
    ZT_CHECK(shards[r].shape() == shards[0].shape(), "unshard: shard ", r, " has shape ", shape_str(shards[r].shape()),
             ", shard 0 ", shape_str(shards[0].shape()));
    for (int b = 0; b < spec.parts; ++b) {
      const int64_t to = b * block + r * piece;
      out.slice(spec.dim, to, to + piece).copy_(shards[r].slice(spec.dim, b * piece, (b + 1) * piece));
    }
  }
  return out;
}

}  // namespace zt
