// The CUDA kernels of cross-entropy against a float64 reference (the CPU kernels and op on
// f64 copies of the same inputs): every option combination, both the fast (cluster, shared
// memory) and the fallback (row per CTA) kernels, the vocab-parallel kernels, z changing
// between calls, bad targets, and capture in a CUDA graph. Outputs are poisoned with NaN
// before each run. Every test skips without a GPU; the file compiles without CUDA.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <limits>
#include <string>
#include <vector>

#include "framework/autograd/variable.h"
#include "framework/device.h"
#include "ops/cross_entropy.h"
#include "ops/cross_entropy_kernels.h"
#include "tests/support/check.h"
#include "tests/support/xent_reference.h"

#ifdef ZTRAIN_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"
#endif

namespace zt {
namespace {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU"

#ifndef ZTRAIN_WITH_CUDA

TEST(CrossEntropyCuda, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA"; }

#else

using ops::Reduction;
namespace xent = ops::xent;

const Device kGpu = Device::cuda(0);

// Sets an environment variable for one scope (the kernels' tuning knobs).
class EnvGuard {
 public:
  EnvGuard(const char* name, const std::string& value) : name_(name) { setenv(name, value.c_str(), 1); }
  ~EnvGuard() { unsetenv(name_); }

 private:
  const char* name_;
};

enum class Ignored { none, some, all };
const char* ignored_name(Ignored i) { return i == Ignored::none ? "none" : i == Ignored::some ? "some" : "all"; }

Tensor random_logits(int64_t rows, int64_t vocab, DType dtype) {
  // A spread of 3 and a few large logits: the max matters and exp underflows for some columns.
  Tensor t = Tensor::randn({rows, vocab}, DType::f64, test::test_generator(), 0.0, 3.0);
  double* p = t.data<double>();
  Generator& g = test::test_generator();
  for (int64_t r = 0; r < rows; ++r) p[r * vocab + static_cast<int64_t>(g.below(static_cast<uint64_t>(vocab)))] += 12;
  return t.to(dtype);
}

Tensor random_targets(int64_t rows, int64_t vocab, Ignored ignored, int64_t ignore_index, DType dtype = DType::i64) {
  Generator& g = test::test_generator();
  std::vector<int64_t> t(static_cast<size_t>(rows));
  for (auto& y : t) {
    const bool skip = ignored == Ignored::all || (ignored == Ignored::some && g.uniform() < 0.3);
    y = skip ? ignore_index : static_cast<int64_t>(g.below(static_cast<uint64_t>(vocab)));
  }
  if (ignored == Ignored::some && rows > 1) t[0] = ignore_index, t[1] = static_cast<int64_t>(g.below(vocab));
  return Tensor::from_vector(t, {rows}).to(dtype);
}

double grad_tol(DType t) { return t == DType::bf16 ? 6e-3 : t == DType::f32 ? 2e-5 : 1e-10; }
double loss_tol(DType t) { return t == DType::f64 ? 1e-10 : 2e-5; }

// ---- kernel level: fused_cuda against fused_cpu on f64 copies -------------------------------

struct KernelOut {
  Tensor row_loss, lse, z_row, grad, count, grad_scale, bad;  // on the host
};

// vocab: the row width; classes: num_classes (-1: every column is a class).
xent::Params params(int64_t rows, int64_t vocab, double e, double z, int64_t ignore_index, int64_t classes = -1) {
  xent::Params p;
  p.rows = rows;
  p.vocab_local = p.vocab_global = vocab;
  p.num_classes = classes;
  p.label_smoothing = e;
  p.z_loss_weight = z;
  p.ignore_index = ignore_index;
  return p;
}

// The kernel outputs with the word their bad_target points to, on the outputs' device.
struct FlaggedOutputs : xent::Outputs {
  Tensor flag;  // [] i32
  explicit FlaggedOutputs(Device device) : flag(Tensor::zeros({}, DType::i32, device)) {
    bad_target = static_cast<int*>(flag.raw_data());
  }
};

KernelOut host_copy(const FlaggedOutputs& o, const Tensor& count) {
  KernelOut k;
  k.row_loss = o.row_loss.to(Device::cpu());
  k.lse = o.lse.to(Device::cpu());
  k.z_row = o.z_row.to(Device::cpu());
  if (o.grad.defined()) k.grad = o.grad.to(Device::cpu());
  k.count = count.to(Device::cpu());
  k.grad_scale = o.grad_scale.to(Device::cpu());
  k.bad = o.flag.to(Device::cpu());
  return k;
}

FlaggedOutputs device_outputs(const Tensor& x, bool inplace, bool with_grad) {
  const DType acc = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const int64_t rows = x.size(0);
  FlaggedOutputs o(kGpu);
  o.row_loss = Tensor::empty({rows}, acc, kGpu);
  o.lse = Tensor::empty({rows}, acc, kGpu);
  o.z_row = Tensor::empty({rows}, acc, kGpu);
  o.grad_scale = Tensor::empty({}, acc, kGpu);
  for (Tensor* t : {&o.row_loss, &o.lse, &o.z_row, &o.grad_scale}) test::poison(*t);
  if (with_grad) {
    o.grad = inplace ? x : Tensor::empty(x.shape(), x.dtype(), kGpu);
    if (!inplace) test::poison(o.grad);
  }
  return o;
}

KernelOut run_cuda(const Tensor& logits, const Tensor& targets, const xent::Params& p, bool mean, bool inplace,
                   bool with_grad = true) {
  Tensor x = logits.to(kGpu).clone();  // a buffer of its own: in place overwrites it
  Tensor t = targets.to(kGpu);
  FlaggedOutputs o = device_outputs(x, inplace, with_grad);
  Tensor count = Tensor::empty({}, DType::i64, kGpu);
  test::poison(count);
  xent::count_rows_cuda(t, p.ignore_index, mean, count, o.grad_scale);
  xent::fused_cuda(x, t, p, o);
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  return host_copy(o, count);
}

KernelOut run_reference(const Tensor& logits, const Tensor& targets, const xent::Params& p, bool mean,
                        bool with_grad = true) {
  Tensor x = logits.to(DType::f64).clone();
  FlaggedOutputs o(Device::cpu());
  o.row_loss = Tensor::empty({p.rows}, DType::f64);
  o.lse = Tensor::empty({p.rows}, DType::f64);
  o.z_row = Tensor::empty({p.rows}, DType::f64);
  o.grad_scale = Tensor::empty({}, DType::f64);
  if (with_grad) o.grad = Tensor::empty(x.shape(), DType::f64);
  Tensor count = Tensor::empty({}, DType::i64);
  xent::count_rows_cpu(targets, p.ignore_index, mean, count, o.grad_scale);
  xent::fused_cpu(x, targets, p, o);
  return host_copy(o, count);
}

void expect_kernel_match(const KernelOut& got, const KernelOut& ref, DType dtype, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(test::close_rel(got.row_loss, ref.row_loss, loss_tol(dtype))) << "row_loss";
  EXPECT_TRUE(test::close_rel(got.lse, ref.lse, loss_tol(dtype))) << "lse";
  EXPECT_TRUE(test::close_rel(got.z_row, ref.z_row, loss_tol(dtype))) << "z_row";
  EXPECT_EQ(got.count.item(), ref.count.item());
  EXPECT_NEAR(got.grad_scale.item(), ref.grad_scale.item(), 1e-7 * std::abs(ref.grad_scale.item()));
  EXPECT_EQ(got.bad.item(), ref.bad.item());
  if (ref.grad.defined()) EXPECT_TRUE(test::close_rel(got.grad, ref.grad, grad_tol(dtype))) << "grad";
}

int64_t rows_for(int64_t vocab) { return vocab <= 64 ? 67 : vocab <= 60000 ? 9 : 5; }

// Columns [classes, width) of host logits set to NaN: a kernel that reads padding makes the
// loss NaN, and an in-place gradient whose padding is left unwritten keeps the NaN there.
Tensor poison_padding(const Tensor& logits, int64_t classes) {
  Tensor x = logits.clone();
  if (classes < x.size(1)) x.slice(1, classes, x.size(1)).fill_(std::numeric_limits<double>::quiet_NaN());
  return x;
}

// Every column of a host gradient at or past `valid` is exactly 0.
::testing::AssertionResult padding_is_zero(const Tensor& grad, int64_t valid) {
  const int64_t n = grad.size(0), w = grad.size(1);
  const std::vector<double> g = grad.to_vector<double>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = valid; j < w; ++j)
      if (!(g[i * w + j] == 0.0))
        return ::testing::AssertionFailure() << "gradient [" << i << ", " << j << "] = " << g[i * w + j]
                                             << " in the padding (from column " << valid << ")";
  return ::testing::AssertionSuccess();
}

// Width and num_classes pairs of the padded tests: GPT-2's vocabulary (the fast kernel, one
// CTA, a vector shared by the last class and the padding), Llama-3's cut by 256 (a cluster
// of 4 over the real-class prefix only), padding of whole vectors only, a prefix too short
// for the fast kernel, and a small unaligned row.
struct Padded {
  int64_t width, classes;
};
const std::vector<Padded> kPadded = {{50304, 50257}, {128256, 128000}, {50304, 50296}, {50304, 1000}, {64, 37}};

TEST(CrossEntropyCuda, KernelsMatchF64ReferenceForEveryOption) {
  REQUIRE_GPU();
  int run = 0;
  for (DType dtype : {DType::f32, DType::bf16})
    for (int64_t vocab : {int64_t{32}, int64_t{50304}, int64_t{128256}})
      for (double e : {0.0, 0.1})
        for (double z : {0.0, 1e-4, 1e-2})
          for (Ignored ig : {Ignored::none, Ignored::some, Ignored::all}) {
            ++run;
            const bool inplace = run % 2 == 0, mean = run % 3 != 0;
            const int64_t rows = rows_for(vocab);
            const Tensor logits = random_logits(rows, vocab, dtype);
            const Tensor targets = random_targets(rows, vocab, ig, -100, run % 4 == 0 ? DType::i32 : DType::i64);
            const xent::Params p = params(rows, vocab, e, z, -100);
            expect_kernel_match(run_cuda(logits, targets, p, mean, inplace), run_reference(logits, targets, p, mean),
                                dtype,
                                std::string(dtype_name(dtype)) + " V=" + std::to_string(vocab) + " e=" +
                                    std::to_string(e) + " z=" + std::to_string(z) + " ignored=" + ignored_name(ig) +
                                    (inplace ? " in place" : " out of place") + (mean ? " mean" : " sum"));
          }
}

// num_classes < width: the kernels read only the real classes (the padding holds NaN), the
// smoothing V is num_classes, and the gradient's padding is exactly 0, in place (over the NaN)
// and out of place (over the poisoned buffer).
TEST(CrossEntropyCuda, PaddedKernelsMatchF64Reference) {
  REQUIRE_GPU();
  int run = 0;
  for (DType dtype : {DType::f32, DType::bf16})
    for (const Padded& pad : kPadded)
      for (double e : {0.0, 0.1})
        for (double z : {0.0, 1e-2})
          for (Ignored ig : {Ignored::none, Ignored::some, Ignored::all}) {
            ++run;
            const bool inplace = run % 2 == 0, mean = run % 3 != 0;
            const int64_t rows = rows_for(pad.width);
            const Tensor logits = poison_padding(random_logits(rows, pad.width, dtype), pad.classes);
            const Tensor targets =
                random_targets(rows, pad.classes, ig, -100, run % 4 == 0 ? DType::i32 : DType::i64);
            const xent::Params p = params(rows, pad.width, e, z, -100, pad.classes);
            const KernelOut got = run_cuda(logits, targets, p, mean, inplace);
            const std::string what = std::string(dtype_name(dtype)) + " width=" + std::to_string(pad.width) +
                                     " classes=" + std::to_string(pad.classes) + " e=" + std::to_string(e) +
                                     " z=" + std::to_string(z) + " ignored=" + ignored_name(ig) +
                                     (inplace ? " in place" : " out of place") + (mean ? " mean" : " sum");
            expect_kernel_match(got, run_reference(logits, targets, p, mean), dtype, what);
            EXPECT_TRUE(padding_is_zero(got.grad, pad.classes)) << what;
          }
}

TEST(CrossEntropyCuda, ForwardOnlyWritesLossRows) {
  REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor logits = random_logits(7, 50304, dtype);
    const Tensor targets = random_targets(7, 50304, Ignored::some, -100);
    const xent::Params p = params(7, 50304, 0.1, 1e-3, -100);
    expect_kernel_match(run_cuda(logits, targets, p, true, false, false),
                        run_reference(logits, targets, p, true, false), dtype, "forward only");
  }
}

TEST(CrossEntropyCuda, ZLossWeightChangesBetweenCalls) {
  REQUIRE_GPU();
  const int64_t rows = 6, vocab = 50304;
  const Tensor logits = random_logits(rows, vocab, DType::bf16);
  const Tensor targets = random_targets(rows, vocab, Ignored::some, -100);
  // Same device buffers for every call: only the runtime argument changes.
  Tensor x = logits.to(kGpu);
  Tensor t = targets.to(kGpu);
  FlaggedOutputs o = device_outputs(x, /*inplace=*/false, true);
  Tensor count = Tensor::empty({}, DType::i64, kGpu);
  for (double z : {0.0, 1e-2, 1e-4, 0.5, 0.0, 3e-3}) {
    test::poison(o.row_loss);
    test::poison(o.grad);
    const xent::Params p = params(rows, vocab, 0.1, z, -100);
    xent::count_rows_cuda(t, -100, true, count, o.grad_scale);
    xent::fused_cuda(x, t, p, o);
    expect_kernel_match(host_copy(o, count), run_reference(logits, targets, p, true), DType::bf16,
                        "z=" + std::to_string(z));
  }
}

// Many rows (the persistent grid loops), ignored rows interleaved (they skip the cluster
// exchange), under every configuration of the fast kernel and the forced fallback.
TEST(CrossEntropyCuda, EveryKernelConfigurationOverManyRows) {
  REQUIRE_GPU();
  struct Config {
    const char* name;
    std::vector<std::pair<const char*, std::string>> env;
  };
  const std::vector<Config> configs = {
      {"auto", {}},
      {"cluster 1", {{"ZT_XENT_CLUSTER", "1"}}},
      {"cluster 2, barrier, 1 stage", {{"ZT_XENT_CLUSTER", "2"}, {"ZT_XENT_EXCHANGE", "barrier"}}},
      {"cluster 4, 512 threads", {{"ZT_XENT_CLUSTER", "4"}, {"ZT_XENT_THREADS", "512"}}},
      {"cluster 8, 3 stages", {{"ZT_XENT_CLUSTER", "8"}, {"ZT_XENT_STAGES", "3"}}},
      {"cluster 3, barrier", {{"ZT_XENT_CLUSTER", "3"}, {"ZT_XENT_EXCHANGE", "barrier"}}},
      {"cluster 2, push, 4 stages", {{"ZT_XENT_CLUSTER", "2"}, {"ZT_XENT_EXCHANGE", "push"}, {"ZT_XENT_STAGES", "4"}}},
      {"cluster 8, barrier, 512 threads",
       {{"ZT_XENT_CLUSTER", "8"}, {"ZT_XENT_EXCHANGE", "barrier"}, {"ZT_XENT_THREADS", "512"}}},
      {"cluster 5", {{"ZT_XENT_CLUSTER", "5"}}},
      {"rowwise", {{"ZT_XENT_KERNEL", "rowwise"}}},
  };

  for (DType dtype : {DType::bf16, DType::f32})
    for (int64_t classes : {int64_t{50304}, int64_t{50257}}) {  // 50257: padded, slices over the real classes
      const int64_t rows = 700, vocab = 50304;
      const Tensor logits = poison_padding(random_logits(rows, vocab, dtype), classes);
      const Tensor targets = random_targets(rows, classes, Ignored::some, -100);
      const xent::Params p = params(rows, vocab, 0.1, 1e-4, -100, classes);
      const KernelOut ref = run_reference(logits, targets, p, true);
      for (size_t k = 0; k < configs.size(); ++k) {
        const Config& c = configs[k];
        std::vector<std::unique_ptr<EnvGuard>> guards;
        for (const auto& [name, value] : c.env) guards.push_back(std::make_unique<EnvGuard>(name, value));
        // Padded rows alternate in place (the padding's NaN overwritten) and out of place
        // (a poisoned buffer) over the configurations.
        const bool inplace = classes == vocab || k % 2 == 0;
        const std::string what = std::string(dtype_name(dtype)) + " classes " + std::to_string(classes) + " " +
                                 c.name + (inplace ? " in place" : " out of place");
        const KernelOut got = run_cuda(logits, targets, p, true, inplace);
        expect_kernel_match(got, ref, dtype, what);
        EXPECT_TRUE(padding_is_zero(got.grad, classes)) << what;
      }
    }
}

// Shapes and dtypes off the fast path: rows not a multiple of 16 bytes, small and f64 rows,
// a row just at the fast path's threshold, a valid id as ignore_index.
TEST(CrossEntropyCuda, OtherShapesDtypesAndIgnoreIndex) {
  REQUIRE_GPU();
  struct Case {
    DType dtype;
    int64_t rows, vocab, ignore_index;
  };
  for (const Case& c : {Case{DType::bf16, 33, 1001, -100}, Case{DType::f32, 40, 1000, -1}, Case{DType::f32, 300, 1024, -100},
                        Case{DType::bf16, 300, 2048, 5}, Case{DType::f32, 70, 4096, -100}, Case{DType::f64, 20, 3000, -100},
                        Case{DType::f64, 9, 1001, 3}, Case{DType::bf16, 3, 300000, -100}, Case{DType::f32, 1, 7, -100}}) {
    const Tensor logits = random_logits(c.rows, c.vocab, c.dtype);
    const Tensor targets = random_targets(c.rows, c.vocab, Ignored::some, c.ignore_index);
    const xent::Params p = params(c.rows, c.vocab, 0.1, 1e-3, c.ignore_index);
    for (bool inplace : {false, true})
      expect_kernel_match(run_cuda(logits, targets, p, true, inplace), run_reference(logits, targets, p, true),
                          c.dtype,
                          std::string(dtype_name(c.dtype)) + " " + std::to_string(c.rows) + "x" +
                              std::to_string(c.vocab) + " ignore_index " + std::to_string(c.ignore_index));
  }
}

// Vocab parallelism on one GPU: local_stats on each shard, the stats stacked as the
// all_gather would, finish on each shard; together they equal the one-rank kernel.
TEST(CrossEntropyCuda, VocabParallelKernelsEqualOneRank) {
  REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::f64})
    for (int ranks : {2, 3})
     for (int padding : {0, 1, 2, 3}) {
      const int64_t rows = 11, local = dtype == DType::f64 ? 1000 : 16768, vocab = local * ranks;
      // Padding: none; part of the last shard (not a whole vector); exactly the last shard;
      // the last shards and part of the first.
      const int64_t classes = padding == 0 ? vocab : padding == 1 ? vocab - 101 : padding == 2 ? vocab - local : local - 77;
      SCOPED_TRACE("num_classes " + std::to_string(classes) + " of " + std::to_string(vocab));
      const Tensor logits = poison_padding(random_logits(rows, vocab, dtype), classes);
      Tensor targets = random_targets(rows, classes, Ignored::some, -100);
      if (padding != 0) {
        targets = targets.clone();
        targets.slice(0, 2, 3).fill_(static_cast<double>(classes - 1));  // the last real class
      }
      xent::Params p = params(rows, vocab, 0.1, 1e-2, -100, padding == 0 ? -1 : classes);
      const KernelOut ref = run_reference(logits, targets, p, true);
      const DType acc = dtype == DType::f64 ? DType::f64 : DType::f32;
      const Tensor t = targets.to(kGpu);
      Tensor gathered = Tensor::empty({ranks, rows, 4}, acc, kGpu);
      std::vector<Tensor> shards;
      p.vocab_local = local;
      for (int r = 0; r < ranks; ++r) {
        shards.push_back(logits.slice(1, r * local, (r + 1) * local).contiguous().to(kGpu));
        p.vocab_offset = r * local;
        Tensor stats = gathered.select(0, r);
        test::poison(stats);
        xent::local_stats_cuda(shards[r], t, p, stats);
      }
      std::vector<Tensor> grads;
      for (int r = 0; r < ranks; ++r) {
        p.vocab_offset = r * local;
        FlaggedOutputs o = device_outputs(shards[r], /*inplace=*/r % 2 == 0, true);
        Tensor count = Tensor::empty({}, DType::i64, kGpu);
        xent::count_rows_cuda(t, -100, true, count, o.grad_scale);
        xent::finish_cuda(shards[r], t, gathered, p, o);
        KernelOut got = host_copy(o, count);
        grads.push_back(got.grad);
        const std::string what = std::string(dtype_name(dtype)) + " rank " + std::to_string(r) + " of " +
                                 std::to_string(ranks);
        SCOPED_TRACE(what);
        EXPECT_TRUE(test::close_rel(got.row_loss, ref.row_loss, loss_tol(dtype)));
        EXPECT_TRUE(test::close_rel(got.lse, ref.lse, loss_tol(dtype)));
        EXPECT_TRUE(test::close_rel(got.z_row, ref.z_row, loss_tol(dtype)));
        EXPECT_TRUE(test::close_rel(got.grad, ref.grad.slice(1, r * local, (r + 1) * local).contiguous(),
                                    grad_tol(dtype)));
        EXPECT_TRUE(padding_is_zero(got.grad, std::clamp<int64_t>(classes - r * local, 0, local)));
      }
    }
}

