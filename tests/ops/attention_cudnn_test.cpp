// cuDNN's fused attention behind ops::causal_self_attention (ops/attention_cudnn.h), on a GPU:
// output and d qkv in bf16 against the CPU op in f32 on the same (bf16-rounded) inputs, with
// the outputs' memory poisoned (NaN) before each GPU run; the backend counters prove which
// implementation ran; a shape cuDNN refuses falls back and still matches; plans are built once
// per shape. Skips without a GPU or without cuDNN in the build.
//
// A failure "cuDNN did not take ..." means cuDNN refused a shape it should run: rerun with
// ZT_CUDNN_DEBUG=1 to see which step (descriptor, heuristics, plan) failed and cuDNN's message.
#include <gtest/gtest.h>

#include <string>

#include "framework/autograd/variable.h"
#include "framework/device.h"
#include "ops/attention.h"
#ifdef ZTRAIN_WITH_CUDNN
#include "ops/attention_cudnn.h"
#endif
#include "tests/support/check.h"

namespace zt {
namespace {

using ops::AttentionBackend;

const Device kGpu = Device::cuda(0);
// bf16 inputs, P rounded to bf16 inside the fused kernels, bf16 outputs: ~0.5% norm-wise
// against f32; a wrong mask, scale or layout is off by O(1).
constexpr double kTol = 2e-2;

#ifdef ZTRAIN_WITH_CUDNN
#define REQUIRE_CUDNN_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU"
#else
#define REQUIRE_CUDNN_GPU() GTEST_SKIP() << "built without cuDNN"
#endif

struct Shape4 {
  int64_t B, T, H, D;
  int64_t Hkv = 0;  // key/value heads (grouped-query attention); 0: H
  int64_t kv() const { return Hkv > 0 ? Hkv : H; }
  std::string str() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) +
           (kv() != H ? " Hkv=" + std::to_string(kv()) : std::string()) + " D=" + std::to_string(D);
  }
};

struct Result {
  Tensor out, dqkv;  // f64 on the host
};

// misaligned_grad: the output gradient is a contiguous view 2 bytes past a block's start (as
// a slice of a larger gradient can be), which the fused backends' 16-byte loads cannot read.
Result run(const Tensor& qkv, const Tensor& dout, int64_t H, int64_t Hkv, Device device, bool misaligned_grad = false) {
  Variable x(qkv.to(device), true);
  Variable y = ops::causal_self_attention(x, H, Hkv);
  Tensor g = dout.to(device);
  if (misaligned_grad) {
    Tensor flat = Tensor::empty({dout.numel() + 1}, dout.dtype(), device);
    g = flat.slice(0, 1, dout.numel() + 1).view(dout.shape());
    g.copy_(dout.to(device));
  }
  y.backward(g);
  return {y.tensor().to(Device::cpu()).to(DType::f64), x.grad().to(Device::cpu()).to(DType::f64)};
}

// Runs s on the GPU in bf16 with the current backend choice, checks it against the CPU op in
// f32, and returns the backend that ran it (forward and backward must agree).
AttentionBackend check_against_cpu(const Shape4& s, bool misaligned_grad = false) {
  const int64_t C = s.H * s.D, W = (s.H + 2 * s.kv()) * s.D;
  const Tensor qkv = Tensor::randn({s.B, s.T, W}, DType::f64, test::test_generator(), 0.0, 1.0).to(DType::bf16);
  const Tensor dout = Tensor::randn({s.B, s.T, C}, DType::f64, test::test_generator(), 0.0, 1.0).to(DType::bf16);
  const Result want = run(qkv.to(DType::f32), dout.to(DType::f32), s.H, s.kv(), Device::cpu());
  ops::AttentionCalls before[3], after[3];
  const AttentionBackend all[3] = {AttentionBackend::cudnn, AttentionBackend::flash, AttentionBackend::unfused};
  for (int i = 0; i < 3; ++i) before[i] = ops::attention_calls(all[i]);
  test::stock_poisoned_blocks({{s.B, s.T, C}, {s.B, s.T, W}, {s.B, s.H, s.T}}, DType::bf16, kGpu);
  const Result got = run(qkv, dout, s.H, s.kv(), kGpu, misaligned_grad);
  EXPECT_TRUE(test::close_rel(got.out, want.out, kTol)) << s.str() << ": output";
  EXPECT_TRUE(test::close_rel(got.dqkv, want.dqkv, kTol)) << s.str() << ": d qkv";
  AttentionBackend ran = AttentionBackend::unfused;
  for (int i = 0; i < 3; ++i) {
    after[i] = ops::attention_calls(all[i]);
    if (after[i].forward - before[i].forward == 1) ran = all[i];
  }
  const int r = static_cast<int>(ran);
  if (ran != AttentionBackend::unfused) {  // the composite's backward is its parts' (not counted)
    EXPECT_EQ(after[r].backward - before[r].backward, 1)
        << s.str() << ": the backward of the " << ops::attention_backend_name(ran) << " forward";
  }
  return ran;
}

