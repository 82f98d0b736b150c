// cuDNN fused attention: the operation graphs of ops/attention_cudnn.h built from cuDNN 9
// backend descriptors, their plans cached per problem, and their execution.
//
// The graphs follow the DAGs cudnn-frontend's SDPA nodes lower to on cuDNN 9.x below 9.21
// (its "composite" nodes; the single SDPA operation descriptors need 9.21 for a causal mask).
// cuDNN's pattern matcher accepted slightly different forms of the same DAG over the 9.x
// releases (mask value -inf or -FLT_MAX, the causal mask before or after the Stats
// subtraction, Delta kept inside the engine or in a buffer, ...): each graph is tried in the
// current form first and in the older forms after it, and the first that yields a plan is
// kept. ZT_CUDNN_DEBUG=1 prints every step that fails and which form was kept.
#ifdef ZTRAIN_WITH_CUDNN
#include "ops/attention_cudnn.h"

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/cudnn.h"
#include "framework/cuda/op_profiler.h"
#include "framework/cuda/stream.h"

namespace zt::ops {

// Releases cudnn-frontend keeps away from these graphs (attention_cudnn.h).
bool cudnn_release_takes(int64_t T) {
  const int64_t version = cuda::cudnn_version();
  return !(version >= 91000 && version < 91002) && !(version <= 91500 && T % 128 != 0);
}

namespace {

using cuda::BackendDescriptor;
using Dims = std::vector<int64_t>;

// The handle attributes are marked deprecated in cuDNN 9 (device-property descriptors can
// replace them); they still work and tie graph and plan to the handle's device, as
// cudnn-frontend sets them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
constexpr cudnnBackendAttributeName_t kGraphHandle = CUDNN_ATTR_OPERATIONGRAPH_HANDLE;
constexpr cudnnBackendAttributeName_t kPlanHandle = CUDNN_ATTR_EXECUTION_PLAN_HANDLE;
#pragma GCC diagnostic pop

// Unique ids of the tensors the caller binds memory (or a host scalar) to at execution;
// virtual tensors (inside the fused kernel) are numbered from kFirstVirtualUid.
enum Uid : int64_t {
  kQ = 1,
  kK,           // bound to K, described as K^T [B, H, D, T]
  kV,           // forward: V [B, H, T, D]; backward: V^T [B, H, D, T]
  kO,
  kStats,       // [B, H, T, 1] f32
  kScale,       // by value: 1 / sqrt(D)
  kMaskValue,   // by value: what masked scores become
  kDO,
  kDQ,
  kDK,
  kDV,
  kSoftmaxSum,  // Delta = rowsum(dO o O), [B, H, T, 1] f32
  kDQAccum,     // dQ accumulated in f32, [B, H, T, D] contiguous
  kOne,         // by value: 1
  kUidCount
};
constexpr int64_t kFirstVirtualUid = 100;

// The forms of the graphs (see the top of the file). Forward uses the first two fields.
struct GraphStyle {
  const char* name;
  cudnnDataType_t index_math;  // math precision of the causal mask's GEN_INDEX ops
  bool mask_lowest;            // masked scores become -FLT_MAX (else -inf; -FLT_MAX anyway below 9.10)
  bool mask_before_stats;      // backward: mask S * scale, then subtract Stats (else subtract, then mask)
  bool softmax_sum_virtual;    // backward: Delta stays inside the engine (else a f32 buffer we bind)
  bool dp_times_one;           // backward: dP * 1 (the dropout-mask slot of the older graphs)
  bool dq_accum_reordered;     // backward: the f32 dQ accumulator F16x16-reordered and zeroed first
  bool dq_direct;              // backward: dQ written by the product itself, no f32 accumulator
};

// cudnn-frontend 1.x as of cuDNN 9.19 (its composite SDPA and diagonal-band-mask nodes).
constexpr GraphStyle kCurrentStyle{"current", CUDNN_DATA_FLOAT, false, false, false, false, false, false};
// cudnn-frontend of the cuDNN 9.0 - 9.5 era.
constexpr GraphStyle kEarly9Style{"early-9.x", CUDNN_DATA_INT32, true, true, true, true, true, false};
// The current form with dQ straight from the product (the "dP workspace" variant).
constexpr GraphStyle kDirectDqStyle{"current, direct dQ", CUDNN_DATA_FLOAT, false, false, false, false, false, true};

constexpr std::array<GraphStyle, 2> kForwardStyles{kCurrentStyle, kEarly9Style};
constexpr std::array<GraphStyle, 3> kBackwardStyles{kCurrentStyle, kEarly9Style, kDirectDqStyle};

// An execution plan and everything it was made from (kept alive with it).
struct Plan {
  std::vector<std::unique_ptr<BackendDescriptor>> parts;
  BackendDescriptor plan;
  int64_t workspace = 0;
  std::vector<int64_t> uids;  // the non-virtual tensors, in the variant pack's order
};

// Builds one operation graph from straight-line calls, then finds its plan. A descriptor that
// fails to finalize is remembered (the first one is reported) and the build returns no plan.
class GraphBuilder {
 public:
  explicit GraphBuilder(std::string what) : what_(std::move(what)) {}