// Logit soft-capping on the row-per-CTA kernels (capped logits never take the cluster
// kernel): 16-byte rows (GPT-2's padded width, vector loop and padding), rows that are not
// (scalar loop), in place and not; then the vocab-parallel local_stats / finish pair over 2
// shards; against the CPU kernels in f64 (whose cap is tested against the formula).
TEST(CrossEntropyCuda, SoftcappedKernelsMatchF64Reference) {
  REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::f64})
    for (auto [width, classes] : {std::pair<int64_t, int64_t>{50304, 50257}, {50257, -1}, {33, 30}, {1024, -1}})
      for (bool inplace : {true, false}) {
        const std::string what = std::string(dtype_name(dtype)) + " width " + std::to_string(width) + " classes " +
                                 std::to_string(classes) + (inplace ? " in place" : " out of place");
        const int64_t rows = rows_for(width), real = classes < 0 ? width : classes;
        const Tensor logits = poison_padding(random_logits(rows, width, dtype), real);
        const Tensor targets = random_targets(rows, real, Ignored::some, -100);
        xent::Params p = params(rows, width, 0.1, 1e-2, -100, classes);
        p.logit_softcap = 5;
        const KernelOut got = run_cuda(logits, targets, p, true, inplace);
        expect_kernel_match(got, run_reference(logits, targets, p, true), dtype, what);
        EXPECT_TRUE(padding_is_zero(got.grad, real)) << what;
      }
  for (DType dtype : {DType::f32, DType::bf16}) {
    const int64_t rows = 9, local = 16768, vocab = 2 * local, classes = vocab - 101;
    const Tensor logits = poison_padding(random_logits(rows, vocab, dtype), classes);
    const Tensor targets = random_targets(rows, classes, Ignored::some, -100);
    xent::Params p = params(rows, vocab, 0.1, 1e-2, -100, classes);
    p.logit_softcap = 30;
    const KernelOut ref = run_reference(logits, targets, p, true);
    const DType acc = DType::f32;
    const Tensor t = targets.to(kGpu);
    Tensor gathered = Tensor::empty({2, rows, 4}, acc, kGpu);
    std::vector<Tensor> shards;
    p.vocab_local = local;
    for (int r = 0; r < 2; ++r) {
      shards.push_back(logits.slice(1, r * local, (r + 1) * local).contiguous().to(kGpu));
      p.vocab_offset = r * local;
      Tensor stats = gathered.select(0, r);
      test::poison(stats);
      xent::local_stats_cuda(shards[r], t, p, stats);
    }
    for (int r = 0; r < 2; ++r) {
      p.vocab_offset = r * local;
      FlaggedOutputs o = device_outputs(shards[r], r == 0, true);
      Tensor count = Tensor::empty({}, DType::i64, kGpu);
      xent::count_rows_cuda(t, -100, true, count, o.grad_scale);
      xent::finish_cuda(shards[r], t, gathered, p, o);
      const KernelOut got = host_copy(o, count);
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " capped shard " + std::to_string(r));
      EXPECT_TRUE(test::close_rel(got.row_loss, ref.row_loss, loss_tol(dtype)));
      EXPECT_TRUE(test::close_rel(got.lse, ref.lse, loss_tol(dtype)));
      EXPECT_TRUE(test::close_rel(got.grad, ref.grad.slice(1, r * local, (r + 1) * local).contiguous(),
                                  grad_tol(dtype)));
    }
  }
}

