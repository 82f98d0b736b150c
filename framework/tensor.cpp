#include "framework/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iomanip>
#include <sstream>

#include "framework/checked_size.h"
#include "framework/device_backend.h"
#include "framework/op_range.h"

namespace zt {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

Tensor make_tensor(std::shared_ptr<Storage> storage, int64_t offset, Shape shape, Shape strides, DType dtype) {
  Tensor t;
  t.storage_ = std::move(storage);
  t.offset_ = offset;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.dtype_ = dtype;
  return t;
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* context) {
  ZT_CHECK(a.shape() == b.shape(), context, ": shape mismatch ", shape_str(a.shape()), " vs ",
           shape_str(b.shape()));
}

void check_dtype(const Tensor& t, DType expected, const char* context) {
  ZT_CHECK(t.dtype() == expected, context, ": expected dtype ", dtype_name(expected), ", got ",
           dtype_name(t.dtype()));
}

namespace {

// Calls f(linear_index, storage_offset) for every element of a strided view, in row-major order.
template <class F>
void for_each_offset(const Shape& shape, const Shape& strides, int64_t base, F&& f) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const size_t nd = shape.size();
  std::vector<int64_t> idx(nd, 0);
  int64_t off = base;
  for (int64_t i = 0; i < n; ++i) {
    f(i, off);
    for (int64_t d = static_cast<int64_t>(nd) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// Element conversion through double covers every pair of our dtypes exactly except i64
// values beyond 2^53, which tensors of token ids never reach.
template <class To, class From>
To convert(From v) {
  if constexpr (std::is_same_v<To, bf16>) return bf16(static_cast<float>(static_cast<double>(v)));
  else if constexpr (std::is_same_v<From, bf16>) return static_cast<To>(static_cast<float>(v));
  else return static_cast<To>(v);
}

// The same view over a host copy of the whole storage (device tensors only).
Tensor storage_to_host(const Tensor& t) {
  if (t.device().is_cpu()) return t;
  auto host = std::make_shared<Storage>(t.storage()->nbytes(), Device::cpu());
  copy_bytes(host->data(), Device::cpu(), t.storage()->data(), t.device(), t.storage()->nbytes());
  return make_tensor(host, t.offset(), t.shape(), t.strides(), t.dtype());
}

int64_t normalize_dim(int64_t d, int64_t ndim, const char* what) {
  int64_t r = d < 0 ? d + ndim : d;
  ZT_CHECK(r >= 0 && r < ndim, what, ": dimension ", d, " out of range for a tensor of ", ndim,
           " dimensions");
  return r;
}

}  // namespace

// ---- factories ----

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  auto st = std::make_shared<Storage>(checked_nbytes(shape, dtype, "Tensor::empty"), device);
  return make_tensor(std::move(st), 0, shape, contiguous_strides(shape), dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(0.0);
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::randn(const Shape& shape, DType dtype, Generator& gen, double mean, double std, Device device) {
  Tensor h = empty(shape, DType::f64);
  double* p = h.data<double>();
  for (int64_t i = 0; i < h.numel(); ++i) p[i] = mean + std * gen.normal();
  return h.to(dtype).to(device);
}

Tensor Tensor::rand(const Shape& shape, DType dtype, Generator& gen, double lo, double hi, Device device) {
  Tensor h = empty(shape, DType::f64);
  double* p = h.data<double>();
  for (int64_t i = 0; i < h.numel(); ++i) p[i] = lo + (hi - lo) * gen.uniform();
  return h.to(dtype).to(device);
}

// ---- properties ----

int64_t Tensor::size(int64_t d) const { return shape_[normalize_dim(d, dim(), "size")]; }

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_) || numel() <= 1; }

void* Tensor::raw_data() const {
  ZT_CHECK(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

// ---- views ----

Tensor Tensor::view(const Shape& shape) const {
  ZT_CHECK(is_contiguous(), "view ", shape_str(shape), " of a non-contiguous tensor of shape ",
           shape_str(shape_), " (use reshape)");
  Shape s = shape;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      ZT_CHECK(infer < 0, "view ", shape_str(shape), ": more than one -1");
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    ZT_CHECK(known > 0 && numel() % known == 0, "view: cannot view shape ", shape_str(shape_), " as ",
             shape_str(shape));
    s[infer] = numel() / known;
  }
  ZT_CHECK(shape_numel(s) == numel(), "view: cannot view shape ", shape_str(shape_), " (", numel(),
           " elements) as ", shape_str(shape));
  return make_tensor(storage_, offset_, s, contiguous_strides(s), dtype_);
}

Tensor Tensor::reshape(const Shape& shape) const { return contiguous().view(shape); }

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = normalize_dim(d0, dim(), "transpose");
  d1 = normalize_dim(d1, dim(), "transpose");
  Shape sh = shape_, st = strides_;
  std::swap(sh[d0], sh[d1]);
  std::swap(st[d0], st[d1]);
  return make_tensor(storage_, offset_, sh, st, dtype_);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  d = normalize_dim(d, dim(), "slice");
  ZT_CHECK(0 <= start && start <= end && end <= shape_[d], "slice [", start, ", ", end, ") out of range for dim ",
           d, " of shape ", shape_str(shape_));
  Shape sh = shape_;
  sh[d] = end - start;
  return make_tensor(storage_, offset_ + start * strides_[d], sh, strides_, dtype_);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = normalize_dim(d, dim(), "select");
  ZT_CHECK(index >= 0 && index < shape_[d], "select index ", index, " out of range for dim ", d, " of shape ",
           shape_str(shape_));
  Shape sh = shape_, st = strides_;
  sh.erase(sh.begin() + d);
  st.erase(st.begin() + d);
  return make_tensor(storage_, offset_ + index * strides_[d], sh, st, dtype_);
}

// ---- copies ----

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape_, dtype_, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = empty(shape_, dtype_, d);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype_) return *this;
  Tensor out = empty(shape_, t, device());
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  ZT_CHECK(defined() && src.defined(), "copy_ with an undefined tensor");
  check_same_shape(*this, src, "copy_");
  ZT_OP_RANGE("copy");  // device time of copies issued outside an op (contiguous, clone, to, casts)
  storage_->bump_version();
  // Fast path: same dtype, both contiguous: one byte copy, any devices.
  if (dtype_ == src.dtype_ && is_contiguous() && src.is_contiguous()) {
    copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
    return;
  }
  // On one device: one conversion or gather kernel of its backend.
  if (!device().is_cpu() && device() == src.device() && is_contiguous() && src.is_contiguous()) {
    device_backend(device()).convert(device().index, raw_data(), dtype_, src.raw_data(), src.dtype_, numel());
    return;
  }
  if (!device().is_cpu() && device() == src.device()) {  // strided views
    device_backend(device()).strided_copy(device().index, raw_data(), dtype_, strides_, src.raw_data(), src.dtype_,
                                          src.strides_, shape_);
    return;
  }
  // General path on the host: stage device tensors through host memory.
  // (Strided or converting copies on the GPU are rare here: setup, I/O and tests.)
  if (!device().is_cpu() || !src.device().is_cpu()) {
    Tensor hs = storage_to_host(src);
    Tensor hd = storage_to_host(*this);
    hd.copy_(hs);
    if (!device().is_cpu())
      copy_bytes(storage_->data(), device(), hd.storage_->data(), Device::cpu(), storage_->nbytes());
    return;
  }
  dispatch(dtype_, [&](auto dtag) {
    using D = decltype(dtag);
    dispatch(src.dtype_, [&](auto stag) {
      using S = decltype(stag);
      D* dst = static_cast<D*>(storage_->data());
      const S* sp = static_cast<const S*>(src.storage_->data());
      if (is_contiguous()) {
        D* d0 = dst + offset_;
        for_each_offset(src.shape_, src.strides_, src.offset_,
                        [&](int64_t i, int64_t so) { d0[i] = convert<D>(sp[so]); });
      } else {
        std::vector<int64_t> doffs;
        doffs.reserve(numel());
        for_each_offset(shape_, strides_, offset_, [&](int64_t, int64_t o) { doffs.push_back(o); });
        for_each_offset(src.shape_, src.strides_, src.offset_,
                        [&](int64_t i, int64_t so) { dst[doffs[i]] = convert<D>(sp[so]); });
      }
    });
  });
}