  // A tensor descriptor: dims and strides in elements, 16-byte aligned data.
  const BackendDescriptor* tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                                  bool is_virtual = false, bool by_value = false, bool reordered = false) {
    BackendDescriptor& t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, type)
        .set(CUDNN_ATTR_TENSOR_DIMENSIONS, dims)
        .set(CUDNN_ATTR_TENSOR_STRIDES, strides)
        .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, uid)
        .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, int64_t{16})
        .set_bool(CUDNN_ATTR_TENSOR_IS_VIRTUAL, is_virtual)
        .set_bool(CUDNN_ATTR_TENSOR_IS_BY_VALUE, by_value);
    if (reordered) {
      const cudnnBackendTensorReordering_t r = CUDNN_TENSOR_REORDERING_F16x16;
      t.set(CUDNN_ATTR_TENSOR_REORDERING_MODE, CUDNN_TYPE_TENSOR_REORDERING_MODE, 1, &r);
    }
    finalize(t, "tensor uid " + std::to_string(uid) + " " + dims_str(dims) + " strides " + dims_str(strides));
    if (!is_virtual) uids_.push_back(uid);
    return &t;
  }
  const BackendDescriptor* virtual_tensor(cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return tensor(next_virtual_uid_++, type, dims, strides, true);
  }
  // An f32 scalar passed by value (host memory bound at execution), shaped [1, 1, 1, 1].
  const BackendDescriptor* scalar(int64_t uid) {
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x [, b] [, t]); axis only for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, const BackendDescriptor* x, const BackendDescriptor* b,
                 const BackendDescriptor* t, const BackendDescriptor* y, cudnnDataType_t math = CUDNN_DATA_FLOAT,
                 int64_t axis = -1) {
    BackendDescriptor& pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode).set(CUDNN_ATTR_POINTWISE_MATH_PREC, math);
    if (axis >= 0) pw.set(CUDNN_ATTR_POINTWISE_AXIS, axis);
    finalize(pw, "pointwise descriptor (mode " + std::to_string(static_cast<int>(mode)) + ")");
    BackendDescriptor& op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw).set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, *x);
    if (b) op.set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
    if (t) op.set(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, *t);
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, *y);
    add_operation(op, "pointwise operation (mode " + std::to_string(static_cast<int>(mode)) + ")");
  }

  // y = reduce(x) over the dimensions where y has extent 1, and, where y's extent divides x's
  // (grouped heads: H -> Hkv), over each run of x / y consecutive indices.
  void reduction(cudnnReduceTensorOp_t reduce, const BackendDescriptor* x, const BackendDescriptor* y) {
    BackendDescriptor& r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    r.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce)
        .set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_DATA_FLOAT);
    finalize(r, "reduction descriptor");
    BackendDescriptor& op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, *x)
        .set(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, *y)
        .set(CUDNN_ATTR_OPERATION_REDUCTION_DESC, r);
    add_operation(op, "reduction operation");
  }

  // c [.., M, N] = a [.., M, K] b [.., K, N], f32 accumulation.
  void matmul(const BackendDescriptor* a, const BackendDescriptor* b, const BackendDescriptor* c) {
    BackendDescriptor& m = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    m.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_DATA_FLOAT);
    finalize(m, "matmul descriptor");
    BackendDescriptor& op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_MATMUL_ADESC, *a)
        .set(CUDNN_ATTR_OPERATION_MATMUL_BDESC, *b)
        .set(CUDNN_ATTR_OPERATION_MATMUL_CDESC, *c)
        .set(CUDNN_ATTR_OPERATION_MATMUL_DESC, m);
    add_operation(op, "matmul operation");
  }

  // y = x seen through y's dims and strides (a transposed view here).
  void reshape(const BackendDescriptor* x, const BackendDescriptor* y) {
    BackendDescriptor& op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, *x).set(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, *y);
    add_operation(op, "reshape operation");
  }

  // The operation graph, the engine configurations cuDNN's heuristics offer for it (mode A,
  // then the fallback list), and the first of them that finalizes as an execution plan.
  std::unique_ptr<Plan> build(cudnnHandle_t handle) {
    if (!failure_.empty()) return report(failure_);
    const auto start = std::chrono::steady_clock::now();
    BackendDescriptor& graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops_.size()),
              ops_.data())
        .set(kGraphHandle, CUDNN_TYPE_HANDLE, 1, &handle);
    if (graph.finalize() != CUDNN_STATUS_SUCCESS) return report("operation graph finalize: " + graph.failure());
    std::string tried;
    for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      const std::string mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics mode A" : "heuristics fallback";
      BackendDescriptor& heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph).set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
      if (heur.finalize() != CUDNN_STATUS_SUCCESS) {
        debug(mode_name + " finalize: " + heur.failure());
        continue;
      }
      int64_t count = 0;
      cudnnStatus_t s =
          cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr);
      if (s != CUDNN_STATUS_SUCCESS || count <= 0) {
        debug(mode_name + ": " + (s != CUDNN_STATUS_SUCCESS ? cuda::cudnn_error_text(s) : "no engine configuration"));
        continue;
      }
      std::vector<cudnnBackendDescriptor_t> configs;
      for (int64_t i = 0; i < count; ++i) configs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR).get());
      int64_t returned = 0;
      s = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                   &returned, configs.data());
      if (s != CUDNN_STATUS_SUCCESS) {
        debug(mode_name + " results: " + cuda::cudnn_error_text(s));
        continue;
      }
      for (int64_t i = 0; i < returned; ++i) {
        BackendDescriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        plan.set(kPlanHandle, CUDNN_TYPE_HANDLE, 1, &handle)
            .set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &configs[static_cast<size_t>(i)]);
        const std::string which = mode_name + " configuration " + std::to_string(i + 1) + "/" + std::to_string(returned) +
                                  " (engine " + std::to_string(engine_index(configs[static_cast<size_t>(i)])) + ")";
        if (plan.finalize() != CUDNN_STATUS_SUCCESS) {
          debug("execution plan finalize, " + which + ": " + plan.failure());
          continue;
        }
        auto result = std::make_unique<Plan>();
        int64_t n = 0;
        s = cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                     &result->workspace);
        if (s != CUDNN_STATUS_SUCCESS) {
          debug("workspace size, " + which + ": " + cuda::cudnn_error_text(s));
          continue;
        }
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        debug("plan ready: " + which + ", workspace " + std::to_string(result->workspace) + " bytes, built in " +
              std::to_string(static_cast<int64_t>(ms)) + " ms");
        result->plan = std::move(plan);
        result->parts = std::move(owned_);
        result->uids = uids_;
        return result;
      }
      tried += (tried.empty() ? "" : ", ") + std::to_string(returned) + " from " + mode_name;
    }
    return report("no engine configuration made a plan (" + (tried.empty() ? std::string("none offered") : tried) + ")");
  }

 private:
  BackendDescriptor& make(cudnnBackendDescriptorType_t type) {
    owned_.push_back(std::make_unique<BackendDescriptor>(type));
    return *owned_.back();
  }
  void finalize(BackendDescriptor& d, const std::string& what) {
    if (d.finalize() != CUDNN_STATUS_SUCCESS && failure_.empty()) failure_ = what + " finalize: " + d.failure();
  }
  void add_operation(BackendDescriptor& op, const std::string& what) {
    finalize(op, what);
    ops_.push_back(op.get());
  }
  void debug(const std::string& message) const { cuda::cudnn_debug_print(what_ + ": " + message); }
  std::unique_ptr<Plan> report(const std::string& message) const {
    debug("refused: " + message);
    return nullptr;
  }
  // The global index of a configuration's engine (for the debug output; -1 when unknown).
  int64_t engine_index(cudnnBackendDescriptor_t config) const {
    if (!cuda::cudnn_debug()) return -1;
    BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    cudnnBackendDescriptor_t e = engine.get();
    int64_t n = 0, index = -1;
    if (cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &e) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index) !=
            CUDNN_STATUS_SUCCESS)
      return -1;
    return index;
  }
  static std::string dims_str(const Dims& d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  }

  std::string what_;
  std::vector<std::unique_ptr<BackendDescriptor>> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  std::vector<int64_t> uids_;
  int64_t next_virtual_uid_ = kFirstVirtualUid;
  std::string failure_;
};