TEST(CrossEntropyCuda, BadTargetRaisesTheFlagAndErrorsWhenRead) {
  REQUIRE_GPU();
  for (int64_t vocab : {int64_t{50304}, int64_t{32}}) {  // fast and fallback kernels
    for (int64_t bad : {vocab, int64_t{-3}}) {
      const int64_t rows = 8;
      const Tensor logits = random_logits(rows, vocab, DType::bf16);
      std::vector<int64_t> tv = random_targets(rows, vocab, Ignored::none, -100).to_vector<int64_t>();
      tv[5] = bad;
      const Tensor targets = Tensor::from_vector(tv, {rows});
      // Kernel level: the flag is up, that row's loss is NaN, the others are right.
      const xent::Params p = params(rows, vocab, 0.1, 1e-4, -100);
      const KernelOut got = run_cuda(logits, targets, p, true, false);
      EXPECT_EQ(got.bad.item(), 1);
      const std::vector<double> rl = got.row_loss.to_vector<double>();
      EXPECT_TRUE(std::isnan(rl[5]));
      tv[5] = -100;  // the reference: the same rows with row 5 ignored
      const KernelOut ref =
          run_reference(logits, Tensor::from_vector(tv, {rows}), params(rows, vocab, 0.1, 1e-4, -100), true);
      const std::vector<double> rr = ref.row_loss.to_vector<double>();
      for (int64_t i = 0; i < rows; ++i)
        if (i != 5) EXPECT_NEAR(rl[i], rr[i], 1e-4 * std::abs(rr[i])) << "row " << i;

      // Op level: no error at the call (no host sync), an error naming the row when read.
      Variable x(logits.to(kGpu), true);
      ops::CrossEntropyOptions opt;
      opt.label_smoothing = 0.1;
      ops::CrossEntropyResult r = ops::cross_entropy(x, targets.to(kGpu), opt);
      try {
        r.check();
        ADD_FAILURE() << "check() did not throw for target " << bad;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("row 5"), std::string::npos) << e.what();
      }
    }
  }
}

