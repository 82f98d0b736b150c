#pragma once
// Where a tensor's storage lives.
#include <cstdint>
#include <string>

namespace zt {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

// True when ztrain was built with CUDA and at least one GPU is visible.
bool cuda_available();
int cuda_device_count();

// Parses "cpu", "cuda", "cuda:N".
Device parse_device(const std::string& s);

}  // namespace zt