// Everything a plan depends on. Hkv < H: grouped-query heads (query head h uses key/value
// head h / (H / Hkv)).
struct Problem {
  int device = 0;
  DType dtype = DType::bf16;
  int64_t B = 0, H = 0, Hkv = 0, T = 0, D = 0;
  AttentionLayout in, out;

  auto key() const {
    return std::make_tuple(device, static_cast<int>(dtype), B, H, Hkv, T, D, in.batch, in.head, in.row, out.batch,
                           out.head, out.row);
  }
  bool operator<(const Problem& o) const { return key() < o.key(); }
  bool grouped() const { return Hkv != H; }
  std::string str() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) +
           (grouped() ? " Hkv=" + std::to_string(Hkv) : std::string()) + " D=" + std::to_string(D);
  }
};

Problem problem_of(const FlashArgs& a, DType dtype, const AttentionLayout& out, int device) {
  Problem p;
  p.device = device;
  p.dtype = dtype;
  p.B = a.B;
  p.H = a.H;
  p.Hkv = a.Hkv;
  p.T = a.T;
  p.D = a.D;
  p.in = a.in;
  p.out = out;
  return p;
}

// Strides of a [B, H, T, D] view with this layout, and of its [B, H, D, T] transpose.
Dims strides(const AttentionLayout& l) { return {l.batch, l.head, l.row, 1}; }
Dims transposed(const AttentionLayout& l) { return {l.batch, l.head, 1, l.row}; }

