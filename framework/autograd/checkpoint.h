#pragma once
// Activation checkpointing (recomputation): a checkpoint region keeps only its inputs for
// backward, not the activations inside it, and runs its forward a second time in backward to
// get them back (Chen et al. 2016, "Training deep nets with sublinear memory cost").
//
//   y = checkpoint(fn, {x}, {&dropout_gen});
//
// Forward: fn(inputs) runs without a graph (nothing saved inside), and y's node, the region
// node, keeps the inputs. Backward of the region node: fn runs again, with a graph, on the
// saved inputs (each wrapped so that the gradient reaching it is captured; a leaf input enters
// as itself, its gradient going into .grad as without the region), the engine backpropagates
// y's gradient through that graph (run_region_backward, engine.h), and the node returns the
// inputs' captured gradients. Parameters fn reads get their gradients into .grad as they would
// without the region. The price: fn's forward twice per step. No-grad mode just runs fn.
//
// Bit-identical to running fn directly, loss and every gradient:
//  - the recomputation is the same ops on the same values; each generator in `generators` is
//    set back to its state before the forward for it and restored afterwards, so dropout draws
//    the same masks and the draws after the region do not move (a recomputation that ends
//    elsewhere in a stream than the forward did is a zt::Error: fn is not deterministic);
//  - the region's interior runs inside the enclosing backward at the point where its nodes
//    would have run, in the same order, and the captured input gradients are summed and folded
//    (Node::folds_gradients: a norm folding the residual stream's gradient) as the input's
//    producer would have received them; leaf gradients go into .grad in the same order;
//    compute-dtype gradients of master weights are widened with the enclosing backward's.
//  Two orders a region may change, both about its inputs: with several inputs, their producers
//  are released in the inputs' order (pass them in the order fn last uses them); and an input
//  that also feeds ops outside the region receives the interior's share as one sum (without the
//  region its terms would join the others one by one). An input read by the region alone, as a
//  transformer block's residual stream is, keeps every bit.
//
// The engine's rules (engine.h, run_region_backward): the region node lists every leaf fn reads
// (seen through needs_grad(), node.h) as an extra edge, so the leaf-ready hook (data
// parallelism's bucket all-reduces) fires once per leaf per backward, after the region and every
// other user of the leaf have added their share: a tied embedding or a weight read by two
// regions is never reported early.
//
// Contract of fn: a function of its inputs, the parameters it reads and the generators listed;
// it must not read a Variable that has a graph unless that Variable is one of the inputs (a
// zt::Error otherwise: its gradient could not reach the graph outside). fn, everything it
// references and the generators must stay alive until backward has run. Regions may nest.
// The output must be a floating tensor; inputs written in place after the forward are caught
// as for any saved tensor.
#include <functional>
#include <vector>

#include "framework/autograd/variable.h"
#include "framework/random.h"

namespace zt {

using CheckpointFn = std::function<Variable(const std::vector<Variable>& inputs)>;

Variable checkpoint(CheckpointFn fn, const std::vector<Variable>& inputs, std::vector<Generator*> generators = {});

}  // namespace zt