// A target in the padding (>= num_classes, < width) is out of range like any other.
TEST(CrossEntropyCuda, TargetInThePaddingRaisesTheFlag) {
  REQUIRE_GPU();
  for (auto [width, classes] : {std::pair<int64_t, int64_t>{50304, 50257}, {64, 37}}) {
    const int64_t rows = 6;
    const Tensor logits = random_logits(rows, width, DType::bf16);
    std::vector<int64_t> tv = random_targets(rows, classes, Ignored::none, -100).to_vector<int64_t>();
    tv[3] = classes;
    const Tensor targets = Tensor::from_vector(tv, {rows});
    const KernelOut got = run_cuda(logits, targets, params(rows, width, 0.1, 1e-4, -100, classes), true, true);
    EXPECT_EQ(got.bad.item(), 1);
    EXPECT_TRUE(std::isnan(got.row_loss.to_vector<double>()[3]));
    ops::CrossEntropyOptions opt;
    opt.num_classes = classes;
    Variable x(logits.to(kGpu), true);
    ops::CrossEntropyResult r = ops::cross_entropy(x, targets.to(kGpu), opt);
    const std::string msg = test::error_of([&] { r.check(); });
    EXPECT_EQ(msg, "cross_entropy: target " + std::to_string(classes) + " at row 3 is outside [0, " +
                       std::to_string(classes) + ") (ignore_index is -100)");
  }
}

