#pragma once
// Picking the next token from one row of logits, over the real vocabulary only: the GPT's
// logits have padded_vocab() columns, and the ones at or past vocab_size are padding.
#include <cstdint>
#include <vector>

#include "framework/random.h"
#include "framework/tensor.h"

namespace zt {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax); > 0: softmax(logits / temperature)
  int64_t top_k = 0;         // > 0: only the k most likely tokens may be drawn
};

// Ties in argmax and at the top-k boundary go to the lower id. Non-finite logits are an error.
int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& options, Generator& gen);

// Row `row` of logits [rows, width] (any device and float dtype) as f64 on the host, its first
// vocab_size columns only: the padded columns are dropped, so they can never be sampled.
std::vector<double> real_vocab_row(const Tensor& logits, int64_t row, int64_t vocab_size);

// Logit soft-capping as the loss applies it (loss.logit_softcap): x -> cap tanh(x / cap) for
// each value; cap 0 leaves the row as it is. A model trained with a cap samples from capped
// logits.
void apply_logit_softcap(std::vector<double>& logits, double cap);

}  // namespace zt
