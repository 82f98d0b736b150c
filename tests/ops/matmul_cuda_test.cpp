// The CUDA linear layer and cuBLASLt gemm against float64 references on fresh random inputs:
// forward (bias epilogue), dx, dw and db (the bias-gradient epilogue on the dw product, or
// the row-sum kernel where cuBLASLt offers none), for f32 (1e-5 relative), bf16 (1e-2) and
// f64 (1e-12, always the fallback paths), on aligned and odd shapes; the same with a residual
// added by the product (cuBLASLt's C input: counted, so a silent fallback fails). Outputs land in
// NaN-poisoned memory: the allocator's free lists are stocked with NaN blocks of the outputs'
// sizes first, so an element a kernel fails to write shows up as NaN. Also: the algorithm
// tuning never changes an accumulating product's result, stays off inside a stream capture,
// and is switched by set_gemm_tuning. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#ifdef ZTRAIN_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/blas.h"
#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"
#include "ops/matmul_kernels.h"
#endif
#include "framework/device.h"
#include "ops/matmul.h"
#include "ops/mlp.h"
#include "tests/support/check.h"

namespace zt {
namespace {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU"

const Device kGpu = Device::cuda(0);

double tolerance(DType t) { return t == DType::bf16 ? 1e-2 : t == DType::f32 ? 1e-5 : 1e-12; }

// Random values already rounded to dtype, held in f64: the reference and the device see the same numbers.
Tensor random_in(const Shape& shape, DType dtype, double scale = 1.0) {
  return Tensor::randn(shape, DType::f64, test::test_generator(), 0.0, scale).to(dtype).to(DType::f64);
}

struct LinearCase {
  Shape x_shape;  // [..., in]
  int64_t out_features;
  bool bias;
};

// {y, dx, dw, db?, dresidual?} of linear(x, w, b, residual) with upstream gradient gy, computed
// in `dtype` on `device`, as f64 on the host.
std::vector<Tensor> linear_results(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& gy, DType dtype,
                                   Device device, const Tensor& residual = Tensor()) {
  Variable vx(x.to(dtype).to(device), true), vw(w.to(dtype).to(device), true);
  Variable vb = b.defined() ? Variable(b.to(dtype).to(device), true) : Variable();
  Variable vr = residual.defined() ? Variable(residual.to(dtype).to(device), true) : Variable();
  Variable y = ops::linear(vx, vw, vb, vr);
  y.backward(gy.to(dtype).to(device));
  std::vector<Tensor> r{y.tensor(), vx.grad(), vw.grad()};
  if (b.defined()) r.push_back(vb.grad());
  if (residual.defined()) r.push_back(vr.grad());
  for (Tensor& t : r) {
    EXPECT_EQ(t.device(), device);
    t = t.to(Device::cpu()).to(DType::f64);
  }
  return r;
}

// linear (with a residual when asked) on random inputs of case c in dtype t: on the GPU, its
// outputs in poisoned memory, against f64 on the host. Returns how many of the GPU's products
// read the residual (residual_gemm_count).
int64_t check_linear_case(const LinearCase& c, DType t, bool with_residual) {
  const int64_t in = c.x_shape.back();
  const Tensor x = random_in(c.x_shape, t), w = random_in({c.out_features, in}, t, 0.5);
  const Tensor b = c.bias ? random_in({c.out_features}, t) : Tensor();
  Shape y_shape = c.x_shape;
  y_shape.back() = c.out_features;
  const Tensor gy = random_in(y_shape, t), residual = with_residual ? random_in(y_shape, t) : Tensor();
  const std::string what = "linear x " + shape_str(c.x_shape) + " out " + std::to_string(c.out_features) +
                           (c.bias ? " with bias" : "") + (with_residual ? " and residual" : "") + " in " +
                           dtype_name(t);
  const std::vector<Tensor> want = linear_results(x, w, b, gy, DType::f64, Device::cpu(), residual);
  std::vector<Shape> shapes;
  for (const Tensor& r : want) shapes.push_back(r.shape());
  test::stock_poisoned_blocks(shapes, t, kGpu);
  const int64_t before = ops::residual_gemm_count();
  const std::vector<Tensor> got = linear_results(x, w, b, gy, t, kGpu, residual);
  const int64_t folded = ops::residual_gemm_count() - before;
  std::vector<std::string> names = {"y", "dx", "dw"};
  if (c.bias) names.push_back("db");
  if (with_residual) names.push_back("dresidual");
  EXPECT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i)
    EXPECT_TRUE(test::close_rel(got[i], want[i], tolerance(t))) << names[i] << " of " << what;
  if (with_residual && got.size() == want.size())
    EXPECT_EQ(got.back().to_vector<double>(), gy.to_vector<double>()) << what << ": dresidual is gy itself";
  return folded;
}

TEST(MatmulCuda, LinearForwardAndBackwardMatchFloat64) {
  REQUIRE_GPU();
  const std::vector<LinearCase> cases = {
      {{256, 128}, 384, true},   // aligned, GPT-like proportions: the epilogues' home ground
      {{4, 33, 96}, 200, true},  // 3-D input
      {{13, 7}, 5, true},        // odd everything: unaligned rows
      {{1000, 64}, 3, true},     // many rows, odd out
      {{3, 1}, 17, true},        // in = 1
      {{1, 40}, 24, true},       // one row
      {{77, 48}, 31, false},     // no bias
      {{130, 768}, 50, true},    // K (rows) odd for the dw product, out not a multiple of 8
  };
  for (DType t : {DType::f32, DType::bf16, DType::f64})
    for (const LinearCase& c : cases) EXPECT_EQ(check_linear_case(c, t, false), 0);
}

// The residual connection's add on the product: y = residual + x w^T + b against f64, dresidual
// = gy exactly. Where every operand is 16-byte aligned (in and out multiples of 8) cuBLASLt
// must have read the residual itself (residual_gemm_count), with or without the bias
// epilogue; f64 has no bias epilogue, so with a bias it writes residual and bias first and
// accumulates the product (not counted). Odd shapes may take either path: values only.
TEST(MatmulCuda, LinearWithResidualMatchesFloat64AndRidesOnTheProduct) {
  REQUIRE_GPU();
  const std::vector<LinearCase> cases = {
      {{256, 128}, 384, true}, {{2, 33, 96}, 64, true}, {{2, 33, 96}, 64, false},
      {{37, 45}, 29, true},    {{37, 45}, 29, false},   {{3, 5, 45}, 29, true},
  };
  for (DType t : {DType::f32, DType::bf16, DType::f64})
    for (const LinearCase& c : cases) {
      const int64_t folded = check_linear_case(c, t, true);
      const std::string what = shape_str(c.x_shape) + " out " + std::to_string(c.out_features) +
                               (c.bias ? " with bias " : " ") + dtype_name(t);
      if (c.x_shape.back() % 8 == 0 && c.out_features % 8 == 0)
        EXPECT_EQ(folded, t == DType::f64 && c.bias ? 0 : 1) << what << ": residual_gemm_count";
      EXPECT_LE(folded, 1) << what;
    }
}

// mlp with a residual on CUDA: the GELU epilogues and the residual on the output product both
// taken (hidden a multiple of 8, f32/bf16); values against the same op on the CPU.
TEST(MatmulCuda, MlpWithResidualTakesBothEpilogueAndAddend) {
  REQUIRE_GPU();
  for (DType t : {DType::f32, DType::bf16}) {
    const Tensor x = random_in({2, 33, 96}, t), w_fc = random_in({384, 96}, t, 0.1), b_fc = random_in({384}, t),
                 w_proj = random_in({96, 384}, t, 0.05), b_proj = random_in({96}, t), r = random_in({2, 33, 96}, t);
    auto run = [&](Device d) {
      auto v = [&](const Tensor& a) { return Variable(a.to(t).to(d)); };
      return ops::mlp(v(x), v(w_fc), v(b_fc), v(w_proj), v(b_proj), v(r)).tensor().to(Device::cpu()).to(DType::f64);
    };
    const Tensor want = run(Device::cpu());
    const ops::MlpFusionStats fused_before = ops::mlp_fusion_stats();
    const int64_t before = ops::residual_gemm_count();
    const Tensor got = run(kGpu);
    EXPECT_EQ(ops::mlp_fusion_stats().forward - fused_before.forward, 1) << dtype_name(t);
    EXPECT_EQ(ops::residual_gemm_count() - before, 1) << dtype_name(t);
    EXPECT_TRUE(test::close_rel(got, want, tolerance(t))) << dtype_name(t);
  }
}

#ifdef ZTRAIN_WITH_CUDA

// Restores the tuning switch a test changes.
struct TuningGuard {
  bool saved = cuda::gemm_tuning();
  ~TuningGuard() { cuda::set_gemm_tuning(saved); }
};

// f64 host reference of op(a) op(b) (+ c0) for row-major a, b as GemmDims describes (batch 1).
std::vector<double> reference_product(const Tensor& a, const Tensor& b, const ops::GemmDims& d,
                                      const std::vector<double>& c0 = {}) {
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> c(static_cast<size_t>(d.M * d.N));
  for (int64_t m = 0; m < d.M; ++m)
    for (int64_t n = 0; n < d.N; ++n) {
      double s = c0.empty() ? 0.0 : c0[static_cast<size_t>(m * d.N + n)];
      for (int64_t k = 0; k < d.K; ++k)
        s += av[static_cast<size_t>(d.trans_a ? k * d.M + m : m * d.K + k)] *
             bv[static_cast<size_t>(d.trans_b ? n * d.K + k : k * d.N + n)];
      c[static_cast<size_t>(m * d.N + n)] = s;
    }
  return c;
}

Tensor host_tensor(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s); }

