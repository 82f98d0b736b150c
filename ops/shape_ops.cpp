#include "ops/shape_ops.h"

#include "framework/autograd/node.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"
#include "ops/shape_ops_kernels.h"

namespace zt::ops {

namespace {

// The shape `requested` (one entry may be -1) resolves to for `numel` elements.
Shape resolve_shape(const Shape& from, const Shape& requested) {
  Shape s = requested;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      ZT_CHECK(infer < 0, "reshape: ", shape_str(requested), " has more than one -1");
      infer = static_cast<int64_t>(i);
    } else {
      ZT_CHECK(s[i] >= 0, "reshape: negative dimension in ", shape_str(requested));
      known *= s[i];
    }
  }
  const int64_t n = shape_numel(from);
  if (infer >= 0) {
    ZT_CHECK(known > 0 && n % known == 0, "reshape: cannot reshape ", shape_str(from), " (", n, " elements) into ",
             shape_str(requested));
    s[infer] = n / known;
  }
  ZT_CHECK(shape_numel(s) == n, "reshape: cannot reshape ", shape_str(from), " (", n, " elements) into ",
           shape_str(requested), " (", shape_numel(s), " elements)");
  return s;
}

int64_t normalize_dim(const char* op, int64_t d, const Shape& shape) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t r = d < 0 ? d + nd : d;
  ZT_CHECK(r >= 0 && r < nd, op, ": dimension ", d, " out of range for shape ", shape_str(shape));
  return r;
}

// Contiguous on any device: a no-op when already contiguous (generic), a copy kernel on CPU.
Tensor contiguous_on_device(const char* op, const Tensor& t) {
  if (t.is_contiguous()) return t;
  return t.device().is_cpu() ? contiguous_cpu(t) : t.contiguous();  // CUDA: Tensor's strided-copy kernel
}

Tensor reshape_tensor(const char* op, const Tensor& t, const Shape& shape) {
  return contiguous_on_device(op, t).view(shape);
}

Tensor transpose_tensor(const Tensor& t, int64_t d0, int64_t d1) {
  Tensor view = t.transpose(d0, d1);
  if (view.is_contiguous()) return view;  // e.g. a swap involving a dimension of size 1
  return view.device().is_cpu() ? contiguous_cpu(view) : view.contiguous();
}

struct ReshapeNode : Node {
  Shape input_shape;
  explicit ReshapeNode(const Variable& x) : Node("reshape", {x}), input_shape(x.shape()) {}
  std::vector<Tensor> backward(const Tensor& g) override { return {reshape_tensor("reshape", g, input_shape)}; }
};

struct TransposeNode : Node {
  int64_t d0, d1;
  TransposeNode(const Variable& x, int64_t a, int64_t b) : Node("transpose", {x}), d0(a), d1(b) {}
  std::vector<Tensor> backward(const Tensor& g) override { return {transpose_tensor(g, d0, d1)}; }
};

// One piece of split_last: its gradient is zero outside the piece's columns (the engine
// sums the pieces' gradients into x's).
struct SplitPieceNode : Node {
  int64_t full, offset;
  DType dtype;
  SplitPieceNode(const Variable& x, int64_t off)
      : Node("split_last", {x}), full(x.shape().back()), offset(off), dtype(x.dtype()) {}
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor gg = grad_as(g, dtype);
    return {ZT_ON_DEVICE(gg, pad_last_cpu(gg, full, offset), pad_last_cuda(gg, full, offset))};
  }
};

// concat_rows: each input's gradient is its rows of the output's (views; no copy).
struct ConcatRowsNode : Node {
  std::vector<int64_t> rows;
  DType dtype;
  ConcatRowsNode(const std::vector<Variable>& xs) : Node("concat_rows", xs), dtype(xs[0].dtype()) {
    for (const auto& x : xs) rows.push_back(x.shape()[0]);
  }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor gg = grad_as(g, dtype);
    std::vector<Tensor> out;
    int64_t at = 0;
    for (int64_t n : rows) {
      out.push_back(gg.slice(0, at, at + n));
      at += n;
    }
    return out;
  }
};

}  // namespace

