#pragma once
// The backward engine: runs the graph's nodes in reverse topological order from a root.
#include "framework/autograd/variable.h"

namespace zt {

// grad: the root's gradient; undefined means a host scalar `seed` (root must have one element).
void run_backward(const Variable& root, const Tensor& grad, double seed, bool retain_graph);

}  // namespace zt
