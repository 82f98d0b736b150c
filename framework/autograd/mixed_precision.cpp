#include "framework/autograd/mixed_precision.h"

#include <unordered_map>

#include "framework/autograd/engine.h"
#include "framework/autograd/variable.h"
#include "framework/op_range.h"
#include "framework/device_backend.h"

namespace zt {

namespace {

bool is_current(const ComputeCopy& c, const Tensor& master) {
  return c.copy.defined() && c.version == master.storage()->version() && c.offset == master.offset() &&
         c.strides == master.strides() && c.copy.shape() == master.shape() &&
         c.copy.storage()->version() == c.copy_version;
}

}  // namespace

Tensor compute_copy(VariableImpl& leaf, DType dtype) {
  ComputeCopy& c = leaf.compute_copy;
  const Tensor& master = leaf.data;
  if (c.resident && master.dtype() == dtype) return master;  // the data is the compute weight
  if (is_current(c, master) && c.copy.dtype() == dtype) return c.copy;
  Tensor copy;
  {
    ZT_OP_RANGE("cast");
    copy = master.to(dtype);
  }
  c = {copy, master.storage()->version(), copy.storage()->version(), master.offset(), master.strides()};
  return c.copy;
}

void make_compute_resident(VariableImpl& leaf, Tensor compute_weights) {
  ZT_CHECK(!leaf.grad_fn, "make_compute_resident: '", leaf.name, "' is not a leaf");
  ZT_CHECK(compute_weights.shape() == leaf.data.shape() && compute_weights.device() == leaf.data.device(),
           "make_compute_resident: '", leaf.name, "' is ", shape_str(leaf.data.shape()), " on ",
           leaf.data.device().str(), ", its compute weights ", shape_str(compute_weights.shape()), " on ",
           compute_weights.device().str());
  const DType master = leaf_grad_dtype(leaf);
  ZT_CHECK(is_floating(compute_weights.dtype()) && dtype_size(compute_weights.dtype()) < dtype_size(master),
           "make_compute_resident: '", leaf.name, "': ", dtype_name(compute_weights.dtype()),
           " compute weights for a ", dtype_name(master), " master (a narrower floating dtype)");
  ZT_CHECK(!leaf.grad.defined() || leaf.grad.dtype() == master, "make_compute_resident: '", leaf.name,
           "' has a ", dtype_name(leaf.grad.dtype()), " gradient, not ", dtype_name(master));
  leaf.data = std::move(compute_weights);
  leaf.compute_copy = ComputeCopy{};
  leaf.compute_copy.resident = true;
  leaf.compute_copy.master_dtype = master;
}

bool is_compute_resident(const VariableImpl& leaf) { return leaf.compute_copy.resident; }

DType leaf_grad_dtype(const VariableImpl& leaf) {
  return leaf.compute_copy.resident ? leaf.compute_copy.master_dtype : leaf.data.dtype();
}

Tensor* rewritable_compute_copy(VariableImpl& leaf) {
  ComputeCopy& c = leaf.compute_copy;
  const Tensor& master = leaf.data;
  if (!is_current(c, master) || c.copy.dtype() != DType::bf16 || !c.copy.is_contiguous() ||
      !master.is_contiguous() || c.copy.device() != master.device() || c.copy.storage().use_count() != 1)
    return nullptr;
  return &c.copy;
}

void compute_copy_rewritten(VariableImpl& leaf) { leaf.compute_copy.version = leaf.data.storage()->version(); }

void widen_master_grads(std::vector<PendingMasterGrad>& pending, LeafGradSum accumulate) {
  if (pending.empty()) return;
  ZT_OP_RANGE("cast");
  std::unordered_map<VariableImpl*, int> times;
  for (const PendingMasterGrad& p : pending) ++times[p.leaf.get()];
  std::unordered_map<int, std::vector<WidenJob>> jobs;  // per CUDA device
  for (PendingMasterGrad& p : pending) {
    Tensor& slot = p.leaf->grad;
    const Device d = p.grad.device();
    const bool batched =
        d.is_cuda() && p.grad.dtype() == DType::bf16 && p.dtype == DType::f32 && p.grad.is_contiguous() &&
        times[p.leaf.get()] == 1 &&
        (!slot.defined() || (slot.dtype() == DType::f32 && slot.device() == d &&
                             (exclusively_owned(slot) || (p.leaf->grad_preassigned && slot.is_contiguous()))));
    if (batched) {
      const bool sum_into = slot.defined();
      if (!sum_into) slot = Tensor::empty(p.grad.shape(), DType::f32, d);
      jobs[d.index].push_back({static_cast<float*>(slot.raw_data()), p.grad.raw_data(), p.grad.numel(), sum_into});
      continue;  // p.grad stays alive in `pending` until the launches are queued
    }
    accumulate(*p.leaf, p.grad.to(p.dtype));
  }
  for (auto& [device, list] : jobs) device_backend(Device::cuda(device)).widen_bf16_to_f32_many(device, list);
}

}  // namespace zt