// The dims of one problem's tensors. Q, O, dO, dQ and the scores have the H query heads; K,
// V, dK and dV the Hkv key/value heads (kv_*; K^T and V^T as kv_bhdt). cuDNN's
// products broadcast a key/value head over its group of H / Hkv query heads.
struct Shapes {
  Dims bhtd, kv_bhtd, kv_bhdt, btt, btt_str, bt1, bt1_str, bhtd_packed, btd_str_fe;
  explicit Shapes(const Problem& p) {
    const int64_t b = p.B, h = p.H, s = p.T, d = p.D;
    bhtd = {b, h, s, d};
    kv_bhtd = {b, p.Hkv, s, d};
    kv_bhdt = {b, p.Hkv, d, s};
    btt = {b, h, s, s};
    btt_str = {h * s * s, s * s, s, 1};
    bt1 = {b, h, s, 1};
    bt1_str = {h * s, s, 1, 1};
    bhtd_packed = {h * s * d, s * d, d, 1};
    btd_str_fe = {h * s * d, s * d, h * d, 1};  // the strides cudnn-frontend gives the virtual dO o O
  }
};

// y = x where row >= col (query t sees keys 0..t), else the mask value.
const BackendDescriptor* causal_mask(GraphBuilder& g, const Shapes& sh, const GraphStyle& st,
                                     const BackendDescriptor* x, const BackendDescriptor* mask_value) {
  const BackendDescriptor* row = g.virtual_tensor(CUDNN_DATA_INT32, sh.btt, sh.btt_str);
  const BackendDescriptor* col = g.virtual_tensor(CUDNN_DATA_INT32, sh.btt, sh.btt_str);
  const BackendDescriptor* keep = g.virtual_tensor(CUDNN_DATA_BOOLEAN, sh.btt, sh.btt_str);
  const BackendDescriptor* y = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.btt, sh.btt_str);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, row, st.index_math, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, col, st.index_math, 3);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, keep, CUDNN_DATA_BOOLEAN);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, x, mask_value, keep, y);
  return y;
}

// A binary pointwise op into a fresh f32 virtual tensor of the given shape.
const BackendDescriptor* binary(GraphBuilder& g, cudnnPointwiseMode_t mode, const BackendDescriptor* x,
                                const BackendDescriptor* b, const Dims& dims, const Dims& strides) {
  const BackendDescriptor* y = g.virtual_tensor(CUDNN_DATA_FLOAT, dims, strides);
  g.pointwise(mode, x, b, nullptr, y);
  return y;
}

