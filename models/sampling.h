#pragma once
// Picking the next token from one row of logits (the real vocabulary only: the model never
// produces padded columns).
#include <cstdint>
#include <vector>

#include "framework/random.h"

namespace zt {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax); > 0: softmax(logits / temperature)
  int64_t top_k = 0;         // > 0: only the k most likely tokens may be drawn
};

// Ties in argmax and at the top-k boundary go to the lower id. Non-finite logits are an error.
int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& options, Generator& gen);

}  // namespace zt