// ---- in place ----

void Tensor::fill_(double value) {
  ZT_CHECK(defined(), "fill_ of an undefined tensor");
  ZT_OP_RANGE("fill");
  storage_->bump_version();
  if (!device().is_cpu() && is_contiguous()) {
    device_backend(device()).fill(device().index, raw_data(), dtype_, numel(), value);
    return;
  }
  if (!device().is_cpu()) {
    Tensor h = full(shape_, value, dtype_);
    copy_(h);
    return;
  }
  dispatch(dtype_, [&](auto tag) {
    using T = decltype(tag);
    const T v = convert<T>(value);
    T* base = static_cast<T*>(storage_->data());
    if (is_contiguous()) std::fill(base + offset_, base + offset_ + numel(), v);
    else for_each_offset(shape_, strides_, offset_, [&](int64_t, int64_t o) { base[o] = v; });
  });
}

void Tensor::add_(const Tensor& other, double alpha) {
  ZT_CHECK(defined() && other.defined(), "add_ with an undefined tensor");
  check_same_shape(*this, other, "add_");
  ZT_CHECK(device() == other.device(), "add_: tensors on ", device().str(), " and ", other.device().str());
  ZT_OP_RANGE("add_");
  storage_->bump_version();
  if (!device().is_cpu() && is_contiguous() && other.is_contiguous()) {
    device_backend(device()).add_scaled(device().index, raw_data(), dtype_, other.raw_data(), other.dtype(), numel(),
                                        alpha);
    return;
  }
  if (!device().is_cpu()) {
    // Strided device tensors: staged through the host.
    Tensor h = to(Device::cpu()).contiguous();
    h.add_(other.to(Device::cpu()), alpha);
    copy_(h);
    return;
  }
  ZT_CHECK(is_contiguous(), "add_ into a non-contiguous tensor");
  Tensor o = other.to(dtype_).contiguous();
  dispatch(dtype_, [&](auto tag) {
    using T = decltype(tag);
    T* a = data<T>();
    const T* b = o.data<T>();
    const int64_t n = numel();
    if constexpr (std::is_same_v<T, bf16>) {
      for (int64_t i = 0; i < n; ++i) a[i] = bf16(float(a[i]) + float(alpha) * float(b[i]));
    } else {
      const T al = static_cast<T>(alpha);
#pragma omp parallel for if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) a[i] += al * b[i];
    }
  });
}

