#pragma once
// DataLoader: (inputs, targets) batches from token shards for the training loop.
//
// The shards are cut into windows of T+1 tokens starting every T tokens (window w of a shard
// covers tokens [w T, w T + T + 1)), so every token but a shard's first is a target exactly
// once per epoch; windows never cross shard boundaries. inputs = window[0..T), targets =
// window[1..T], both int64 [B, T] on the CPU.
//
// One step consumes a global batch of world x B windows; rank r takes rows [r B, (r+1) B) of
// it, so data-parallel ranks read disjoint windows and together see each window once per
// epoch. Shuffled mode visits the windows of each epoch in a permutation drawn from
// (seed, epoch); sequential mode (evaluation) in file order, the same batches every pass.
// The windows left over after the last full global batch of an epoch are skipped (different
// ones every epoch when shuffled).
//
// The position is two integers (state()); restore(state) continues with exactly the batches
// an uninterrupted loader would have produced, given the same shards and options.
#include <cstdint>
#include <string>
#include <vector>

#include "framework/tensor.h"
#include "trainers/data/token_shard.h"

namespace zt::data {

struct DataLoaderOptions {
  std::vector<std::string> shards;  // paths or glob patterns ("data/brown/train_*.bin")
  int64_t batch_size = 0;           // B: rows per rank
  int64_t seq_len = 0;              // T
  uint64_t seed = 0;
  bool shuffle = true;  // false: sequential order, for fixed evaluation batches
  int64_t rank = 0;
  int64_t world = 1;
  int64_t vocab_size = 0;  // > 0: reject shards holding a token id >= vocab_size
};

struct Batch {
  Tensor inputs;   // [B, T] i64
  Tensor targets;  // [B, T] i64
};

// The next batch to produce: batch `batch` of epoch `epoch`.
struct DataLoaderState {
  int64_t epoch = 0;
  int64_t batch = 0;
  bool operator==(const DataLoaderState&) const = default;
};

// Expands each pattern with glob(3) (sorted); a plain path must exist and a pattern must
// match at least one file, else a zt::Error naming it.
std::vector<std::string> expand_shard_patterns(const std::vector<std::string>& patterns);

class DataLoader {
 public:
  explicit DataLoader(DataLoaderOptions options);

  Batch next();

  DataLoaderState state() const { return state_; }
  void restore(const DataLoaderState& state);
  void reset() { restore({}); }  // back to the first batch (evaluation passes)

  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_windows() const { return window_end_.empty() ? 0 : window_end_.back(); }
  int64_t batches_per_epoch() const;  // global batches of world x B windows
  const std::vector<std::string>& shard_paths() const { return paths_; }
  const DataLoaderOptions& options() const { return options_; }

 private:
  DataLoaderOptions options_;
  std::vector<std::string> paths_;
  std::vector<TokenShard> shards_;
  std::vector<int64_t> window_end_;  // prefix sums of windows per shard
  int64_t num_tokens_ = 0;
  DataLoaderState state_;
  int64_t order_epoch_ = -1;     // epoch that order_ was drawn for
  std::vector<int64_t> order_;   // window visiting order of that epoch (shuffled mode)

  void read_window(int64_t window, uint32_t* out) const;  // seq_len + 1 tokens
  int64_t window_at(int64_t epoch, int64_t position);
};

}  // namespace zt::data