// The op reports bad targets through a deferred check (framework/cuda/deferred_check.h):
// nothing at the call, the message at the first host read after the kernels, once.
TEST(CrossEntropyCuda, BadTargetErrorsAtTheNextHostReadOnce) {
  REQUIRE_GPU();
  const int64_t rows = 4, vocab = 32;
  Variable x(random_logits(rows, vocab, DType::f32).to(kGpu), true);
  const Tensor targets = Tensor::from_vector(std::vector<int64_t>{1, 2, 40, 3}, {rows}).to(kGpu);
  ops::CrossEntropyResult r;
  EXPECT_NO_THROW(r = ops::cross_entropy(x, targets));
  EXPECT_EQ(test::error_of([&] { r.count.item(); }),
            "cross_entropy: target 40 at row 2 is outside [0, 32) (ignore_index is -100)");
  EXPECT_NO_THROW(r.check());  // already reported
  EXPECT_EQ(r.count.item(), 4.0);  // the bad row is not ignored: it counts
}

// The op end to end (validation, dispatch, reductions, autograd) on CUDA against the CPU op
// on f64 copies: every reduction, smoothing, z, ignored rows, in place and out of place, and
// upstream gradients other than 1.
TEST(CrossEntropyCuda, OpMatchesCpuF64ForEveryOption) {
  REQUIRE_GPU();
  int run = 0;
  for (DType dtype : {DType::f32, DType::bf16})
    for (int64_t vocab : {int64_t{32}, int64_t{50304}, int64_t{128256}})
      for (double e : {0.0, 0.1})
        for (double z : {0.0, 1e-4, 1e-2})
          for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none})
            for (Ignored ig : {Ignored::none, Ignored::some, Ignored::all})
              for (bool inplace : {true, false}) {
                ++run;
                const int64_t rows = rows_for(vocab);
                const Tensor logits = random_logits(rows, vocab, dtype);
                const Tensor targets = random_targets(rows, vocab, ig, -100);
                ops::CrossEntropyOptions opt;
                opt.label_smoothing = e;
                opt.z_loss_weight = z;
                opt.reduction = red;
                opt.inplace_grad = inplace;
                const std::string what = std::string(dtype_name(dtype)) + " V=" + std::to_string(vocab) +
                                         " e=" + std::to_string(e) + " z=" + std::to_string(z) + " red=" +
                                         std::to_string(static_cast<int>(red)) + " ignored=" + ignored_name(ig) +
                                         (inplace ? " in place" : " out of place");
                SCOPED_TRACE(what);

                Variable xr(logits.to(DType::f64), true);
                ops::CrossEntropyResult ref = ops::cross_entropy(xr, targets, opt);
                Variable xg(logits.to(kGpu).clone(), true);
                ops::CrossEntropyResult got = ops::cross_entropy(xg, targets.to(kGpu), opt);
                got.check();

                const double seed = run % 2 ? 1.0 : 0.75;
                if (red == Reduction::none) {
                  const Tensor w = Tensor::randn({rows}, DType::f64, test::test_generator());
                  ref.loss.backward(w);
                  got.loss.backward(w.to(got.loss.dtype()).to(kGpu));
                } else {
                  ref.loss.backward(seed);
                  got.loss.backward(seed);
                }
                EXPECT_TRUE(test::close_rel(got.loss.tensor(), ref.loss.tensor(), loss_tol(dtype))) << "loss";
                EXPECT_TRUE(test::close_rel(got.lse, ref.lse, loss_tol(dtype))) << "lse";
                EXPECT_TRUE(test::close_rel(got.z_loss, ref.z_loss, loss_tol(dtype))) << "z_loss";
                EXPECT_TRUE(test::close_rel(got.ce_sum, ref.ce_sum, loss_tol(dtype))) << "ce_sum";
                EXPECT_TRUE(test::close_rel(got.z_sum, ref.z_sum, loss_tol(dtype))) << "z_sum";
                EXPECT_EQ(got.count.item(), ref.count.item());
                ASSERT_TRUE(xg.has_grad());
                EXPECT_EQ(xg.grad().device(), kGpu);
                EXPECT_EQ(xg.grad().shares_storage(xg.tensor()), inplace);
                EXPECT_TRUE(test::close_rel(xg.grad(), xr.grad(), grad_tol(dtype))) << "grad";
              }
}

