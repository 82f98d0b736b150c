#include "framework/cuda/blas.h"

#include <array>
#include <map>
#include <mutex>
#include <tuple>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"

namespace zt::cuda {

namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's split-K and Hopper kernels want room

#define ZT_CUBLAS_CHECK(expr)                                                                           \
  do {                                                                                                  \
    cublasStatus_t zt_st_ = (expr);                                                                     \
    if (zt_st_ != CUBLAS_STATUS_SUCCESS)                                                                \
      ZT_FAIL("cuBLAS error ", cublasGetStatusName(zt_st_), " (", cublasGetStatusString(zt_st_), ") in ", \
              #expr, " at ", __FILE__, ":", __LINE__);                                                  \
  } while (0)

struct DeviceBlas {
  std::once_flag once;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// Never destroyed (like the allocator): handles outlive static tensors.
std::array<DeviceBlas, kMaxDevices>& devices() {
  static auto* d = new std::array<DeviceBlas, kMaxDevices>();
  return *d;
}

DeviceBlas& device_blas(int device) {
  ZT_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  DeviceBlas& d = devices()[static_cast<size_t>(device)];
  std::call_once(d.once, [&] {
    set_device(device);
    ZT_CUBLAS_CHECK(cublasLtCreate(&d.handle));
    ZT_CUDA_CHECK(cudaMalloc(&d.workspace, kWorkspaceBytes));
  });
  return d;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f64: return CUDA_R_64F;
    default: ZT_FAIL("CUDA matmul: no cuBLAS type for dtype ", dtype_name(t));
  }
}

// Largest power of two (up to 256) dividing the address: cuBLASLt picks kernels by alignment.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

// Everything the algorithm choice depends on.
using PlanKey = std::tuple<int, int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, bool, bool, uint32_t, uint32_t, uint32_t>;

struct Plan {
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
};

std::mutex g_plan_mu;
std::map<PlanKey, Plan> g_plans;

// RAII for the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void make_layout(cublasLtMatrixLayout_t* layout, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                 int64_t batch, int64_t stride) {
  ZT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    ZT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
    ZT_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
}

}  // namespace

cublasLtHandle_t lt_handle(int device) { return device_blas(device).handle; }

bool gemm(int device, const GemmArgs& g) {
  if (g.M == 0 || g.N == 0 || g.batch == 0) return true;
  ZT_CHECK(g.K > 0, "CUDA matmul: K == 0 (the caller zero-fills instead)");
  ZT_CHECK(g.batch < (int64_t{1} << 31), "CUDA matmul: batch ", g.batch, " too large");
  DeviceBlas& db = device_blas(device);
  set_device(device);
  const bool f64 = g.ab_dtype == DType::f64;
  ZT_CHECK(!f64 || g.c_dtype == DType::f64, "CUDA matmul: f64 operands need an f64 result");
  ZT_CHECK(!(f64 && g.bias), "CUDA matmul: no bias epilogue for f64");

  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLASLt's "A" is our B
  // buffer and its "B" our A buffer, each read as the column-major transpose of what it holds.
  const cudaDataType_t ab = cuda_type(g.ab_dtype), ct = cuda_type(g.c_dtype);
  const cublasComputeType_t compute = f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
  const cudaDataType_t scale_type = f64 ? CUDA_R_64F : CUDA_R_32F;
  const int64_t K = g.K;
  Descriptors d;
  ZT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, compute, scale_type));
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A = our B
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  if (g.bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias));
    ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ct, sizeof ct));
  }
  // Our B: [K, N] (N x K column-major, ld ldb) or [N, K] (K x N column-major).
  make_layout(&d.a, ab, g.trans_b ? K : g.N, g.trans_b ? g.N : K, g.ldb, g.batch, g.stride_b);
  // Our A: [M, K] (K x M column-major) or [K, M] (M x K column-major).
  make_layout(&d.b, ab, g.trans_a ? g.M : K, g.trans_a ? K : g.M, g.lda, g.batch, g.stride_a);
  make_layout(&d.c, ct, g.N, g.M, g.ldc, g.batch, g.stride_c);

  const uint32_t al_a = alignment(g.A), al_b = alignment(g.B), al_c = alignment(g.C);
  const PlanKey key{static_cast<int>(g.ab_dtype), static_cast<int>(g.c_dtype), device, g.trans_a, g.trans_b,
                    g.batch, g.M, g.N, K, g.lda, g.ldb, g.ldc, g.stride_a, g.stride_b, g.stride_c,
                    g.bias != nullptr, g.beta != 0.0, al_a, al_b, al_c};
  Plan plan;
  {
    std::lock_guard<std::mutex> lock(g_plan_mu);
    auto it = g_plans.find(key);
    if (it != g_plans.end()) plan = it->second;
    else {
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
      const uint64_t ws = kWorkspaceBytes;
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
      // Our A is cuBLASLt's B and vice versa.
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b, sizeof al_b));
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a, sizeof al_a));
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(db.handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found);
      if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
        plan.found = true;
        plan.algo = result.algo;
      } else if (!g.bias) {
        ZT_FAIL("CUDA matmul: cuBLASLt has no algorithm for ", dtype_name(g.ab_dtype), " -> ", dtype_name(g.c_dtype),
                " batch ", g.batch, " M ", g.M, " N ", g.N, " K ", g.K, " (status ", cublasGetStatusName(st), ")");
      }
      g_plans.emplace(key, plan);
    }
  }
  if (!plan.found) return false;  // bias epilogue unavailable: caller adds the bias

  const float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(g.beta);
  const void* alpha = f64 ? static_cast<const void*>(&g.alpha) : &alpha_f;
  const void* beta = f64 ? static_cast<const void*>(&g.beta) : &beta_f;
  ZT_CUBLAS_CHECK(cublasLtMatmul(db.handle, d.op, alpha, g.B, d.a, g.A, d.b, beta, g.C, d.c, g.C, d.c, &plan.algo,
                                 db.workspace, kWorkspaceBytes, current_stream()));
  return true;
}

}  // namespace zt::cuda