// Where this cuDNN release runs T at all (ops/attention_cudnn.h), it takes the shape; else
// the shape goes to flash (D = 64, plain heads) or the composite (D = 128, no flash size;
// grouped heads, which our flash kernels do not take).
AttentionBackend expected_for(const Shape4& s) {
#ifdef ZTRAIN_WITH_CUDNN
  if (ops::cudnn_release_takes(s.T)) return AttentionBackend::cudnn;
#endif
  return s.D == 64 && s.kv() == s.H ? AttentionBackend::flash : AttentionBackend::unfused;
}

// The model's shapes on cuDNN: D = 64 and 128, T on and off the 64/128 tiles, T = 1024. Every
// shape matches the CPU op whoever runs it; the T % 128 == 0 ones run on cuDNN on any release.
TEST(CudnnAttention, ForwardAndGradientsMatchTheCpuOp) {
  REQUIRE_CUDNN_GPU();
  ops::set_attention_backend(AttentionBackend::cudnn);
  for (const Shape4& s : {Shape4{2, 64, 2, 64}, Shape4{1, 100, 3, 64}, Shape4{2, 128, 2, 64}, Shape4{2, 129, 2, 64},
                          Shape4{1, 1024, 2, 64}, Shape4{1, 64, 2, 128}, Shape4{2, 77, 1, 128}, Shape4{1, 256, 2, 128},
                          Shape4{1, 257, 2, 128}, Shape4{3, 5, 2, 64}}) {
    const AttentionBackend ran = check_against_cpu(s);
    EXPECT_EQ(ran, expected_for(s)) << s.str() << " ran on " << ops::attention_backend_name(ran)
                                    << " (see ZT_CUDNN_DEBUG=1)";
    if (s.T % 128 == 0) EXPECT_EQ(ran, AttentionBackend::cudnn) << "cuDNN did not take " << s.str();
  }
}

// Grouped-query heads on cuDNN (K, V with Hkv heads read in place from the packed projection;
// dK, dV the sums over each group, written in place): Hkv = H / 2, H / 4 and multi-query, D = 64
// and 128. Every shape matches the CPU op whoever runs it; T % 128 == 0 runs on cuDNN.
TEST(CudnnAttention, GroupedHeadsMatchTheCpuOp) {
  REQUIRE_CUDNN_GPU();
  ops::set_attention_backend(AttentionBackend::cudnn);
  for (const Shape4& s : {Shape4{2, 128, 4, 64, 2}, Shape4{1, 256, 8, 64, 2}, Shape4{2, 128, 4, 64, 1},
                          Shape4{1, 128, 6, 128, 3}, Shape4{1, 100, 4, 64, 2}, Shape4{2, 1024, 4, 64, 1}}) {
    const AttentionBackend ran = check_against_cpu(s);
    EXPECT_EQ(ran, expected_for(s)) << s.str() << " ran on " << ops::attention_backend_name(ran)
                                    << " (see ZT_CUDNN_DEBUG=1)";
    if (s.T % 128 == 0) EXPECT_EQ(ran, AttentionBackend::cudnn) << "cuDNN did not take " << s.str();
  }
}

// Grouped heads chosen for our flash kernels, which have none, go down the list to the
// composite, and still match.
TEST(CudnnAttention, GroupedHeadsSkipTheFlashKernels) {
  REQUIRE_CUDNN_GPU();
  ops::set_attention_backend(AttentionBackend::flash);
  EXPECT_EQ(check_against_cpu({2, 128, 4, 64, 2}), AttentionBackend::unfused);
  EXPECT_EQ(check_against_cpu({1, 65, 4, 32, 1}), AttentionBackend::unfused);
  ops::set_attention_backend(AttentionBackend::cudnn);
}

