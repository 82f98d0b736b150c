#pragma once
// Up-front memory check: a config that cannot fit is refused in milliseconds with the sizes,
// instead of allocating for a minute and then failing (or swapping). The estimate is a lower
// bound (the tensors that must exist at once, not the allocator's slack or temporaries), so
// a refused run could not have run; one that passes can still run out.
#include <cstdint>
#include <string>

#include "framework/device.h"
#include "framework/dtype.h"
#include "models/model_config.h"

namespace zt {

struct MemoryEstimate {
  double parameters = 0;   // f32 master weights (+ a bf16 copy under bf16 compute; 1/D of the masters under ZeRO then)
  double gradients = 0;    // f32
  double optimizer = 0;    // AdamW first and second moments, f32
  double activations = 0;  // kept for backward (training) or live in one forward, in the compute dtype
  double total() const { return parameters + gradients + optimizer + activations; }
  std::string describe() const;  // "parameters 0.50 GB + gradients ... (a lower bound)"
};

// One training step of `model` with micro-batches of `batch_size` sequences of seq_len tokens;
// with `fused_head` the logits are a chunk of at most 1/8 of their bf16 size
// (ops/linear_cross_entropy.h) plus the head gradient's f32 accumulator, instead of whole.
MemoryEstimate estimate_training_memory(const ModelConfig& model, int64_t batch_size, DType compute,
                                        bool fused_head = false);
// One forward of `batch_size` sequences (generate): parameters and activations only.
MemoryEstimate estimate_inference_memory(const ModelConfig& model, int64_t batch_size);

// Bytes free for a new allocation: for the CPU the smaller of /proc/meminfo's MemAvailable
// and the cgroup's limit minus its usage; for a GPU cudaMemGetInfo's free bytes. 0 when unknown.
double available_memory(Device device);

// What shrinks any run: the model's size keys.
inline const char* kShrinkTheModel = "make the model (model.n_layer, model.d_model, model.vocab_size) smaller";

// "" when `need` fits in `available` bytes (or available is 0, unknown); else the message,
// naming `what` (e.g. "training of this config") and ending in `remedies`, the keys that would
// shrink it for this caller (training: training_memory_remedies, trainers/training_step.h).
std::string memory_shortfall(const MemoryEstimate& need, double available, Device device, const std::string& what,
                             const std::string& remedies = kShrinkTheModel);
// Throws memory_shortfall's message when it is not empty.
void check_memory_fits(const MemoryEstimate& need, Device device, const std::string& what,
                       const std::string& remedies = kShrinkTheModel);

}  // namespace zt
