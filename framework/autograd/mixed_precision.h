#pragma once
// Mixed precision, in one place: bf16 training keeps f32 master weights (the parameters, the
// optimizer's state) and computes with a bf16 copy of each. Three parties touch that copy and
// its gradient, and this file is their contract:
//
//  - the forward (ops::cast, ops/cast.h) asks for a leaf's compute copy: compute_copy() makes it
//    once and hands the same tensor back while the master is unchanged, so with gradient
//    accumulation a weight is converted once per optimizer step, not once per micro-batch;
//  - the engine (framework/autograd/engine.cpp) receives the gradient in the compute dtype and
//    hands it to widen_master_grads(), which sums it into the master's f32 .grad (on CUDA all
//    the bf16 -> f32 widenings of a backward in one multi-tensor kernel);
//  - the optimizer (trainers/adamw.cpp) writes the master; it may rewrite the compute copy in
//    the same kernel (rewritable_compute_copy() says when that is safe, and
//    compute_copy_rewritten() marks it current), else the next forward converts again.
//
// A copy is current while the master is the same view (offset, strides, shape) of a storage
// whose version (framework/storage.h) has not changed, and nothing wrote into the copy itself
// (the cross-entropy's in-place gradient may, when the copy is logits). Anything that writes a
// master other than through Tensor's in-place methods must bump its storage's version.
//
// A compute-resident leaf (make_compute_resident) is the other way round: its data is the bf16
// compute weight itself and its f32 master lives with its owner elsewhere (the optimizer's
// shard under ZeRO, trainers/adamw.h), so a rank need not hold every master. Its gradient is
// f32 all the same, as a master's: leaf_grad_dtype() says f32, so the edges into it carry f32
// and the engine widens its bf16 gradients exactly as above; ops::cast makes the same node for
// it as for a master, its compute copy being the data, so backward sums the same addends in
// the same order. The owner writes the data whenever it writes the master, rounded to nearest
// even from the new master as a cast would round it (and bumps the data's storage version).
#include <cstdint>
#include <vector>

#include "framework/tensor.h"

namespace zt {

struct VariableImpl;

// What a leaf remembers of its compute copy (a member of VariableImpl; only this file's
// functions read or write it).
struct ComputeCopy {
  Tensor copy;
  uint64_t version = 0;       // the master's storage version when the copy was made
  uint64_t copy_version = 0;  // copy.storage()->version() then
  int64_t offset = 0;         // the master's view then
  Shape strides;
  bool resident = false;      // make_compute_resident: the data is the compute copy
  DType master_dtype = DType::f32;  // then: the dtype of the master kept elsewhere (and of the gradient)
};

// The leaf's data converted to `dtype`, reused while current (a compute-resident leaf's data
// itself when of that dtype). Treat it as read-only: every later forward may get the same tensor.
Tensor compute_copy(VariableImpl& leaf, DType dtype);

// Makes `compute_weights` (the leaf's shape, a narrower floating dtype; e.g. a view of a flat
// bf16 bucket) the leaf's data, its old dtype the master's; the caller keeps the master. The
// leaf's gradient stays in the master dtype (a preassigned .grad must be of it already).
void make_compute_resident(VariableImpl& leaf, Tensor compute_weights);
bool is_compute_resident(const VariableImpl& leaf);
// The dtype the leaf's gradient accumulates in: its master's when compute-resident, else its data's.
DType leaf_grad_dtype(const VariableImpl& leaf);

// The leaf's bf16 compute copy when an optimizer may rewrite it in place with the new master
// values: current, contiguous like the master, on its device, and referenced by nothing but
// the cache (no live graph saved it). Null otherwise.
Tensor* rewritable_compute_copy(VariableImpl& leaf);
// After the optimizer bumped the master's version and wrote the copy from the new values.
void compute_copy_rewritten(VariableImpl& leaf);

// A leaf's gradient that arrived in another dtype than the leaf's gradient dtype (the bf16
// gradient of an f32 master weight, or of a compute-resident leaf), to be widened into its .grad.
struct PendingMasterGrad {
  std::shared_ptr<VariableImpl> leaf;
  Tensor grad;
  DType dtype;  // leaf_grad_dtype(*leaf)
};

// Adds every pending gradient, converted to its leaf's dtype, into the leaf's .grad through
// `accumulate` (the engine's leaf sum), except the bf16 -> f32 ones on CUDA that can go
// through one multi-tensor kernel (a launch per parameter cost more than the conversion):
// a leaf listed once whose .grad is absent or an f32 buffer the engine may write in place.
// The result is the same either way: grad (+)= f32(g).
using LeafGradSum = void (*)(VariableImpl& leaf, Tensor g);
void widen_master_grads(std::vector<PendingMasterGrad>& pending, LeafGradSum accumulate);

}  // namespace zt
