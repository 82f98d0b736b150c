#include "trainers/data/data_loader.h"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <numeric>

#include "framework/error.h"
#include "framework/random.h"

namespace zt::data {

std::vector<std::string> expand_shard_patterns(const std::vector<std::string>& patterns) {
  std::vector<std::string> paths;
  for (const std::string& pattern : patterns) {
    const bool has_wildcard = pattern.find_first_of("*?[") != std::string::npos;
    if (!has_wildcard) {
      struct stat st {};
      ZT_CHECK(::stat(pattern.c_str(), &st) == 0, "token shard '", pattern,
               "' does not exist (prepare it with prepare_data, see the README)");
      paths.push_back(pattern);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    if (rc == GLOB_NOMATCH) {
      ::globfree(&g);
      ZT_FAIL("shard pattern '", pattern, "' matches no files (prepare them with prepare_data, see the README)");
    }
    if (rc != 0) {
      ::globfree(&g);
      ZT_FAIL("cannot expand shard pattern '", pattern, "' (glob error ", rc, ")");
    }
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);  // glob sorts
    ::globfree(&g);
  }
  ZT_CHECK(!paths.empty(), "no token shards given");
  return paths;
}

DataLoader::DataLoader(DataLoaderOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  ZT_CHECK(o.batch_size > 0, "data loader: batch_size must be positive, got ", o.batch_size);
  ZT_CHECK(o.seq_len > 0, "data loader: seq_len must be positive, got ", o.seq_len);
  ZT_CHECK(o.world >= 1 && o.rank >= 0 && o.rank < o.world, "data loader: rank ", o.rank, " is not in [0, world ",
           o.world, ")");
  paths_ = expand_shard_patterns(o.shards);
  int64_t windows = 0;
  for (const std::string& path : paths_) {
    TokenShard shard = TokenShard::open(path);
    if (o.vocab_size > 0) {
      const int64_t top = shard.max_token();
      ZT_CHECK(top < o.vocab_size, "token shard '", path, "' holds token id ", top,
               " but the model's vocabulary has ", o.vocab_size, " entries (shard made with another tokenizer?)");
    }
    num_tokens_ += shard.size();
    windows += shard.size() > o.seq_len ? (shard.size() - 1) / o.seq_len : 0;
    window_end_.push_back(windows);
    shards_.push_back(std::move(shard));
  }
  const int64_t global = o.world * o.batch_size;
  ZT_CHECK(windows >= global, "data loader: the shards (", paths_.size(), " files from '", o.shards.front(),
           "'...) hold ", num_tokens_, " tokens = ", windows, " windows of seq_len+1 = ", o.seq_len + 1,
           " tokens, fewer than one global batch of world x batch_size = ", o.world, " x ", o.batch_size, " = ",
           global, " windows");
}

int64_t DataLoader::batches_per_epoch() const { return num_windows() / (options_.world * options_.batch_size); }

void DataLoader::restore(const DataLoaderState& state) {
  ZT_CHECK(state.epoch >= 0 && state.batch >= 0 && state.batch < batches_per_epoch(), "data loader: cannot restore ",
           "position epoch ", state.epoch, " batch ", state.batch, ": an epoch has ", batches_per_epoch(),
           " batches (saved with other shards or batch settings?)");
  state_ = state;
}

void DataLoader::read_window(int64_t window, uint32_t* out) const {
  const auto it = std::upper_bound(window_end_.begin(), window_end_.end(), window);
  const auto s = static_cast<size_t>(it - window_end_.begin());
  const int64_t first = s == 0 ? 0 : window_end_[s - 1];
  shards_[s].read((window - first) * options_.seq_len, options_.seq_len + 1, out);
}

int64_t DataLoader::window_at(int64_t epoch, int64_t position) {
  if (!options_.shuffle) return position;
  if (order_epoch_ != epoch) {
    // A fresh stream per (seed, epoch): the order of any epoch is known without replaying
    // the epochs before it, which is what makes restore() O(1).
    Generator gen(options_.seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch + 1)));
    order_.resize(num_windows());
    std::iota(order_.begin(), order_.end(), int64_t{0});
    for (int64_t i = num_windows() - 1; i > 0; --i)
      std::swap(order_[i], order_[gen.below(static_cast<uint64_t>(i + 1))]);
    order_epoch_ = epoch;
  }
  return order_[position];
}

Batch DataLoader::next() {
  const int64_t B = options_.batch_size, T = options_.seq_len;
  Batch batch{Tensor::empty({B, T}, DType::i64), Tensor::empty({B, T}, DType::i64)};
  int64_t* in = batch.inputs.data<int64_t>();
  int64_t* tg = batch.targets.data<int64_t>();
  const int64_t first = (state_.batch * options_.world + options_.rank) * B;
  std::vector<uint32_t> w(static_cast<size_t>(T + 1));
  for (int64_t row = 0; row < B; ++row) {
    read_window(window_at(state_.epoch, first + row), w.data());
    for (int64_t t = 0; t < T; ++t) {
      in[row * T + t] = w[t];
      tg[row * T + t] = w[t + 1];
    }
  }
  if (++state_.batch == batches_per_epoch()) {
    state_.batch = 0;
    ++state_.epoch;
  }
  return batch;
}

}  // namespace zt::data