// Head sizes cuDNN cannot take fall down the list and still match: D = 12 (not a multiple of
// 8, which cuDNN requires: refused before any graph is built) and D = 520 (past the largest
// head size of any cuDNN attention engine, 256 on Hopper: its graphs are refused by cuDNN
// itself, at plan finalize). Neither is a flash size, so both run unfused.
TEST(CudnnAttention, RefusedShapesFallBackAndStillMatch) {
  REQUIRE_CUDNN_GPU();
  ops::set_attention_backend(AttentionBackend::cudnn);
  constexpr int64_t kBig = 520;
  for (const Shape4& s : {Shape4{2, 40, 2, 12}, Shape4{1, 40, 1, kBig}}) {
    const AttentionBackend ran = check_against_cpu(s);
    EXPECT_EQ(ran, AttentionBackend::unfused) << s.str() << " ran on " << ops::attention_backend_name(ran);
  }
#ifdef ZTRAIN_WITH_CUDNN
  ops::FlashArgs a;  // the D = 520 problem again, asked directly
  a.B = 1, a.T = 40, a.H = 1, a.Hkv = 1, a.D = kBig;
  a.in = {40 * 3 * kBig, kBig, 3 * kBig};
  Tensor qkv = Tensor::empty({1, 40, 3 * kBig}, DType::bf16, kGpu);
  a.q = qkv.raw_data();
  a.k = static_cast<char*>(qkv.raw_data()) + kBig * 2;
  a.v = static_cast<char*>(qkv.raw_data()) + 2 * kBig * 2;
  EXPECT_FALSE(ops::cudnn_attention_supported(a, DType::bf16, {40 * kBig, kBig, kBig}, 0));
#endif
}

// Each backend runs when chosen (and the others do not), and they agree with the CPU op.
TEST(CudnnAttention, TheChosenBackendRuns) {
  REQUIRE_CUDNN_GPU();
  const Shape4 s{2, 128, 2, 64};  // every backend takes it, on every cuDNN release
  for (AttentionBackend b : {AttentionBackend::flash, AttentionBackend::unfused, AttentionBackend::cudnn}) {
    ops::set_attention_backend(b);
    EXPECT_EQ(check_against_cpu(s), b) << "chosen: " << ops::attention_backend_name(b);
  }
  // Down the list: D = 128 is no flash size, so flash gives it to the composite.
  ops::set_attention_backend(AttentionBackend::flash);
  EXPECT_EQ(check_against_cpu({1, 80, 2, 128}), AttentionBackend::unfused);
  ops::set_attention_backend(AttentionBackend::cudnn);
}

// An output gradient at an odd address (a view into a larger buffer) is copied to aligned
// memory for the fused backward instead of failing its alignment check.
TEST(CudnnAttention, MisalignedOutputGradient) {
  REQUIRE_CUDNN_GPU();
  for (AttentionBackend b : {AttentionBackend::cudnn, AttentionBackend::flash}) {
    ops::set_attention_backend(b);
    EXPECT_EQ(check_against_cpu({2, 128, 2, 64}, /*misaligned_grad=*/true), b);
  }
  ops::set_attention_backend(AttentionBackend::cudnn);
}

// A problem's plans are built by its first call only; later calls look them up.
TEST(CudnnAttention, PlansAreBuiltOncePerShape) {
  REQUIRE_CUDNN_GPU();
#ifdef ZTRAIN_WITH_CUDNN
  ops::set_attention_backend(AttentionBackend::cudnn);
  const Shape4 s{1, 128, 2, 64};
  check_against_cpu(s);
  const int64_t built = ops::cudnn_attention_plans_built();
  check_against_cpu(s);
  check_against_cpu(s);
  EXPECT_EQ(ops::cudnn_attention_plans_built(), built);
  check_against_cpu({1, 256, 2, 64});  // a new T is a new problem
  EXPECT_EQ(ops::cudnn_attention_plans_built(), built + 1);
  // Grouped heads: fewer key/value heads is a new problem, built once too.
  check_against_cpu({1, 128, 2, 64, 1});
  EXPECT_EQ(ops::cudnn_attention_plans_built(), built + 2);
  check_against_cpu({1, 128, 2, 64, 1});
  EXPECT_EQ(ops::cudnn_attention_plans_built(), built + 2);
#endif
}

}  // namespace
}  // namespace zt