TEST(MatmulCuda, BiasGradientEpilogueWritesDwAndDb) {
  REQUIRE_GPU();
  struct Case {
    int64_t rows, out, in;
    DType dtype;
    bool must_fuse;  // cuBLASLt on sm_90 offers BGRADB for these; elsewhere either path is fine
  };
  const Case cases[] = {{512, 256, 128, DType::bf16, true},  {1024, 768, 768, DType::bf16, true},
                        {512, 256, 128, DType::f32, false},  {37, 29, 11, DType::bf16, false},
                        {37, 29, 11, DType::f32, false},     {1, 8, 16, DType::bf16, false}};
  for (bool tune : {false, true}) {
    TuningGuard guard;
    cuda::set_gemm_tuning(tune);
    for (const Case& c : cases) {
      const std::string what = "rows " + std::to_string(c.rows) + " out " + std::to_string(c.out) + " in " +
                               std::to_string(c.in) + " " + dtype_name(c.dtype) + (tune ? " tuned" : " untuned");
      const Tensor g = random_in({c.rows, c.out}, c.dtype), x = random_in({c.rows, c.in}, c.dtype);
      Tensor dw = Tensor::empty({c.out, c.in}, c.dtype, kGpu), db = Tensor::empty({c.out}, c.dtype, kGpu);
      test::poison(dw);
      test::poison(db);
      const bool fused = ops::linear_weight_grad_cuda(g.to(c.dtype).to(kGpu), x.to(c.dtype).to(kGpu), dw, db);
      if (c.must_fuse) EXPECT_TRUE(fused) << what << ": cuBLASLt offered no bias-gradient epilogue";
      const ops::GemmDims d{1, c.out, c.in, c.rows, true, false};
      EXPECT_TRUE(test::close_rel(dw.to(Device::cpu()).to(DType::f64),
                                  host_tensor(reference_product(g, x, d), {c.out, c.in}), tolerance(c.dtype)))
          << what << ": dw";
      const std::vector<double> gv = g.to_vector<double>();
      std::vector<double> want_db(static_cast<size_t>(c.out), 0.0);
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t o = 0; o < c.out; ++o) want_db[static_cast<size_t>(o)] += gv[static_cast<size_t>(r * c.out + o)];
      const Tensor got_db = db.to(Device::cpu()).to(DType::f64);
      if (fused) {
        EXPECT_TRUE(test::close_rel(got_db, host_tensor(want_db, {c.out}), tolerance(c.dtype))) << what << ": db";
      } else {  // the contract: db untouched, the caller reduces
        for (double v : got_db.to_vector<double>())
          ASSERT_TRUE(std::isnan(v)) << what << ": db written without the epilogue";
      }
    }
  }
}

