#pragma once
// Where every parameter sits in the flat f32 buckets that data parallelism reduces and the
// optimizer keeps its state in (Megatron's param_and_grad_buffer, llm.c's zero.cuh), and
// which part of each bucket is this data-parallel rank's shard under ZeRO.
//
//   bucket b:  [ slot | slot | slot | pad ]        parameters in reverse registration order
//              |<- shard 0 ->|<- shard 1 ->| ...   numel is a multiple of shards * 64
//
// Slots start on 64-element (256-byte) boundaries, and so does every shard, so vectorised
// kernels see aligned rows. A shard cuts parameters wherever it falls: this rank's part of
// the optimizer is the list of pieces (a run of one parameter's elements inside the shard).
// With one shard the shard is the whole bucket and each piece a whole parameter.
#include <cstdint>
#include <vector>

#include "models/parameter_registry.h"

namespace zt {

struct BucketSlot {
  int64_t param = 0;   // index in the parameter list
  int64_t offset = 0;  // first element in the bucket
  int64_t numel = 0;
};

struct ParameterBucket {
  std::vector<BucketSlot> slots;
  int64_t numel = 0;  // padded
};

// A run of one parameter's (flattened) elements inside this rank's shard of one bucket.
struct ShardPiece {
  int64_t param = 0;         // index in the parameter list
  int64_t bucket = 0;
  int64_t param_begin = 0;   // first element of the parameter it covers
  int64_t numel = 0;
  int64_t shard_offset = 0;  // where it starts inside this rank's shard of the bucket
};

class ParameterBuckets {
 public:
  // bucket_bytes: f32 bytes per bucket (a parameter larger than that gets its own); the
  // parameters are split into `shards` equal parts per bucket, of which this rank holds
  // `shard_index`.
  ParameterBuckets(const std::vector<Parameter>& params, int64_t bucket_bytes, int shards, int shard_index);

  const std::vector<ParameterBucket>& buckets() const { return buckets_; }
  int shards() const { return shards_; }
  int shard_index() const { return shard_index_; }
  bool sharded() const { return shards_ > 1; }
  int64_t shard_numel(int64_t bucket) const { return buckets_[static_cast<size_t>(bucket)].numel / shards_; }
  int64_t shard_begin(int64_t bucket) const { return shard_numel(bucket) * shard_index_; }
  // This rank's pieces, bucket by bucket, in slot order.
  const std::vector<ShardPiece>& pieces() const { return pieces_; }
  int64_t shard_elements() const;  // sum of shard_numel over the buckets
  int64_t largest_bucket() const;  // the largest bucket's numel

 private:
  std::vector<ParameterBucket> buckets_;
  std::vector<ShardPiece> pieces_;
  int shards_ = 1, shard_index_ = 0;
};

}  // namespace zt