constexpr cudnnDataType_t kIo = CUDNN_DATA_BFLOAT16;  // the only io type so far (our bf16)

// The tensors both graphs bind: Q, K^T, O, Stats, and the scale and mask-value scalars.
struct Common {
  const BackendDescriptor *q, *kt, *o, *stats, *scale, *mask_value;
};
Common common_tensors(GraphBuilder& g, const Problem& p, const Shapes& sh) {
  return {g.tensor(kQ, kIo, sh.bhtd, strides(p.in)),
          g.tensor(kK, kIo, sh.kv_bhdt, transposed(p.in)),
          g.tensor(kO, kIo, sh.bhtd, strides(p.out)),
          g.tensor(kStats, CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str),
          g.scalar(kScale),
          g.scalar(kMaskValue)};
}

std::unique_ptr<Plan> build_forward(const Problem& p, const GraphStyle& st, cudnnHandle_t handle) {
  GraphBuilder g("attention forward " + p.str() + ", " + st.name + " form");
  const Shapes sh(p);
  const auto [q, kt, o, stats, scale, mask_value] = common_tensors(g, p, sh);
  const BackendDescriptor* v = g.tensor(kV, kIo, sh.kv_bhtd, strides(p.in));

  const BackendDescriptor* s = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.btt, sh.btt_str);
  g.matmul(q, kt, s);
  const BackendDescriptor* scaled = binary(g, CUDNN_POINTWISE_MUL, s, scale, sh.btt, sh.btt_str);
  const BackendDescriptor* masked = causal_mask(g, sh, st, scaled, mask_value);
  // Softmax with statistics: m = max, e = exp(x - m), l = sum e, Stats = m + log l, P = e / l.
  const BackendDescriptor* m = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, m);
  const BackendDescriptor* centered = binary(g, CUDNN_POINTWISE_SUB, masked, m, sh.btt, sh.btt_str);
  const BackendDescriptor* e = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.btt, sh.btt_str);
  g.pointwise(CUDNN_POINTWISE_EXP, centered, nullptr, nullptr, e);
  const BackendDescriptor* l = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, l);
  const BackendDescriptor* log_l = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str);
  g.pointwise(CUDNN_POINTWISE_LOG, l, nullptr, nullptr, log_l);
  g.pointwise(CUDNN_POINTWISE_ADD, m, log_l, nullptr, stats);
  // P in the io type: the second product's A operand must be (cuDNN's requirement).
  const BackendDescriptor* probs = g.virtual_tensor(kIo, sh.btt, sh.btt_str);
  g.pointwise(CUDNN_POINTWISE_DIV, e, l, nullptr, probs);
  g.matmul(probs, v, o);
  return g.build(handle);
}

// Where a product that makes dK or dV (one term per query head) writes. Plain heads: dK or dV
// itself. Grouped heads: a virtual [B, H, T, D] per-query-head tensor (packed, io type), which
// sum_groups() then reduces over each group of H / Hkv consecutive heads into the
// [B, Hkv, T, D] gradient (the DAG cudnn-frontend's SDPA backward builds for grouped-query
// attention: the product first, then the reduction).
const BackendDescriptor* per_head_target(GraphBuilder& g, const Problem& p, const Shapes& sh,
                                         const BackendDescriptor* grad) {
  return p.grouped() ? g.virtual_tensor(kIo, sh.bhtd, sh.bhtd_packed) : grad;
}
void sum_groups(GraphBuilder& g, const Problem& p, const BackendDescriptor* per_head, const BackendDescriptor* grad) {
  if (p.grouped()) g.reduction(CUDNN_REDUCE_TENSOR_ADD, per_head, grad);
}

