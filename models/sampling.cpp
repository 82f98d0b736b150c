#include "models/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/error.h"

namespace zt {

int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& o, Generator& gen) {
  ZT_CHECK(!logits.empty(), "sample_token: empty logits");
  ZT_CHECK(std::isfinite(o.temperature) && o.temperature >= 0, "temperature must be finite and >= 0, got ",
           o.temperature);
  ZT_CHECK(o.top_k >= 0, "top-k must be >= 0, got ", o.top_k);
  for (size_t i = 0; i < logits.size(); ++i)
    ZT_CHECK(std::isfinite(logits[i]), "sample_token: logit ", i, " is ", logits[i], " (the model produced non-finite values)");

  const int64_t n = static_cast<int64_t>(logits.size());
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (o.temperature == 0) return *std::min_element(ids.begin(), ids.end(), better);

  const int64_t k = o.top_k > 0 ? std::min(o.top_k, n) : n;
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), better);
  ids.resize(static_cast<size_t>(k));
  const double top = logits[ids[0]];
  std::vector<double> w(ids.size());
  double total = 0;
  for (size_t i = 0; i < ids.size(); ++i) total += (w[i] = std::exp((logits[ids[i]] - top) / o.temperature));
  double u = gen.uniform() * total;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (u < w[i]) return ids[i];
    u -= w[i];
  }
  return ids.back();  // rounding left u just above the last weight
}

std::vector<double> real_vocab_row(const Tensor& logits, int64_t row, int64_t vocab_size) {
  ZT_CHECK(logits.dim() == 2, "real_vocab_row: logits must be [rows, width], got shape ", shape_str(logits.shape()));
  ZT_CHECK(row >= 0 && row < logits.size(0), "real_vocab_row: row ", row, " of logits of shape ",
           shape_str(logits.shape()));
  ZT_CHECK(vocab_size >= 1 && vocab_size <= logits.size(1), "real_vocab_row: vocab_size ", vocab_size,
           " does not fit logits of shape ", shape_str(logits.shape()));
  return logits.select(0, row).slice(0, 0, vocab_size).to_vector<double>();
}

void apply_logit_softcap(std::vector<double>& logits, double cap) {
  if (cap <= 0) return;
  for (double& x : logits) x = cap * std::tanh(x / cap);
}

}  // namespace zt