// The op with num_classes (as the GPT head calls it) against the CPU op on f64 copies: every
// reduction, smoothing, z, ignored rows, in place and not; the padding holds NaN going in and
// exactly 0 in the gradient coming out.
TEST(CrossEntropyCuda, OpWithNumClassesMatchesCpuF64) {
  REQUIRE_GPU();
  int run = 0;
  for (DType dtype : {DType::f32, DType::bf16})
    for (auto [width, classes] : {std::pair<int64_t, int64_t>{50304, 50257}, {32, 27}})
      for (double e : {0.0, 0.1})
        for (double z : {0.0, 1e-2})
          for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none})
            for (Ignored ig : {Ignored::none, Ignored::some, Ignored::all})
              for (bool inplace : {true, false}) {
                ++run;
                const int64_t rows = rows_for(width);
                const Tensor logits = poison_padding(random_logits(rows, width, dtype), classes);
                const Tensor targets = random_targets(rows, classes, ig, -100);
                ops::CrossEntropyOptions opt;
                opt.label_smoothing = e;
                opt.z_loss_weight = z;
                opt.reduction = red;
                opt.inplace_grad = inplace;
                opt.num_classes = classes;
                SCOPED_TRACE(std::string(dtype_name(dtype)) + " width=" + std::to_string(width) + " classes=" +
                             std::to_string(classes) + " e=" + std::to_string(e) + " z=" + std::to_string(z) +
                             " red=" + std::to_string(static_cast<int>(red)) + " ignored=" + ignored_name(ig) +
                             (inplace ? " in place" : " out of place"));
                Variable xr(logits.to(DType::f64), true);
                ops::CrossEntropyResult ref = ops::cross_entropy(xr, targets, opt);
                Variable xg(logits.to(kGpu).clone(), true);
                ops::CrossEntropyResult got = ops::cross_entropy(xg, targets.to(kGpu), opt);
                got.check();
                if (red == Reduction::none) {
                  const Tensor w = Tensor::randn({rows}, DType::f64, test::test_generator());
                  ref.loss.backward(w);
                  got.loss.backward(w.to(got.loss.dtype()).to(kGpu));
                } else {
                  const double seed = run % 2 ? 1.0 : 0.75;
                  ref.loss.backward(seed);
                  got.loss.backward(seed);
                }
                EXPECT_TRUE(test::close_rel(got.loss.tensor(), ref.loss.tensor(), loss_tol(dtype))) << "loss";
                EXPECT_TRUE(test::close_rel(got.lse, ref.lse, loss_tol(dtype))) << "lse";
                EXPECT_TRUE(test::close_rel(got.ce_sum, ref.ce_sum, loss_tol(dtype))) << "ce_sum";
                EXPECT_TRUE(test::close_rel(got.z_sum, ref.z_sum, loss_tol(dtype))) << "z_sum";
                EXPECT_EQ(got.count.item(), ref.count.item());
                ASSERT_TRUE(xg.has_grad());
                EXPECT_EQ(xg.grad().shares_storage(xg.tensor()), inplace);
                const Tensor g = xg.grad().to(Device::cpu());
                EXPECT_TRUE(test::close_rel(g, xr.grad(), grad_tol(dtype))) << "grad";
                EXPECT_TRUE(padding_is_zero(g, classes));
              }
}