std::unique_ptr<Plan> build_backward(const Problem& p, const GraphStyle& st, cudnnHandle_t handle) {
  GraphBuilder g("attention backward " + p.str() + ", " + st.name + " form");
  const Shapes sh(p);
  const auto [q, kt, o, stats, scale, mask_value] = common_tensors(g, p, sh);
  const BackendDescriptor* vt = g.tensor(kV, kIo, sh.kv_bhdt, transposed(p.in));
  const BackendDescriptor* dout = g.tensor(kDO, kIo, sh.bhtd, strides(p.out));
  const BackendDescriptor* dq = g.tensor(kDQ, kIo, sh.bhtd, strides(p.in));
  const BackendDescriptor* dk = g.tensor(kDK, kIo, sh.kv_bhtd, strides(p.in));
  const BackendDescriptor* dv = g.tensor(kDV, kIo, sh.kv_bhtd, strides(p.in));
  const BackendDescriptor* one = g.scalar(kOne);

  // Delta = rowsum(dO o O) (times 1: the dropout scale's slot).
  const BackendDescriptor* prod = binary(g, CUDNN_POINTWISE_MUL, dout, o, sh.bhtd, sh.btd_str_fe);
  const BackendDescriptor* rowsum = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, prod, rowsum);
  const BackendDescriptor* delta = st.softmax_sum_virtual
                                       ? g.virtual_tensor(CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str)
                                       : g.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, sh.bt1, sh.bt1_str);
  g.pointwise(CUDNN_POINTWISE_MUL, rowsum, one, nullptr, delta);

  // P = exp(S * scale - Stats) under the causal mask.
  const BackendDescriptor* s = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.btt, sh.btt_str);
  g.matmul(q, kt, s);
  const BackendDescriptor* scaled = binary(g, CUDNN_POINTWISE_MUL, s, scale, sh.btt, sh.btt_str);
  const BackendDescriptor* logits = nullptr;
  if (st.mask_before_stats) {
    logits = binary(g, CUDNN_POINTWISE_SUB, causal_mask(g, sh, st, scaled, mask_value), stats, sh.btt, sh.btt_str);
  } else {
    logits = causal_mask(g, sh, st, binary(g, CUDNN_POINTWISE_SUB, scaled, stats, sh.btt, sh.btt_str), mask_value);
  }
  const BackendDescriptor* probs = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.btt, sh.btt_str);
  g.pointwise(CUDNN_POINTWISE_EXP, logits, nullptr, nullptr, probs);

  // dV = P^T dO, with P^T a transposed view of P in the io type.
  const Dims btt_transposed{sh.btt_str[0], sh.btt_str[1], 1, p.T};
  const BackendDescriptor* probs_t = g.virtual_tensor(kIo, sh.btt, btt_transposed);
  g.reshape(probs, probs_t);
  const BackendDescriptor* dv_terms = per_head_target(g, p, sh, dv);
  g.matmul(probs_t, dout, dv_terms);
  sum_groups(g, p, dv_terms, dv);

  // dS = P (dO V^T - Delta) * scale.
  const BackendDescriptor* dp = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.btt, sh.btt_str);
  g.matmul(dout, vt, dp);
  if (st.dp_times_one) dp = binary(g, CUDNN_POINTWISE_MUL, dp, one, sh.btt, sh.btt_str);
  const BackendDescriptor* dp_centered = binary(g, CUDNN_POINTWISE_SUB, dp, delta, sh.btt, sh.btt_str);
  const BackendDescriptor* ds_unscaled = binary(g, CUDNN_POINTWISE_MUL, dp_centered, probs, sh.btt, sh.btt_str);
  const BackendDescriptor* ds = binary(g, CUDNN_POINTWISE_MUL, ds_unscaled, scale, sh.btt, sh.btt_str);

  // dK = dS^T Q.
  const BackendDescriptor* ds_t = g.virtual_tensor(kIo, sh.btt, btt_transposed);
  g.reshape(ds, ds_t);
  const BackendDescriptor* dk_terms = per_head_target(g, p, sh, dk);
  g.matmul(ds_t, q, dk_terms);
  sum_groups(g, p, dk_terms, dk);

  // dQ = dS K, K seen again as [B, Hkv, T, D] through a reshape of K^T.
  const BackendDescriptor* k = g.virtual_tensor(CUDNN_DATA_FLOAT, sh.kv_bhtd, strides(p.in));
  g.reshape(kt, k);
  if (st.dq_direct) {
    g.matmul(ds, k, dq);
  } else {
    const BackendDescriptor* dq_accum =
        g.tensor(kDQAccum, CUDNN_DATA_FLOAT, sh.bhtd, sh.bhtd_packed, false, false, st.dq_accum_reordered);
    g.matmul(ds, k, dq_accum);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dq);
  }
  return g.build(handle);
}

