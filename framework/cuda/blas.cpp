#include "framework/cuda/blas.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/cuda_memory.h"
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

// Everything the algorithm choice depends on (the last alignment is the addend's, 0 without one).
using PlanKey = std::tuple<int, int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int, bool, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t,
                           uint32_t>;

constexpr int kCandidates = 8;    // algorithms asked of the heuristic
constexpr int kTuneRounds = 3;    // interleaved timing rounds over the candidates
constexpr int kTuneRuns = 3;      // runs per candidate per round (after one untimed run each)

struct Plan {
  std::vector<cublasLtMatmulAlgo_t> candidates;  // heuristic order; empty: the epilogue is unavailable
  int best = 0;                                  // the fastest candidate, once tuned
  bool tuned = false;
};

std::mutex g_plan_mu;
std::map<PlanKey, Plan> g_plans;
int64_t g_tuned_plans = 0;
thread_local GemmChoice t_last_choice;

// -1 until the first product reads ZT_GEMM_TUNE.
std::atomic<int> g_tuning{-1};

bool tuning_from_env() {
  const char* v = std::getenv("ZT_GEMM_TUNE");
  if (v == nullptr || *v == '\0' || std::string(v) == "1") return true;
  if (std::string(v) == "0") return false;
  ZT_FAIL("ZT_GEMM_TUNE must be 0 (off) or 1 (on), got '", v, "'");
}

enum Epilogue : int { kNoEpilogue = 0, kBias, kBiasGrad, kGeluAux, kGeluAuxBias, kDGelu };

Epilogue epilogue_of(const GemmArgs& g) {
  if (g.gelu_aux) return g.bias ? kGeluAuxBias : kGeluAux;
  if (g.dgelu_aux) return kDGelu;
  return g.bias ? kBias : g.bias_grad ? kBiasGrad : kNoEpilogue;
}

cublasLtEpilogue_t cublaslt_epilogue(Epilogue e) {
  switch (e) {
    // Bias: one value per column of our C = per row of cuBLASLt's D. Bias gradient of our A =
    // the sum over k of cuBLASLt's B, one value per column of its D: BGRADB.
    case kBias: return CUBLASLT_EPILOGUE_BIAS;
    case kBiasGrad: return CUBLASLT_EPILOGUE_BGRADB;
    case kGeluAux: return CUBLASLT_EPILOGUE_GELU_AUX;
    case kGeluAuxBias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case kDGelu: return CUBLASLT_EPILOGUE_DGELU;
    default: return CUBLASLT_EPILOGUE_DEFAULT;
  }
}

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

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  ZT_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// Events of the tuning runs, destroyed however the timing ends.
struct TuningEvents {
  std::vector<cudaEvent_t> events;
  explicit TuningEvents(size_t n) {
    events.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      cudaEvent_t e = nullptr;
      ZT_CUDA_CHECK(cudaEventCreate(&e));
      events.push_back(e);
    }
  }
  ~TuningEvents() {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
  }
};

// A scratch copy of C for timing accumulating products; freed after the device is done with it.
struct ScratchC {
  void* ptr = nullptr;
  int device = 0;
  ~ScratchC() {
    if (ptr) deallocate(ptr, device);
  }
};

