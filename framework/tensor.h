#pragma once
// Tensor: a typed, shaped, strided view into a shared Storage on one device.
//
// Views (view/reshape of contiguous data, transpose, slice) share storage; copies
// (contiguous on strided data, clone, to) allocate. Element access from the host goes
// through data<T>() on contiguous CPU tensors; everything else moves data explicitly.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "framework/device.h"
#include "framework/dtype.h"
#include "framework/random.h"
#include "framework/storage.h"

namespace zt {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() is false

  // ---- factories ----
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype, Device device = Device::cpu()) {
    return full({}, value, dtype, device);
  }
  // Normal(mean, std) / uniform [lo, hi) from a seeded generator; drawn on the host, so
  // the same seed gives the same values on every device.
  static Tensor randn(const Shape& shape, DType dtype, Generator& gen, double mean = 0, double std = 1,
                      Device device = Device::cpu());
  static Tensor rand(const Shape& shape, DType dtype, Generator& gen, double lo = 0, double hi = 1,
                     Device device = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());

  // ---- properties ----
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  bool shares_storage(const Tensor& o) const { return storage_ && storage_ == o.storage_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to the first element (storage + offset). data<T>() checks T against dtype().
  void* raw_data() const;
  template <class T>
  T* data() const {
    ZT_CHECK(dtype_of<T>::value == dtype_, "data<", dtype_name(dtype_of<T>::value), ">() on a ",
             dtype_name(dtype_), " tensor");
    return static_cast<T*>(raw_data());
  }

  // ---- views (share storage) ----
  Tensor view(const Shape& shape) const;     // contiguous only; one dimension may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else a contiguous copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor select(int64_t dim, int64_t index) const;              // drops dim

  // ---- copies ----
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;  // self if already there
  Tensor to(DType dtype) const;    // self if already that dtype
  void copy_(const Tensor& src);   // same shape; converts dtype and device

  // ---- in place ----
  void fill_(double value);
  void add_(const Tensor& other, double alpha = 1.0);  // this += alpha * other (same shape); grad accumulation
  void scale_(double factor);

  // ---- host access ----
  double item() const;  // one-element tensor, any dtype/device
  template <class T>
  std::vector<T> to_vector() const;  // converts dtype, any device/strides
  std::string str(int64_t max_per_dim = 6) const;

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_, strides_;
  DType dtype_ = DType::f32;

  friend Tensor make_tensor(std::shared_ptr<Storage>, int64_t, Shape, Shape, DType);
};

Tensor make_tensor(std::shared_ptr<Storage> storage, int64_t offset, Shape shape, Shape strides, DType dtype);
Shape contiguous_strides(const Shape& shape);
std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Checks that two tensors have the same shape; message names both and the context.
void check_same_shape(const Tensor& a, const Tensor& b, const char* context);
void check_dtype(const Tensor& t, DType expected, const char* context);

// ---- template definitions ----
template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  ZT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
           " values for shape ", shape_str(shape));
  Tensor host = empty(shape, dtype_of<T>::value, Device::cpu());
  std::copy(values.begin(), values.end(), host.data<T>());
  return host.to(device);
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::cpu()).to(dtype_of<T>::value).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

}  // namespace zt