// The plans of one problem, the graph forms they were built from, and the host scalars their
// by-value tensors read at each execution.
struct AttentionPlans {
  std::unique_ptr<Plan> forward, backward;
  GraphStyle forward_style{}, backward_style{};
  float scale = 0, forward_mask_value = 0, backward_mask_value = 0, one = 1;
  bool supported() const { return forward && backward; }
};

std::mutex g_mu;  // guards the cache and serialises executions (one handle per device)
std::map<Problem, std::unique_ptr<AttentionPlans>>& plan_cache() {
  static auto* cache = new std::map<Problem, std::unique_ptr<AttentionPlans>>();
  return *cache;
}
std::atomic<int64_t> g_plans_built{0};

float mask_value(const GraphStyle& st) {
  // cuDNN below 9.10 wants a finite mask value (as cudnn-frontend passes it there).
  return st.mask_lowest || cuda::cudnn_version() < 91000 ? std::numeric_limits<float>::lowest()
                                                         : -std::numeric_limits<float>::infinity();
}

std::unique_ptr<AttentionPlans> build_plans(const Problem& p) {
  auto plans = std::make_unique<AttentionPlans>();
  const std::string what = "attention " + p.str();
  if (!cuda::cudnn_usable(p.device)) {
    cuda::cudnn_debug_print(what + ": refused: cuDNN is not usable on device " + std::to_string(p.device));
    return plans;
  }
  if (!cudnn_release_takes(p.T)) {
    cuda::cudnn_debug_print(what + ": refused: cuDNN " + std::to_string(cuda::cudnn_version()) +
                            " is not used for this shape (9.10.0/9.10.1, or T % 128 != 0 before 9.15.1)");
    return plans;
  }
  cudnnHandle_t handle = cuda::cudnn_handle(p.device);
  for (const GraphStyle& st : kForwardStyles) {
    plans->forward = build_forward(p, st, handle);
    if (plans->forward) {
      plans->forward_style = st;
      break;
    }
  }
  if (!plans->forward) return plans;
  for (const GraphStyle& st : kBackwardStyles) {
    plans->backward = build_backward(p, st, handle);
    if (plans->backward) {
      plans->backward_style = st;
      break;
    }
  }
  plans->scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.D)));
  plans->forward_mask_value = mask_value(plans->forward_style);
  plans->backward_mask_value = mask_value(plans->backward_style);
  if (plans->supported())
    cuda::cudnn_debug_print(what + ": cuDNN takes it (forward: " + plans->forward_style.name + " form, backward: " +
                            plans->backward_style.name + " form; cuDNN " + std::to_string(cuda::cudnn_version()) + ")");
  return plans;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
bool strides_aligned(const AttentionLayout& l) { return l.batch % 8 == 0 && l.head % 8 == 0 && l.row % 8 == 0; }

// The cached plans of a problem that passed cudnn_attention_supported(). Call with g_mu held.
const AttentionPlans& plans_of(const Problem& p) {
  auto it = plan_cache().find(p);
  ZT_CHECK(it != plan_cache().end() && it->second->supported(), "cuDNN attention: no plans for ", p.str(),
           " (cudnn_attention_supported must accept the problem first)");
  return *it->second;
}

// Binds memory (by uid) to the plan's tensors and runs it on the current stream.
void execute(const Plan& plan, int device, const std::array<void*, kUidCount>& by_uid) {
  std::vector<void*> pointers;
  for (int64_t uid : plan.uids) pointers.push_back(by_uid[static_cast<size_t>(uid)]);
  cuda::DeviceWorkspace workspace(static_cast<size_t>(plan.workspace), device);
  void* ws = workspace.data();
  BackendDescriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(plan.uids.size()),
           plan.uids.data())
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(pointers.size()),
           pointers.data())
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  ZT_CHECK(pack.finalize() == CUDNN_STATUS_SUCCESS, "cuDNN attention: variant pack: ", pack.failure());
  ZT_CUDNN_CHECK(cudnnBackendExecute(cuda::cudnn_handle(device), plan.plan.get(), pack.get()));
}

}  // namespace

