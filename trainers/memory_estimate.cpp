#include "trainers/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "framework/device_backend.h"
#include "framework/error.h"

namespace zt {

namespace {

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  return buf;
}

double read_number_file(const char* path) {  // a cgroup file: a number, or "max"
  std::ifstream in(path);
  std::string s;
  if (!(in >> s) || s == "max") return 0;
  try {
    return std::stod(s);
  } catch (const std::exception&) {
    return 0;
  }
}

double host_available() {
  double avail = 0;
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") avail = kb * 1024;
  const double limit = read_number_file("/sys/fs/cgroup/memory.max");
  if (limit > 0) {
    const double room = std::max(0.0, limit - read_number_file("/sys/fs/cgroup/memory.current"));
    avail = avail > 0 ? std::min(avail, room) : room;
  }
  return avail;
}

}  // namespace

std::string MemoryEstimate::describe() const {
  return "parameters " + gb(parameters) + " + gradients " + gb(gradients) + " + AdamW moments " + gb(optimizer) +
         " + activations " + gb(activations) + " = " + gb(total()) + ", a lower bound";
}

MemoryEstimate estimate_training_memory(const ModelConfig& m, int64_t batch_size, DType compute, bool fused_head) {
  // Doubles from here on: byte counts of a config at the validator's limits overflow int64.
  const double n = static_cast<double>(m.num_parameters()), cs = static_cast<double>(dtype_size(compute));
  const double tokens = static_cast<double>(batch_size) * static_cast<double>(m.seq_len);
  MemoryEstimate e;
  e.parameters = 4 * n + (compute == DType::f32 ? 0 : cs * n);
  e.gradients = 4 * n;
  e.optimizer = 8 * n;
  // Per token and block, backward keeps at least the norms' outputs, qkv, the attention output
  // and the MLP's hidden values, less what activation checkpointing recomputes
  // (ModelConfig::activation_values_per_token); plus the logits.
  const double vocab = static_cast<double>(m.padded_vocab());
  const double logits = fused_head ? tokens * vocab * 2.0 / 8.0 : tokens * cs * vocab;
  if (fused_head) e.gradients += 4 * vocab * static_cast<double>(m.d_model);  // the head gradient's f32 sum
  // With whole blocks recomputed the stored activations are small, and the logits and the
  // gradients are never alive together: the head's backward frees the logits before the
  // blocks' gradients appear. The peak is then the larger of the two, so the logits count
  // only by what they exceed the gradients by (one H100: gpt_small B=16 peaked at 3.58 GiB
  // against 4.23 GiB when both counted; gpt_xl B=8 at 29.04 GiB against 28.39).
  const bool apart = m.activation_checkpointing == "block";
  e.activations = tokens * cs * m.activation_values_per_token() + (apart ? std::max(0.0, logits - e.gradients) : logits);
  return e;
}

MemoryEstimate estimate_inference_memory(const ModelConfig& m, int64_t batch_size) {
  MemoryEstimate e;
  e.parameters = 4 * static_cast<double>(m.num_parameters());
  e.activations = 4.0 * static_cast<double>(batch_size) * static_cast<double>(m.seq_len) *
                  static_cast<double>(m.padded_vocab());
  return e;
}

double available_memory(Device device) {
  if (device.is_cpu()) return host_available();
  DeviceBackend* backend = find_device_backend(device.type);
  return backend ? backend->free_memory(device.index) : 0;
}

std::string memory_shortfall(const MemoryEstimate& need, double available, Device device, const std::string& what,
                             const std::string& remedies) {
  if (available <= 0 || need.total() <= available) return "";
  return what + " needs at least " + gb(need.total()) + " (" + need.describe() + ") but only " + gb(available) +
         " of " + (device.is_cpu() ? std::string("host") : device.str()) + " memory is free; " + remedies;
}

void check_memory_fits(const MemoryEstimate& need, Device device, const std::string& what, const std::string& remedies) {
  const std::string why = memory_shortfall(need, available_memory(device), device, what, remedies);
  ZT_CHECK(why.empty(), why);
}

}  // namespace zt