// Times each candidate and returns the index of the fastest. Candidates run interleaved:
// one untimed run each, then kTuneRounds rounds in which every candidate runs kTuneRuns times
// between two events; a candidate's time is its best round. Timed one after the other, the
// clock's drift over the sweep (boost, power cap: the same product on an H200 varied by 20%
// within one bench_gemm run) would favour whichever candidate ran at the best moment.
// Candidates cuBLASLt refuses at launch are skipped. With beta != 0 the runs accumulate into
// a scratch copy of C, so the caller's C is updated once, by its real run. An addend is
// cuBLASLt's C, only read: the runs write our C (its D) freely, no copy needed.
int fastest_candidate(int device, DeviceBlas& db, const Descriptors& d, const GemmArgs& g, const void* alpha,
                      const void* beta, const std::vector<cublasLtMatmulAlgo_t>& candidates, cudaStream_t stream) {
  ScratchC scratch;
  void* c = g.C;
  if (g.beta != 0.0) {
    const int64_t elems = (g.batch - 1) * g.stride_c + (g.M - 1) * g.ldc + g.N;
    const size_t bytes = static_cast<size_t>(elems) * dtype_size(g.c_dtype);
    scratch.device = device;
    scratch.ptr = allocate(bytes, device);
    ZT_CUDA_CHECK(cudaMemcpyAsync(scratch.ptr, g.C, bytes, cudaMemcpyDeviceToDevice, stream));
    c = scratch.ptr;
  }
  const void* c_in = g.addend ? g.addend : c;
  const size_t n = candidates.size();
  auto run = [&](size_t i) {
    return cublasLtMatmul(db.handle, d.op, alpha, g.B, d.a, g.A, d.b, beta, c_in, d.c, c, d.c, &candidates[i],
                          db.workspace, kWorkspaceBytes, stream) == CUBLAS_STATUS_SUCCESS;
  };
  std::vector<bool> ok(n);
  for (size_t i = 0; i < n; ++i) ok[i] = run(i);
  TuningEvents ev(2 * n * kTuneRounds);
  for (int r = 0; r < kTuneRounds; ++r)
    for (size_t i = 0; i < n; ++i) {
      if (!ok[i]) continue;
      const size_t e = 2 * (static_cast<size_t>(r) * n + i);
      ZT_CUDA_CHECK(cudaEventRecord(ev.events[e], stream));
      for (int k = 0; k < kTuneRuns && ok[i]; ++k) ok[i] = run(i);
      ZT_CUDA_CHECK(cudaEventRecord(ev.events[e + 1], stream));
    }
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
  int best = 0;
  float best_ms = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) {
    if (!ok[i]) continue;
    float fastest_round = std::numeric_limits<float>::infinity();
    for (int r = 0; r < kTuneRounds; ++r) {
      const size_t e = 2 * (static_cast<size_t>(r) * n + i);
      float ms = 0;
      ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.events[e], ev.events[e + 1]));
      fastest_round = std::min(fastest_round, ms);
    }
    if (fastest_round < best_ms) {
      best_ms = fastest_round;
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace

void set_gemm_tuning(bool on) { g_tuning.store(on ? 1 : 0); }

bool gemm_tuning() {
  int t = g_tuning.load();
  if (t < 0) {
    int unread = -1;
    g_tuning.compare_exchange_strong(unread, tuning_from_env() ? 1 : 0);
    t = g_tuning.load();
  }
  return t == 1;
}

GemmChoice last_gemm_choice() { return t_last_choice; }

GemmPlanStats gemm_plan_stats() {
  std::lock_guard<std::mutex> lock(g_plan_mu);
  return {static_cast<int64_t>(g_plans.size()), g_tuned_plans};
}

cublasLtHandle_t lt_handle(int device) { return device_blas(device).handle; }

bool gemm(int device, const GemmArgs& g) {
  if (g.M == 0 || g.N == 0 || g.batch == 0) return true;
  ZT_CHECK(g.K > 0, "CUDA matmul: K == 0 (the caller zero-fills instead)");
  ZT_CHECK(g.batch < (int64_t{1} << 31), "CUDA matmul: batch ", g.batch, " too large");
  ZT_CHECK(!(g.bias && g.bias_grad), "CUDA matmul: bias and bias_grad epilogues are exclusive");
  ZT_CHECK(!g.bias_grad || (g.batch == 1 && g.alpha == 1.0 && g.beta == 0.0),
           "CUDA matmul: the bias-gradient epilogue needs batch 1, alpha 1 and beta 0");
  const bool gelu = g.gelu_aux || g.dgelu_aux;
  ZT_CHECK(!(g.gelu_aux && g.dgelu_aux) && !(gelu && g.bias_grad) && !(g.dgelu_aux && g.bias),
           "CUDA matmul: inconsistent GELU epilogue arguments");
  ZT_CHECK(!gelu || (g.batch == 1 && g.beta == 0.0), "CUDA matmul: the GELU epilogues need batch 1 and beta 0");
  ZT_CHECK(!g.addend || (g.beta == 0.0 && !g.bias_grad && !gelu && g.addend != g.C),
           "CUDA matmul: an addend needs beta 0, no bias-gradient or GELU epilogue, and its own buffer (not C)");
  // cuBLASLt wants the auxiliary matrix's leading dimension divisible by 8: otherwise the
  // caller does the GELU part itself.
  if (gelu && g.ldc % 8 != 0) return false;
  const bool tune = gemm_tuning();
  DeviceBlas& db = device_blas(device);
  set_device(device);
  const bool f64 = g.ab_dtype == DType::f64;
  ZT_CHECK(!f64 || g.c_dtype == DType::f64, "CUDA matmul: f64 operands need an f64 result");
  ZT_CHECK(!(f64 && (g.bias || g.bias_grad || gelu)), "CUDA matmul: no epilogue for f64");

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
  const Epilogue epilogue = epilogue_of(g);
  const void* vector = g.bias ? g.bias : g.bias_grad;
  const void* aux = g.gelu_aux ? g.gelu_aux : g.dgelu_aux;
  if (epilogue != kNoEpilogue) {
    const cublasLtEpilogue_t epi = cublaslt_epilogue(epilogue);
    ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (vector) {
      ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector, sizeof vector));
      ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ct, sizeof ct));
    }
    if (aux) {  // laid out like C: cuBLASLt's D is column-major with leading dimension ldc
      const int64_t ld = g.ldc;
      ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
      ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
    }
  }
  // Our B: [K, N] (N x K column-major, ld ldb) or [N, K] (K x N column-major).
  make_layout(&d.a, ab, g.trans_b ? K : g.N, g.trans_b ? g.N : K, g.ldb, g.batch, g.stride_b);
  // Our A: [M, K] (K x M column-major) or [K, M] (M x K column-major).
  make_layout(&d.b, ab, g.trans_a ? g.M : K, g.trans_a ? K : g.M, g.lda, g.batch, g.stride_a);
  make_layout(&d.c, ct, g.N, g.M, g.ldc, g.batch, g.stride_c);

  // With an addend, cuBLASLt's C is the addend (read, beta 1) and its D our C (written).
  const double beta_d = g.addend ? 1.0 : g.beta;
  const float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(beta_d);
  const void* alpha = f64 ? static_cast<const void*>(&g.alpha) : &alpha_f;
  const void* beta = f64 ? static_cast<const void*>(&beta_d) : &beta_f;
  const void* c_in = g.addend ? g.addend : g.C;
  cudaStream_t stream = current_stream();

  const uint32_t al_a = alignment(g.A), al_b = alignment(g.B), al_c = alignment(g.C),
                 al_v = vector ? alignment(vector) : 0, al_x = aux ? alignment(aux) : 0,
                 al_add = g.addend ? alignment(g.addend) : 0;
  const PlanKey key{static_cast<int>(g.ab_dtype), static_cast<int>(g.c_dtype), device, g.trans_a, g.trans_b,
                    g.batch, g.M, g.N, K, g.lda, g.ldb, g.ldc, g.stride_a, g.stride_b, g.stride_c,
                    static_cast<int>(epilogue), g.beta != 0.0, al_a, al_b, al_c, al_v, al_x, al_add};
  cublasLtMatmulAlgo_t algo{};
  {
    std::lock_guard<std::mutex> lock(g_plan_mu);
    auto it = g_plans.find(key);
    if (it == g_plans.end()) {
      Plan plan;
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
      const uint64_t ws = kWorkspaceBytes;
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
      // Our A is cuBLASLt's B and vice versa.
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b, sizeof al_b));
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a, sizeof al_a));
      const uint32_t al_c_in = g.addend ? al_add : al_c;  // cuBLASLt's C: the addend when there is one
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c_in, sizeof al_c_in));
      ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
      std::array<cublasLtMatmulHeuristicResult_t, kCandidates> results{};
      int found = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(db.handle, d.op, d.a, d.b, d.c, d.c, d.pref, kCandidates,
                                                               results.data(), &found);
      if (st == CUBLAS_STATUS_SUCCESS)
        for (int i = 0; i < found; ++i)
          if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= kWorkspaceBytes)
            plan.candidates.push_back(results[i].algo);
      if (plan.candidates.empty() && epilogue == kNoEpilogue && !g.addend)
        ZT_FAIL("CUDA matmul: cuBLASLt has no algorithm for ", dtype_name(g.ab_dtype), " -> ", dtype_name(g.c_dtype),
                " batch ", g.batch, " M ", g.M, " N ", g.N, " K ", g.K, " (status ", cublasGetStatusName(st), ")");
      plan.tuned = plan.candidates.size() <= 1;  // nothing to choose between
      it = g_plans.emplace(key, std::move(plan)).first;
    }
    Plan& plan = it->second;
    if (plan.candidates.empty()) return false;  // epilogue or addend unavailable: the caller does that part
    // Tuning synchronises the stream: never inside a graph capture (the plan is tuned later).
    if (tune && !plan.tuned && !capturing(stream)) {
      plan.best = fastest_candidate(device, db, d, g, alpha, beta, plan.candidates, stream);
      plan.tuned = true;
      ++g_tuned_plans;
    }
    const int chosen = tune && plan.tuned ? plan.best : 0;
    algo = plan.candidates[static_cast<size_t>(chosen)];
    t_last_choice = GemmChoice{static_cast<int>(plan.candidates.size()), chosen, plan.tuned};
  }
  ZT_CUBLAS_CHECK(cublasLtMatmul(db.handle, d.op, alpha, g.B, d.a, g.A, d.b, beta, c_in, d.c, g.C, d.c, &algo,
                                 db.workspace, kWorkspaceBytes, stream));
  return true;
}

}  // namespace zt::cuda