// No host synchronisation and no allocation inside: the three kernels of a step are captured
// into a CUDA graph, and replays on new input values give the new results.
// ---- numerics against the f64 reference (tests/support/xent_reference) ----------------------

// The op on the GPU (reduction none, upstream gradient 1 per row) and, for `ranks` > 1, the
// vocab-parallel kernels on `ranks` shards, each against the f64 reference of the same
// (rounded) logits: loss rows elementwise (rtol, atol), lse relative, the gradient
// elementwise (rtol, atol). kernel: "" (automatic) or "rowwise" (ZT_XENT_KERNEL).
struct NumericsCase {
  Tensor logits;  // host, f32 or bf16
  std::vector<int64_t> targets;
  double smoothing = 0, z = 0;
  // The old formulas were off by ~5e-4 in the loss and ~7e-4 (relative) in the gradient.
  double loss_rtol = 1e-5, loss_atol = 1e-5, grad_rtol = 2e-5, grad_atol = 1e-7;
};

void check_numerics(const NumericsCase& c, const std::string& kernel, int ranks) {
  const int64_t rows = c.logits.size(0), vocab = c.logits.size(1);
  SCOPED_TRACE(std::string(dtype_name(c.logits.dtype())) + " V=" + std::to_string(vocab) + " kernel '" + kernel +
               "' ranks " + std::to_string(ranks));
  const test::XentReference ref = test::xent_reference(c.logits, c.targets, c.smoothing, c.z, -100, "none");
  const Tensor ref_grad = Tensor::from_vector(ref.grad, {rows, vocab});
  const Tensor targets = Tensor::from_vector(c.targets, {rows});
  auto check_rows = [&](const Tensor& loss, const Tensor& lse) {
    EXPECT_TRUE(test::close_elementwise(loss.to(Device::cpu()), Tensor::from_vector(ref.row_loss, {rows}),
                                        c.loss_rtol, c.loss_atol))
        << "loss";
    EXPECT_TRUE(test::close_rel(lse.to(Device::cpu()), Tensor::from_vector(ref.lse, {rows}), 1e-6)) << "lse";
  };
  if (ranks == 1) {
    std::unique_ptr<EnvGuard> env;
    if (!kernel.empty()) env = std::make_unique<EnvGuard>("ZT_XENT_KERNEL", kernel);
    ops::CrossEntropyOptions opt;
    opt.label_smoothing = c.smoothing;
    opt.z_loss_weight = c.z;
    opt.reduction = Reduction::none;
    Variable x(c.logits.to(kGpu).clone(), true);
    ops::CrossEntropyResult r = ops::cross_entropy(x, targets.to(kGpu), opt);
    r.check();
    r.loss.backward(Tensor::full({rows}, 1.0, r.loss.dtype(), kGpu));
    check_rows(r.loss.tensor(), r.lse);
    EXPECT_TRUE(test::close_elementwise(x.grad().to(Device::cpu()), ref_grad, c.grad_rtol, c.grad_atol)) << "grad";
    return;
  }
  const int64_t local = vocab / ranks;
  xent::Params p = params(rows, vocab, c.smoothing, c.z, -100);
  p.vocab_local = local;
  const Tensor t = targets.to(kGpu);
  Tensor gathered = Tensor::empty({ranks, rows, 4}, DType::f32, kGpu);
  std::vector<Tensor> shards;
  for (int r = 0; r < ranks; ++r) {
    shards.push_back(c.logits.slice(1, r * local, (r + 1) * local).contiguous().to(kGpu));
    p.vocab_offset = r * local;
    Tensor stats = gathered.select(0, r);
    xent::local_stats_cuda(shards[r], t, p, stats);
  }
  for (int r = 0; r < ranks; ++r) {
    p.vocab_offset = r * local;
    FlaggedOutputs o = device_outputs(shards[r], /*inplace=*/false, true);
    Tensor count = Tensor::empty({}, DType::i64, kGpu);
    xent::count_rows_cuda(t, -100, /*mean=*/false, count, o.grad_scale);
    xent::finish_cuda(shards[r], t, gathered, p, o);
    SCOPED_TRACE("rank " + std::to_string(r));
    check_rows(o.row_loss, o.lse);
    EXPECT_TRUE(test::close_elementwise(o.grad.to(Device::cpu()),
                                        ref_grad.slice(1, r * local, (r + 1) * local).contiguous(), c.grad_rtol,
                                        c.grad_atol))
        << "grad";
  }
}

// Widths for each kernel: a short row (row per CTA), one CTA of the fast path, a cluster of
// the fast path (f32 128256: 5 CTAs); each also through the row-per-CTA kernel.
const std::vector<int64_t> kNumericsWidths = {96, 4096, 128256};

// Logits near +-1e4 (and 3e5) with a spread of a few units: p_j = exp(x_j - lse) carried lse's
// f32 rounding (and the kernels' x log2e - m log2e exponent, m log2e's), 7e-4 of error in
// the gradient. Logits all at 3e38: loss log V, not lse - x_y = 0.
TEST(CrossEntropyCuda, LargeLogitsKeepFullPrecision) {
  REQUIRE_GPU();
  for (int64_t vocab : kNumericsWidths)
    for (auto [offset, spread] : {std::pair{1e4, 2.0}, {-1e4, 2.0}, {3e5, 2.0}, {3e38, 0.0}}) {
      SCOPED_TRACE("logits " + std::to_string(offset) + " + N(0, " + std::to_string(spread) + ")");
      NumericsCase c;
      const int64_t rows = 5;
      c.logits = Tensor::randn({rows, vocab}, DType::f64, test::test_generator(), offset, spread).to(DType::f32);
      for (int64_t i = 0; i < rows; ++i)
        c.targets.push_back(static_cast<int64_t>(test::test_generator().below(static_cast<uint64_t>(vocab))));
      for (const std::string kernel : {"", "rowwise"}) check_numerics(c, kernel, 1);
      check_numerics(c, "", 2);
    }
}