Variable reshape(const Variable& x, const Shape& shape) {
  check_defined("reshape", "x", x);
  const Shape resolved = resolve_shape(x.shape(), shape);
  Tensor y = reshape_tensor("reshape", x.tensor(), resolved);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<ReshapeNode>(x));
}

Variable transpose(const Variable& x, int64_t d0, int64_t d1) {
  check_defined("transpose", "x", x);
  d0 = normalize_dim("transpose", d0, x.shape());
  d1 = normalize_dim("transpose", d1, x.shape());
  Tensor y = transpose_tensor(x.tensor(), d0, d1);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<TransposeNode>(x, d0, d1));
}

std::vector<Variable> split_last(const Variable& x, int64_t parts) {
  check_defined("split_last", "x", x);
  ZT_CHECK(x.tensor().dim() >= 1, "split_last: x must have at least one dimension, got shape ", shape_str(x.shape()));
  ZT_CHECK(parts >= 1, "split_last: parts must be >= 1, got ", parts);
  const int64_t last = x.shape().back();
  ZT_CHECK(last % parts == 0, "split_last: last dimension ", last, " of ", shape_str(x.shape()),
           " does not split into ", parts, " equal parts");
  return split_last(x, std::vector<int64_t>(static_cast<size_t>(parts), last / parts));
}

std::vector<Variable> split_last(const Variable& x, const std::vector<int64_t>& widths) {
  check_defined("split_last", "x", x);
  ZT_CHECK(x.tensor().dim() >= 1, "split_last: x must have at least one dimension, got shape ", shape_str(x.shape()));
  int64_t total = 0;
  for (int64_t w : widths) {
    ZT_CHECK(w >= 0, "split_last: piece width ", w, " is negative");
    total += w;
  }
  ZT_CHECK(!widths.empty() && total == x.shape().back(), "split_last: piece widths adding up to ", total,
           " do not split the last dimension of ", shape_str(x.shape()));
  const bool grad = needs_grad({x});
  std::vector<Variable> out;
  out.reserve(widths.size());
  int64_t offset = 0;
  for (int64_t w : widths) {
    const Tensor slice = x.tensor().slice(-1, offset, offset + w);
    Tensor piece = slice.device().is_cpu() ? contiguous_cpu(slice) : slice.contiguous();
    if (grad) out.push_back(Variable::from_op(piece, std::make_shared<SplitPieceNode>(x, offset)));
    else out.emplace_back(piece);
    offset += w;
  }
  return out;
}

Variable concat_rows(const std::vector<Variable>& xs) {
  ZT_CHECK(!xs.empty(), "concat_rows: no tensors");
  for (const auto& x : xs) check_defined("concat_rows", "x", x);
  const Variable& first = xs[0];
  ZT_CHECK(first.tensor().dim() >= 1, "concat_rows: tensors need a dimension 0, got shape ", shape_str(first.shape()));
  Shape shape = first.shape();
  shape[0] = 0;
  for (const auto& x : xs) {
    ZT_CHECK(x.dtype() == first.dtype() && x.device() == first.device(), "concat_rows: a ", dtype_name(x.dtype()),
             " tensor on ", x.device().str(), " among ", dtype_name(first.dtype()), " on ", first.device().str());
    Shape rest = x.shape(), want = first.shape();
    ZT_CHECK(rest.size() == want.size(), "concat_rows: shapes ", shape_str(x.shape()), " and ", shape_str(first.shape()),
             " differ beyond dimension 0");
    rest[0] = want[0] = 0;
    ZT_CHECK(rest == want, "concat_rows: shapes ", shape_str(x.shape()), " and ", shape_str(first.shape()),
             " differ beyond dimension 0");
    shape[0] += x.shape()[0];
  }
  Tensor y = Tensor::empty(shape, first.dtype(), first.device());
  int64_t at = 0;
  for (const auto& x : xs) {
    y.slice(0, at, at + x.shape()[0]).copy_(x.tensor());
    at += x.shape()[0];
  }
  if (!needs_grad(xs)) return Variable(y);
  return Variable::from_op(y, std::make_shared<ConcatRowsNode>(xs));
}

}  // namespace zt::ops