void Tensor::scale_(double factor) {
  ZT_CHECK(defined(), "scale_ of an undefined tensor");
  ZT_OP_RANGE("scale_");
  storage_->bump_version();
  if (!device().is_cpu() && is_contiguous()) {
    device_backend(device()).scale(device().index, raw_data(), dtype_, numel(), factor);
    return;
  }
  if (!device().is_cpu()) {
    Tensor h = to(Device::cpu()).contiguous();
    h.scale_(factor);
    copy_(h);
    return;
  }
  ZT_CHECK(is_contiguous(), "scale_ of a non-contiguous tensor");
  dispatch(dtype_, [&](auto tag) {
    using T = decltype(tag);
    T* a = data<T>();
    for (int64_t i = 0; i < numel(); ++i) a[i] = convert<T>(convert<double>(a[i]) * factor);
  });
}

// ---- host access ----

double Tensor::item() const {
  ZT_CHECK(numel() == 1, "item() on a tensor of shape ", shape_str(shape_), " (needs exactly one element)");
  return to_vector<double>()[0];
}

std::string Tensor::str(int64_t max_per_dim) const {
  std::ostringstream os;
  os << "Tensor(" << dtype_name(dtype_) << ", " << device().str() << ", shape " << shape_str(shape_);
  if (!defined()) return "Tensor(undefined)";
  std::vector<double> v = to_vector<double>();
  os << ", values ";
  // Print as nested lists, eliding the middle of long dimensions.
  Shape cs = contiguous_strides(shape_);
  std::function<void(int64_t, int64_t)> rec = [&](int64_t d, int64_t base) {
    if (d == dim()) {
      os << std::setprecision(6) << v[base];
      return;
    }
    os << "[";
    for (int64_t i = 0; i < shape_[d]; ++i) {
      if (shape_[d] > 2 * max_per_dim && i == max_per_dim) {
        os << "..., ";
        i = shape_[d] - max_per_dim;
      }
      rec(d + 1, base + i * cs[d]);
      if (i + 1 < shape_[d]) os << ", ";
    }
    os << "]";
  };
  rec(0, 0);
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace zt