// A vocabulary masked with -inf (z-loss on, smoothing 0) gave a NaN loss on CUDA: the absent
// smoothing term was computed as 0 * (sum of logits = -inf). Masked columns in some rows, a
// masked tail, and (vocab-parallel) a row whose second shard is all masked.
TEST(CrossEntropyCuda, MaskedVocabularyWithZLoss) {
  REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16})
    for (int64_t vocab : kNumericsWidths) {
      const int64_t rows = 4;
      Tensor x = random_logits(rows, vocab, DType::f64);
      double* p = x.data<double>();
      const double inf = std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < vocab; j += 3) p[0 * vocab + j] = -inf;  // every third column
      for (int64_t j = vocab / 2; j < vocab; ++j) p[2 * vocab + j] = -inf;  // the second half
      p[3 * vocab + 7] = -inf;
      NumericsCase c;
      c.logits = x.to(dtype);
      c.targets = {1, 4, 3, 8};
      c.z = 1e-2;
      if (dtype == DType::bf16) c.grad_rtol = 1e-2, c.grad_atol = 1e-4;  // the gradient is rounded to bf16
      for (const std::string kernel : {"", "rowwise"}) check_numerics(c, kernel, 1);
      check_numerics(c, "", 2);
    }
}

TEST(CrossEntropyCuda, CapturedInACudaGraph) {
  REQUIRE_GPU();
  for (int64_t vocab : {int64_t{50304}, int64_t{32}}) {
    const int64_t rows = 12;
    const DType dtype = DType::bf16;
    const xent::Params p = params(rows, vocab, 0.1, 1e-4, -100);
    Tensor x = Tensor::empty({rows, vocab}, dtype, kGpu);
    Tensor t = Tensor::empty({rows}, DType::i64, kGpu);
    FlaggedOutputs o = device_outputs(x, /*inplace=*/false, true);
    Tensor count = Tensor::empty({}, DType::i64, kGpu);
    Tensor loss = Tensor::empty({}, DType::f32, kGpu), ce_sum = Tensor::empty({}, DType::f32, kGpu),
           z_sum = Tensor::empty({}, DType::f32, kGpu);
    auto step = [&] {
      xent::count_rows_cuda(t, -100, true, count, o.grad_scale);
      xent::fused_cuda(x, t, p, o);
      xent::reduce_rows_cuda(o.row_loss, o.z_row, o.grad_scale, loss, ce_sum, z_sum);
    };
    x.copy_(random_logits(rows, vocab, dtype).to(kGpu));
    t.copy_(random_targets(rows, vocab, Ignored::some, -100).to(kGpu));
    step();  // warm: one-time attribute and occupancy queries happen outside the capture
    ZT_CUDA_CHECK(cudaDeviceSynchronize());

    cudaStream_t stream;
    ZT_CUDA_CHECK(cudaStreamCreate(&stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    {
      cuda::StreamGuard guard(stream);
      ZT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      step();
      ZT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    }
    ZT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) {
      const Tensor logits = random_logits(rows, vocab, dtype);
      const Tensor targets = random_targets(rows, vocab, Ignored::some, -100);
      x.copy_(logits.to(kGpu));
      t.copy_(targets.to(kGpu));
      test::poison(o.grad);
      test::poison(o.row_loss);
      test::poison(loss);
      ZT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
      const KernelOut ref = run_reference(logits, targets, p, true);
      expect_kernel_match(host_copy(o, count), ref, dtype, "graph replay " + std::to_string(replay));
      double ref_sum = 0;
      for (double v : ref.row_loss.to_vector<double>()) ref_sum += v;
      const Tensor ref_loss = Tensor::scalar(ref_sum * ref.grad_scale.item(), DType::f64);
      EXPECT_TRUE(test::close_rel(loss.to(Device::cpu()), ref_loss, 1e-5)) << "loss";
    }
    ZT_CUDA_CHECK(cudaGraphExecDestroy(exec));
    ZT_CUDA_CHECK(cudaGraphDestroy(graph));
    ZT_CUDA_CHECK(cudaStreamDestroy(stream));
  }
}

TEST(CrossEntropyCuda, KernelArgumentsAreChecked) {
  REQUIRE_GPU();
  const Tensor logits = random_logits(4, 64, DType::f32).to(kGpu);
  const Tensor targets = random_targets(4, 64, Ignored::none, -100).to(kGpu);
  FlaggedOutputs o = device_outputs(logits, false, true);
  xent::Params p = params(4, 64, 0, 0, -100);
  p.vocab_global = 128;  // fused_cuda is the one-rank kernel
  EXPECT_THROW(xent::fused_cuda(logits, targets, p, o), Error);
  p = params(4, 64, 0, 0, -100);
  o.grad = Tensor::empty({4, 63}, DType::f32, kGpu);
  EXPECT_THROW(xent::fused_cuda(logits, targets, p, o), Error);
  o.grad = Tensor::empty({4, 64}, DType::f32, kGpu);
  EXPECT_THROW(xent::fused_cuda(logits, targets.to(Device::cpu()), p, o), Error);
  {
    EnvGuard bad("ZT_XENT_CLUSTER", "9");
    const Tensor big = random_logits(2, 50304, DType::bf16).to(kGpu);
    FlaggedOutputs ob = device_outputs(big, false, true);
    EXPECT_THROW(xent::fused_cuda(big, random_targets(2, 50304, Ignored::none, -100).to(kGpu),
                                  params(2, 50304, 0, 0, -100), ob),
                 Error);
  }
}

#endif  // ZTRAIN_WITH_CUDA

}  // namespace
}  // namespace zt