bool cudnn_attention_supported(const FlashArgs& a, DType dtype, const AttentionLayout& out_layout, int device) {
  if (dtype != DType::bf16 || a.D <= 0 || a.D % 8 != 0 || a.B * a.H * a.T == 0) return false;
  if (a.Hkv < 1 || a.H % a.Hkv != 0) return false;
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !strides_aligned(a.in) || !strides_aligned(out_layout))
    return false;
  const Problem p = problem_of(a, dtype, out_layout, device);
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = plan_cache().find(p);
  if (it != plan_cache().end()) return it->second->supported();
  // Building a plan allocates and compiles: never inside a CUDA graph capture.
  cuda::set_device(device);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  ZT_CUDA_CHECK(cudaStreamIsCapturing(cuda::current_stream(), &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    cuda::cudnn_debug_print("attention " + p.str() + ": no plan yet and the stream is capturing: not built now");
    return false;
  }
  auto plans = build_plans(p);
  ++g_plans_built;
  const bool ok = plans->supported();
  plan_cache().emplace(p, std::move(plans));
  return ok;
}

void cudnn_attention_forward(const FlashArgs& a, DType dtype, void* out, const AttentionLayout& out_layout,
                             float* stats, int device) {
  ZT_CHECK(aligned16(out) && aligned16(stats), "cuDNN attention: output or statistics not 16-byte aligned");
  const Problem p = problem_of(a, dtype, out_layout, device);
  cuda::OpRange range("attention");
  cuda::set_device(device);
  std::lock_guard<std::mutex> lock(g_mu);
  const AttentionPlans& plans = plans_of(p);
  std::array<void*, kUidCount> by_uid{};
  by_uid[kQ] = const_cast<void*>(a.q);
  by_uid[kK] = const_cast<void*>(a.k);
  by_uid[kV] = const_cast<void*>(a.v);
  by_uid[kO] = out;
  by_uid[kStats] = stats;
  by_uid[kScale] = const_cast<float*>(&plans.scale);
  by_uid[kMaskValue] = const_cast<float*>(&plans.forward_mask_value);
  execute(*plans.forward, device, by_uid);
}

void cudnn_attention_backward(const FlashArgs& a, DType dtype, const void* out, const void* dout,
                              const AttentionLayout& out_layout, const float* stats, void* dq, void* dk, void* dv,
                              int device) {
  ZT_CHECK(aligned16(out) && aligned16(dout) && aligned16(stats) && aligned16(dq) && aligned16(dk) && aligned16(dv),
           "cuDNN attention: backward operands not 16-byte aligned");
  const Problem p = problem_of(a, dtype, out_layout, device);
  cuda::OpRange range("attention");
  cuda::set_device(device);
  std::lock_guard<std::mutex> lock(g_mu);
  const AttentionPlans& plans = plans_of(p);
  const GraphStyle& st = plans.backward_style;
  const size_t rows = static_cast<size_t>(p.B * p.H * p.T);
  cuda::DeviceWorkspace softmax_sum(st.softmax_sum_virtual ? 0 : rows * sizeof(float), device);
  cuda::DeviceWorkspace dq_accum(st.dq_direct ? 0 : rows * static_cast<size_t>(p.D) * sizeof(float), device);
  // The f32 dQ accumulator starts at zero: cuDNN does that itself from 9.6 (current form).
  if (!st.dq_direct && (st.dq_accum_reordered || cuda::cudnn_version() < 90600))
    ZT_CUDA_CHECK(cudaMemsetAsync(dq_accum.data(), 0, rows * static_cast<size_t>(p.D) * sizeof(float),
                                  cuda::current_stream()));
  std::array<void*, kUidCount> by_uid{};
  by_uid[kQ] = const_cast<void*>(a.q);
  by_uid[kK] = const_cast<void*>(a.k);
  by_uid[kV] = const_cast<void*>(a.v);
  by_uid[kO] = const_cast<void*>(out);
  by_uid[kDO] = const_cast<void*>(dout);
  by_uid[kStats] = const_cast<float*>(stats);
  by_uid[kDQ] = dq;
  by_uid[kDK] = dk;
  by_uid[kDV] = dv;
  by_uid[kSoftmaxSum] = softmax_sum.data();
  by_uid[kDQAccum] = dq_accum.data();
  by_uid[kScale] = const_cast<float*>(&plans.scale);
  by_uid[kMaskValue] = const_cast<float*>(&plans.backward_mask_value);
  by_uid[kOne] = const_cast<float*>(&plans.one);
  execute(*plans.backward, device, by_uid);
}

int64_t cudnn_attention_plans_built() { return g_plans_built.load(); }

}  // namespace zt::ops

#endif  // ZTRAIN_WITH_CUDNN
