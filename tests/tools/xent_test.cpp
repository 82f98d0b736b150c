// The xent tool end to end: .npy files written here, build/bin/xent run as a process, its
// outputs compared with the float64 reference; --tp through real ranks; bad inputs.
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/device.h"
#include "framework/io/npy.h"
#include "tests/support/check.h"
#include "tests/support/multi_rank.h"
#include "tests/support/xent_reference.h"

namespace zt {
namespace {

struct ToolRun {
  int status;
  std::string output;  // stdout and stderr
};

ToolRun xent(const std::string& args) {
  const std::string cmd = "(" + std::string(ZTRAIN_BIN_DIR) + "/xent " + args + ") 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class XentTool : public ::testing::Test {
 protected:
  // Random logits [n, v] (f32 or f64 file) and targets with one ignored row.
  void make_inputs(int64_t n, int64_t v, DType logits_dtype = DType::f32, DType target_dtype = DType::i64) {
    logits_ = Tensor::randn({n, v}, DType::f64, test::test_generator(), 0, 3).to(logits_dtype);
    y_.assign(n, 0);
    for (int64_t i = 0; i < n; ++i) y_[i] = static_cast<int64_t>(test::test_generator().uniform() * v) % v;
    y_[1] = -100;
    io::write_npy(path("L.npy"), logits_);
    io::write_npy(path("T.npy"), Tensor::from_vector(y_, {n}).to(target_dtype));
  }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  // A failing run: exit `status` (1: the inputs, 2: the command line) and one line naming `part`.
  void expect_failure(const std::string& args, const std::string& part, int status) const {
    const ToolRun r = xent(args);
    EXPECT_EQ(r.status, status) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("xent: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(part), std::string::npos) << "expected '" << part << "' in: " << r.output;
  }
  std::string inputs() const { return "--logits " + path("L.npy") + " --targets " + path("T.npy"); }
  Tensor out(const std::string& run, const std::string& name) const { return io::read_npy(path(run) + "/" + name); }

  test::TempDir dir_;
  Tensor logits_;
  std::vector<int64_t> y_;
};

TEST_F(XentTool, MatchesTheReferenceForEveryReduction) {
  make_inputs(6, 40);
  for (const std::string red : {"mean", "sum", "none"}) {
    SCOPED_TRACE(red);
    const ToolRun r = xent(inputs() + " --label-smoothing 0.1 --z-loss-weight 0.01 --reduction " + red + " --out " +
                       path("out_" + red));
    ASSERT_EQ(r.status, 0) << r.output;
    const auto ref = test::xent_reference(logits_, y_, 0.1, 0.01, -100, red);
    const Tensor loss = out("out_" + red, "loss.npy");
    EXPECT_EQ(loss.dtype(), DType::f32);
    if (red == "none") EXPECT_TRUE(test::close_rel(loss, Tensor::from_vector(ref.row_loss, {6}), 1e-5));
    else EXPECT_TRUE(test::close_rel(loss, Tensor::scalar(ref.loss, DType::f64), 1e-5));
    EXPECT_TRUE(test::close_rel(out("out_" + red, "grad.npy"), Tensor::from_vector(ref.grad, {6, 40}), 1e-5));
    EXPECT_TRUE(test::close_rel(out("out_" + red, "lse.npy"), Tensor::from_vector(ref.lse, {6}), 1e-6));
    EXPECT_TRUE(test::close_rel(out("out_" + red, "z_loss.npy"), Tensor::from_vector(ref.z_row, {6}), 1e-5));
  }
}

TEST_F(XentTool, IgnoreIndexOption) {
  make_inputs(5, 24);
  y_[1] = 7;  // ignore_index 7 instead of -100
  y_[3] = 7;
  io::write_npy(path("T.npy"), Tensor::from_vector(y_, {5}).to(DType::i32));
  const ToolRun r = xent(inputs() + " --ignore-index 7 --reduction sum --out " + path("ign"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto ref = test::xent_reference(logits_, y_, 0, 0, 7, "sum");
  EXPECT_TRUE(test::close_rel(out("ign", "loss.npy"), Tensor::scalar(ref.loss, DType::f64), 1e-5));
  EXPECT_TRUE(test::close_rel(out("ign", "grad.npy"), Tensor::from_vector(ref.grad, {5, 24}), 1e-5));
}

TEST_F(XentTool, F64OutputsAndBf16Compute) {
  make_inputs(5, 24, DType::f64, DType::i32);
  ASSERT_EQ(xent(inputs() + " --dtype f64 --z-loss-weight 1e-3 --out " + path("f64")).status, 0);
  const auto ref = test::xent_reference(logits_, y_, 0, 1e-3, -100, "mean");
  EXPECT_EQ(out("f64", "grad.npy").dtype(), DType::f64);
  EXPECT_TRUE(test::close_rel(out("f64", "loss.npy"), Tensor::scalar(ref.loss, DType::f64), 1e-12));
  EXPECT_TRUE(test::close_rel(out("f64", "grad.npy"), Tensor::from_vector(ref.grad, {5, 24}), 1e-12));

  ASSERT_EQ(xent(inputs() + " --dtype bf16 --z-loss-weight 1e-3 --out " + path("bf16")).status, 0);
  const auto ref16 = test::xent_reference(logits_.to(DType::bf16), y_, 0, 1e-3, -100, "mean");
  EXPECT_EQ(out("bf16", "grad.npy").dtype(), DType::f32);
  EXPECT_TRUE(test::close_rel(out("bf16", "loss.npy"), Tensor::scalar(ref16.loss, DType::f64), 1e-5));
  EXPECT_TRUE(test::close_rel(out("bf16", "grad.npy"), Tensor::from_vector(ref16.grad, {5, 24}), 1e-2));
}

// --num-classes: the padded columns (NaN in the file) are never read, the gradient there is
// 0, and under --tp the padding covering the last shard entirely gives the same files.
TEST_F(XentTool, NumClassesLeavesThePaddingOut) {
  make_inputs(6, 48);
  const int64_t classes = 21;
  for (int64_t i = 0; i < 6; ++i) y_[i] = y_[i] == -100 ? -100 : y_[i] % classes;
  y_[4] = classes - 1;
  io::write_npy(path("T.npy"), Tensor::from_vector(y_, {6}));
  logits_.slice(1, classes, 48).fill_(std::numeric_limits<double>::quiet_NaN());
  io::write_npy(path("L.npy"), logits_);
  const std::string common = inputs() + " --label-smoothing 0.1 --z-loss-weight 0.01 --num-classes 21";
  const ToolRun r = xent(common + " --out " + path("pad"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto ref = test::xent_reference(logits_, y_, 0.1, 0.01, -100, "mean", 1.0, {}, classes);
  EXPECT_TRUE(test::close_rel(out("pad", "loss.npy"), Tensor::scalar(ref.loss, DType::f64), 1e-5));
  EXPECT_TRUE(test::close_rel(out("pad", "grad.npy"), Tensor::from_vector(ref.grad, {6, 48}), 1e-5));
  for (double g : out("pad", "grad.npy").slice(1, classes, 48).to_vector<double>()) ASSERT_EQ(g, 0.0);
#ifdef ZTRAIN_WITH_GLOO
  const ToolRun tp = xent(common + " --tp 2 --out " + path("pad_tp2"));  // shard 1: all padding
  ASSERT_EQ(tp.status, 0) << tp.output;
  for (const char* f : {"loss.npy", "grad.npy", "lse.npy", "z_loss.npy"})
    EXPECT_TRUE(test::close_rel(out("pad_tp2", f), out("pad", f), 1e-6)) << f;
#endif
  const ToolRun bad = xent(inputs() + " --num-classes 49 --out " + path("pad_bad"));
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("xent: --num-classes 49: expected -1 (every column) or 1..48"), std::string::npos)
      << bad.output;
  io::write_npy(path("T.npy"), Tensor::from_vector(std::vector<int64_t>{0, 1, 21, 2, 3, 4}, {6}));
  const ToolRun padded_target = xent(common + " --out " + path("pad_bad"));
  EXPECT_EQ(padded_target.status, 1);
  EXPECT_NE(padded_target.output.find("target 21 at row 2 is outside [0, 21)"), std::string::npos)
      << padded_target.output;
}

TEST_F(XentTool, TensorParallelEqualsOneRank) {
  ZT_REQUIRE_GLOO();
  make_inputs(8, 48);
  for (const std::string red : {"mean", "none"}) {
    SCOPED_TRACE(red);
    const std::string common = inputs() + " --label-smoothing 0.1 --z-loss-weight 1e-4 --reduction " + red;
    ToolRun one = xent(common + " --out " + path("tp1"));
    ASSERT_EQ(one.status, 0) << one.output;
    for (int tp : {2, 4}) {
      ToolRun r = xent(common + " --tp " + std::to_string(tp) + " --out " + path("tp" + std::to_string(tp)));
      ASSERT_EQ(r.status, 0) << r.output;
      for (const char* f : {"loss.npy", "grad.npy", "lse.npy", "z_loss.npy"})
        EXPECT_TRUE(test::close_rel(out("tp" + std::to_string(tp), f), out("tp1", f), 1e-6)) << f << " tp " << tp;
    }
  }
}

TEST_F(XentTool, ErrorsAreOneClearLine) {
  make_inputs(4, 30);
  // Exit 1 for what the inputs hold, 2 for a bad command line (tools/tool_main.h).
  auto expect_error = [&](const std::string& args, const std::string& part, int status = 1) {
    expect_failure(args, part, status);
  };
  const std::string o = " --out " + path("err");
  expect_error(inputs() + " --tp 4" + o, "vocabulary of 30 columns is not divisible by --tp 4");
  std::ofstream(path("text.npy")) << "not numpy\n";
  expect_error("--logits " + path("text.npy") + " --targets " + path("T.npy") + o, "not a .npy file");
  {  // Regression: a shape whose byte count wraps past 2^64 made xent read past its buffer (SIGSEGV).
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
    while ((10 + header.size() + 1) % 64) header += ' ';
    header += '\n';
    std::ofstream(path("huge.npy"), std::ios::binary)
        << std::string("\x93NUMPY\x01\x00", 8) << static_cast<char>(header.size()) << '\0' << header;
  }
  expect_error("--logits " + path("huge.npy") + " --targets " + path("T.npy") + o,
               "huge.npy: shape [4294967296, 4294967296] is too large");
  io::write_npy(path("Tf.npy"), Tensor::zeros({4}, DType::f32));
  expect_error("--logits " + path("L.npy") + " --targets " + path("Tf.npy") + o, "targets must be i32 or i64, got f32");
  io::write_npy(path("Li.npy"), Tensor::zeros({4, 30}, DType::i32));
  expect_error("--logits " + path("Li.npy") + " --targets " + path("T.npy") + o, "logits must be f32 or f64, got i32");
  io::write_npy(path("T5.npy"), Tensor::zeros({5}, DType::i64));
  expect_error("--logits " + path("L.npy") + " --targets " + path("T5.npy") + o,
               "targets of shape [5] do not match logits of shape [4, 30]");
  io::write_npy(path("Tbad.npy"), Tensor::from_vector(std::vector<int64_t>{0, 1, 30, 2}, {4}));
  expect_error("--logits " + path("L.npy") + " --targets " + path("Tbad.npy") + o,
               "target 30 at row 2 is outside [0, 30) (ignore_index is -100)");
  expect_error(inputs() + " --label-smoothing 1" + o, "label_smoothing must be in [0, 1), got 1");
  expect_error(inputs() + " --z-loss-weight -1" + o, "z_loss_weight must be finite and >= 0, got -1");
  expect_error(inputs() + " --reduction avg" + o, "--reduction", 2);
  expect_error(inputs(), "--out is required", 2);
  expect_error(inputs() + " --tp x" + o, "--tp", 2);
  expect_error(inputs() + " --no-such-flag" + o, "--no-such-flag", 2);
  expect_error("--logits " + path("nope.npy") + " --targets " + path("T.npy") + o, "nope.npy' does not exist");
  if (cuda_available()) {
    // More ranks than GPUs: said before any rank starts, not in NCCL's words.
    const int gpus = cuda_device_count();
    expect_error(inputs() + " --device cuda --tp " + std::to_string(gpus + 1) + o,
                 "--tp " + std::to_string(gpus + 1) + " --device cuda needs " + std::to_string(gpus + 1) +
                     " GPUs (one per rank), found " + std::to_string(gpus));
  } else {
    expect_error(inputs() + " --device cuda --tp 2" + o, "--device cuda: no CUDA device available");
  }
#ifdef ZTRAIN_WITH_GLOO
  // Under --tp the rank reports the cause and the parent names the rank.
  io::write_npy(path("Tbad32.npy"), Tensor::from_vector(std::vector<int64_t>{0, 1, 31, 2}, {4}));
  const ToolRun tp = xent("--logits " + path("L.npy") + " --targets " + path("Tbad32.npy") + " --tp 2" + o);
  EXPECT_EQ(tp.status, 1);
  EXPECT_NE(tp.output.find("target 31 at row 2 is outside [0, 30)"), std::string::npos) << tp.output;
  EXPECT_NE(tp.output.find("xent: rank "), std::string::npos) << tp.output;
#endif
}

TEST_F(XentTool, LogitSoftcapMatchesTheReference) {
  make_inputs(6, 40);
  const ToolRun r = xent(inputs() + " --label-smoothing 0.1 --z-loss-weight 0.01 --logit-softcap 4 --out " +
                         path("cap"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto ref = test::xent_reference(logits_, y_, 0.1, 0.01, -100, "mean", 1.0, {}, -1, 4.0);
  EXPECT_TRUE(test::close_rel(out("cap", "loss.npy"), Tensor::scalar(ref.loss, DType::f64), 1e-5));
  EXPECT_TRUE(test::close_rel(out("cap", "grad.npy"), Tensor::from_vector(ref.grad, {6, 40}), 1e-5));
  EXPECT_TRUE(test::close_rel(out("cap", "lse.npy"), Tensor::from_vector(ref.lse, {6}), 1e-6));
  expect_failure(inputs() + " --logit-softcap -1 --out " + path("cap"), "logit_softcap must be finite and >= 0", 1);
}

// The fused head (--hidden/--weight): the loss and lse of logits = H W^T, grad_hidden = G W
// and grad_weight = G^T H with G the reference's gradient of the logits; in chunks of 4 of 9
// rows; --tp 2 equals one rank; reduction none is forward only.
TEST_F(XentTool, FusedHeadMatchesTheReference) {
  const int64_t n = 9, c = 5, v = 40, classes = 37;
  const Tensor h = Tensor::randn({n, c}, DType::f64, test::test_generator(), 0, 1);
  const Tensor w = Tensor::randn({v, c}, DType::f64, test::test_generator(), 0, 1);
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = (i * 7) % classes;
  y[4] = -100;
  io::write_npy(path("H.npy"), h);
  io::write_npy(path("W.npy"), w);
  io::write_npy(path("Ty.npy"), Tensor::from_vector(y, {n}));
  const std::string common = "--hidden " + path("H.npy") + " --weight " + path("W.npy") + " --targets " + path("Ty.npy") +
                             " --label-smoothing 0.1 --z-loss-weight 0.01 --logit-softcap 3 --num-classes 37 "
                             "--chunk-rows 4 --dtype f64";
  const ToolRun r = xent(common + " --out " + path("fused"));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::vector<double> hv = h.to_vector<double>(), wv = w.to_vector<double>();
  std::vector<double> logits(n * v, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < v; ++j)
      for (int64_t k = 0; k < c; ++k) logits[i * v + j] += hv[i * c + k] * wv[j * c + k];
  const auto ref = test::xent_reference(Tensor::from_vector(logits, {n, v}), y, 0.1, 0.01, -100, "mean", 1.0, {},
                                        classes, 3.0);
  std::vector<double> dh(n * c, 0), dw(v * c, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < v; ++j)
      for (int64_t k = 0; k < c; ++k) {
        dh[i * c + k] += ref.grad[i * v + j] * wv[j * c + k];
        dw[j * c + k] += ref.grad[i * v + j] * hv[i * c + k];
      }
  EXPECT_TRUE(test::close_rel(out("fused", "loss.npy"), Tensor::scalar(ref.loss, DType::f64), 1e-12));
  EXPECT_TRUE(test::close_rel(out("fused", "lse.npy"), Tensor::from_vector(ref.lse, {n}), 1e-12));
  EXPECT_TRUE(test::close_rel(out("fused", "z_loss.npy"), Tensor::from_vector(ref.z_row, {n}), 1e-12));
  EXPECT_TRUE(test::close_rel(out("fused", "grad_hidden.npy"), Tensor::from_vector(dh, {n, c}), 1e-10));
  EXPECT_TRUE(test::close_rel(out("fused", "grad_weight.npy"), Tensor::from_vector(dw, {v, c}), 1e-10));
#ifdef ZTRAIN_WITH_GLOO
  const ToolRun tp = xent(common + " --tp 2 --out " + path("fused_tp2"));
  ASSERT_EQ(tp.status, 0) << tp.output;
  for (const char* f : {"loss.npy", "lse.npy", "z_loss.npy", "grad_hidden.npy", "grad_weight.npy"})
    EXPECT_TRUE(test::close_rel(out("fused_tp2", f), out("fused", f), 1e-12)) << f;
#endif
  const ToolRun none = xent(common + " --reduction none --out " + path("fused_none"));
  ASSERT_EQ(none.status, 0) << none.output;
  EXPECT_TRUE(test::close_rel(out("fused_none", "loss.npy"), Tensor::from_vector(ref.row_loss, {n}), 1e-12));
  EXPECT_FALSE(std::filesystem::exists(path("fused_none") + "/grad_hidden.npy"));

  expect_failure(common + " --logits " + path("H.npy") + " --out " + path("e"), "either --logits or --hidden", 2);
  expect_failure("--hidden " + path("H.npy") + " --targets " + path("Ty.npy") + " --out " + path("e"),
                     "--hidden and --weight go together", 2);
  io::write_npy(path("W3.npy"), Tensor::zeros({v, 3}, DType::f64));
  expect_failure("--hidden " + path("H.npy") + " --weight " + path("W3.npy") + " --targets " + path("Ty.npy") +
                     " --out " + path("e"),
                 "weight of shape [40, 3] does not match hidden of shape [9, 5]", 1);
  expect_failure(common + " --tp 3 --out " + path("e"), "vocabulary of 40 weight rows is not divisible by --tp 3", 1);
}

}  // namespace
}  // namespace zt