// Timing candidates runs the product several times: with accumulation that must happen on a
// scratch copy, or C would collect the product once per timing run.
TEST(MatmulCuda, TuningLeavesAnAccumulatingProductCorrect) {
  REQUIRE_GPU();
  TuningGuard guard;
  cuda::set_gemm_tuning(true);
  for (DType t : {DType::f32, DType::bf16}) {
    // A shape no other test uses, so this call makes (and tunes) a fresh plan.
    const ops::GemmDims d{1, 200 + (t == DType::bf16 ? 8 : 0), 136, 72, false, true};
    const Tensor a = random_in({d.M, d.K}, t), b = random_in({d.N, d.K}, t), c0 = random_in({d.M, d.N}, t);
    Tensor c = c0.to(t).to(kGpu);
    const int64_t tuned_before = cuda::gemm_plan_stats().tuned;
    ops::gemm_cuda(a.to(t).to(kGpu), b.to(t).to(kGpu), c, d, /*accumulate=*/true);
    const cuda::GemmChoice choice = cuda::last_gemm_choice();
    EXPECT_TRUE(choice.tuned);
    if (choice.candidates > 1) EXPECT_EQ(cuda::gemm_plan_stats().tuned, tuned_before + 1) << dtype_name(t);
    EXPECT_TRUE(test::close_rel(c.to(Device::cpu()).to(DType::f64),
                                host_tensor(reference_product(a, b, d, c0.to_vector<double>()), {d.M, d.N}),
                                tolerance(t)))
        << "accumulated product after tuning, " << dtype_name(t);
    // Once more: the tuned plan, used as is.
    ops::gemm_cuda(a.to(t).to(kGpu), b.to(t).to(kGpu), c, d, /*accumulate=*/true);
    const std::vector<double> once = reference_product(a, b, d, c0.to_vector<double>());
    const std::vector<double> twice = reference_product(a, b, d, once);
    EXPECT_TRUE(test::close_rel(c.to(Device::cpu()).to(DType::f64), host_tensor(twice, {d.M, d.N}), tolerance(t)))
        << "second accumulation, " << dtype_name(t);
  }
}

