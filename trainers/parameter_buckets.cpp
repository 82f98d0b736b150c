#include "trainers/parameter_buckets.h"

#include <algorithm>

#include "framework/error.h"

namespace zt {

namespace {
constexpr int64_t kAlignElems = 64;  // 256 bytes of f32
int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
}  // namespace

ParameterBuckets::ParameterBuckets(const std::vector<Parameter>& params, int64_t bucket_bytes, int shards,
                                   int shard_index)
    : shards_(shards), shard_index_(shard_index) {
  ZT_CHECK(bucket_bytes > 0, "parameter buckets: bucket size must be > 0 bytes, got ", bucket_bytes);
  ZT_CHECK(shards >= 1 && shard_index >= 0 && shard_index < shards, "parameter buckets: shard ", shard_index, " of ",
           shards);
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / 4);
  // Reverse registration order (backward produces the last layers' gradients first); a new
  // bucket when the next parameter would overflow this one.
  int64_t fill = cap;
  for (int64_t i = static_cast<int64_t>(params.size()) - 1; i >= 0; --i) {
    const Parameter& p = params[static_cast<size_t>(i)];
    ZT_CHECK(p.var.dtype() == DType::f32, "parameter buckets: parameter '", p.name, "' is ",
             dtype_name(p.var.dtype()), "; buckets hold f32 parameters");
    const int64_t n = round_up(p.var.numel(), kAlignElems);
    if (fill + n > cap && fill > 0) {
      buckets_.emplace_back();
      fill = 0;
    }
    buckets_.back().slots.push_back({i, fill, p.var.numel()});
    fill += n;
    buckets_.back().numel = fill;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    ParameterBucket& bucket = buckets_[b];
    bucket.numel = round_up(std::max<int64_t>(bucket.numel, 1), kAlignElems * shards_);
    const int64_t lo = shard_begin(static_cast<int64_t>(b)), hi = lo + shard_numel(static_cast<int64_t>(b));
    for (const BucketSlot& s : bucket.slots) {
      const int64_t begin = std::max(lo, s.offset), end = std::min(hi, s.offset + s.numel);
      if (begin < end) pieces_.push_back({s.param, static_cast<int64_t>(b), begin - s.offset, end - begin, begin - lo});
    }
  }
}

int64_t ParameterBuckets::shard_elements() const {
  int64_t n = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) n += shard_numel(static_cast<int64_t>(b));
  return n;
}

int64_t ParameterBuckets::largest_bucket() const {
  int64_t n = 0;
  for (const auto& b : buckets_) n = std::max(n, b.numel);
  return n;
}

}  // namespace zt