// Tuning synchronises the stream, which a capture forbids: a new plan met inside a capture
// runs the heuristic's choice and is tuned at its first call outside.
TEST(MatmulCuda, TuningWaitsUntilNoCaptureIsRunning) {
  REQUIRE_GPU();
  TuningGuard guard;
  cuda::set_gemm_tuning(true);
  const ops::GemmDims d{1, 96, 264, 40, true, false};
  const Tensor a = random_in({d.K, d.M}, DType::bf16), b = random_in({d.K, d.N}, DType::bf16);
  const Tensor ag = a.to(DType::bf16).to(kGpu), bg = b.to(DType::bf16).to(kGpu);
  Tensor c = Tensor::empty({d.M, d.N}, DType::bf16, kGpu);
  test::poison(c);
  {
    // The cuBLASLt handle and workspace are made on first use, and cudaMalloc cannot run in
    // a capture: make them with a product of another shape first (d's plan stays new).
    Tensor warm = Tensor::empty({d.M, d.M}, DType::bf16, kGpu);
    ops::gemm_cuda(ag, ag, warm, {1, d.M, d.M, d.K, true, false});
  }
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  cudaStream_t s = nullptr;
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cuda::GemmChoice in_capture;
  {
    cuda::StreamGuard on(s);
    ZT_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    try {
      ops::gemm_cuda(ag, bg, c, d);
    } catch (...) {
      cudaStreamEndCapture(s, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaStreamDestroy(s);
      throw;
    }
    in_capture = cuda::last_gemm_choice();
    ZT_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  }
  cudaGraphExec_t exec = nullptr;
  ZT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  ZT_CUDA_CHECK(cudaGraphLaunch(exec, s));
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
  ZT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  ZT_CUDA_CHECK(cudaGraphDestroy(graph));
  ZT_CUDA_CHECK(cudaStreamDestroy(s));
  EXPECT_EQ(in_capture.chosen, 0);
  if (in_capture.candidates > 1) EXPECT_FALSE(in_capture.tuned) << "a plan was tuned inside a capture";
  const Tensor want = host_tensor(reference_product(a, b, d), {d.M, d.N});
  EXPECT_TRUE(test::close_rel(c.to(Device::cpu()).to(DType::f64), want, tolerance(DType::bf16))) << "captured product";

  test::poison(c);
  ops::gemm_cuda(ag, bg, c, d);  // outside the capture: now it is tuned
  EXPECT_TRUE(cuda::last_gemm_choice().tuned);
  EXPECT_TRUE(test::close_rel(c.to(Device::cpu()).to(DType::f64), want, tolerance(DType::bf16))) << "tuned product";
}

// gemm() with an addend, batched: C[b] = op(A[b]) op(B[b]) + addend[b], the addend laid out
// like C (ldc, stride_c); with the bias epilogue the linear tests above cover it. Tuning times
// the candidates on the real buffers: the addend is only read and C written by each run, so C
// holds the sum once and the addend is unchanged.
TEST(MatmulCuda, GemmAddsTheAddendOnceAndLeavesItUnchanged) {
  REQUIRE_GPU();
  TuningGuard guard;
  for (bool tune : {true, false}) {
    cuda::set_gemm_tuning(tune);
    for (DType t : {DType::f32, DType::bf16, DType::f64}) {
      // Shapes no other test uses (fresh plans, tuned here).
      const int64_t batch = 3, M = 40 + (tune ? 8 : 0), N = 72, K = 56;
      const ops::GemmDims d{1, M, N, K, false, true};
      std::vector<Tensor> a(batch), b(batch), add(batch);
      for (int64_t i = 0; i < batch; ++i) {
        a[i] = random_in({M, K}, t);
        b[i] = random_in({N, K}, t);
        add[i] = random_in({M, N}, t);
      }
      auto stack = [&](const std::vector<Tensor>& v, const Shape& s) {
        std::vector<double> all;
        for (const Tensor& e : v) {
          const std::vector<double> e_v = e.to_vector<double>();
          all.insert(all.end(), e_v.begin(), e_v.end());
        }
        return Tensor::from_vector(all, {batch, s[0], s[1]}).to(t).to(kGpu);
      };
      const Tensor ag = stack(a, {M, K}), bg = stack(b, {N, K}), addg = stack(add, {M, N});
      Tensor c = Tensor::empty({batch, M, N}, t, kGpu);
      test::poison(c);
      cuda::GemmArgs g;
      g.batch = batch;
      g.M = M;
      g.N = N;
      g.K = K;
      g.trans_b = true;
      g.A = ag.raw_data();
      g.lda = K;
      g.stride_a = M * K;
      g.B = bg.raw_data();
      g.ldb = K;
      g.stride_b = N * K;
      g.C = c.raw_data();
      g.ldc = N;
      g.stride_c = M * N;
      g.ab_dtype = g.c_dtype = t;
      g.addend = addg.raw_data();
      const std::string what = std::string(dtype_name(t)) + (tune ? " tuned" : " untuned");
      ASSERT_TRUE(cuda::gemm(0, g)) << what << ": cuBLASLt offered no algorithm with an addend";
      std::vector<double> want;
      for (int64_t i = 0; i < batch; ++i) {
        const std::vector<double> ci = reference_product(a[i], b[i], d, add[i].to_vector<double>());
        want.insert(want.end(), ci.begin(), ci.end());
      }
      EXPECT_TRUE(test::close_rel(c.to(Device::cpu()).to(DType::f64), host_tensor(want, {batch, M, N}), tolerance(t)))
          << what;
      EXPECT_EQ(addg.to(Device::cpu()).to_vector<double>(), stack(add, {M, N}).to(Device::cpu()).to_vector<double>())
          << what << ": the addend changed";
    }
  }
}

TEST(MatmulCuda, TuningOffUsesTheHeuristicsFirstChoice) {
  REQUIRE_GPU();
  TuningGuard guard;
  const ops::GemmDims d{1, 512, 512, 1024, false, false};
  const Tensor a = random_in({d.M, d.K}, DType::bf16), b = random_in({d.K, d.N}, DType::bf16);
  const Tensor ag = a.to(DType::bf16).to(kGpu), bg = b.to(DType::bf16).to(kGpu);
  const Tensor want = host_tensor(reference_product(a, b, d), {d.M, d.N});
  for (bool tune : {false, true, false}) {
    cuda::set_gemm_tuning(tune);
    EXPECT_EQ(cuda::gemm_tuning(), tune);
    Tensor c = Tensor::empty({d.M, d.N}, DType::f32, kGpu);
    test::poison(c);
    ops::gemm_cuda(ag, bg, c, d);
    const cuda::GemmChoice choice = cuda::last_gemm_choice();
    if (!tune) EXPECT_EQ(choice.chosen, 0);
    if (tune) EXPECT_TRUE(choice.tuned);
    EXPECT_GE(choice.chosen, 0);
    EXPECT_LT(choice.chosen, std::max(choice.candidates, 1));
    EXPECT_TRUE(test::close_rel(c.to(Device::cpu()).to(DType::f64), want, 1e-5)) << (tune ? "tuned" : "untuned");
  }
}

#endif  // ZTRAIN_WITH_CUDA

}  // namespace
}  // namespace zt
