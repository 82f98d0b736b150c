// bench_linear_xent: the fused head (ops::linear_cross_entropy: logits in bounded row chunks,
// never N x V) against the unfused path in the same run, forward + backward:
//
//   unfused  ops::linear (the head GEMM, [N, V] logits), ops::cross_entropy (today's fused
//            loss, gradient in place), backward: the two gradient GEMMs (dhidden, dweight)
//   fused    ops::linear_cross_entropy + backward (the gradients were computed in forward)
//
// Per shape NxCxV (hidden [N, C], weight [V, C]) it prints the median time, TFLOP/s of the
// 6 N C V flops (three products of N C V multiply-adds each), the extra memory each takes
// beyond its inputs (CUDA: the allocator's peak above the bytes allocated before the run; it
// includes the gradients dhidden and dweight, equal for both; CPU: not measured), and how far
// the fused loss and gradients are from the unfused ones. --out FILE.md / FILE.json writes
// the table.
#include <cmath>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/autograd/variable.h"
#include "framework/error.h"
#include "framework/random.h"
#include "framework/tensor.h"
#include "ops/cross_entropy.h"
#include "ops/linear_cross_entropy.h"
#include "ops/matmul.h"
#include "tools/bench_util.h"
#include "tools/tool_main.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#include "framework/cuda/cuda_check.h"
#endif

namespace {

using namespace zt;

struct Shape3 {
  int64_t n, c, v;
  std::string str() const { return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(v); }
};

std::vector<Shape3> parse_shapes(const std::string& list) {
  std::vector<Shape3> out;
  for (const std::string& item : tool::split_list(list)) {
    std::vector<int64_t> d;
    size_t pos = 0;
    try {
      while (pos <= item.size()) {
        const size_t x = item.find('x', pos);
        const std::string part = item.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
        size_t used = 0;
        d.push_back(std::stoll(part, &used));
        ZT_CHECK(used == part.size() && d.back() > 0, "");
        if (x == std::string::npos) break;
        pos = x + 1;
      }
      ZT_CHECK(d.size() == 3, "");
    } catch (const std::exception&) {
      ZT_FAIL("--shapes: '", item, "' is not NxCxV with positive integers (e.g. 16384x768x50304)");
    }
    out.push_back({d[0], d[1], d[2]});
  }
  ZT_CHECK(!out.empty(), "--shapes: no shapes given");
  return out;
}

struct Row {
  std::string shape, dtype, variant;
  double median_ms = 0, tflops = 0, extra_mib = -1;  // extra_mib < 0: not measured (CPU)
  double loss_rel = 0, dh_rel = 0, dw_rel = 0;         // against the unfused run
  int64_t chunk_rows = 0;
};

// ||a - b|| / ||b|| in f64 on the host.
double rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(Device::cpu()).to_vector<double>(), y = b.to(Device::cpu()).to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * (x[i] - y[i]), den += y[i] * y[i];
  return std::sqrt(num / (den > 0 ? den : 1e-300));
}

struct RunOut {
  Tensor loss, dh, dw;
};

class Bench {
 public:
  Bench(Device dev, int iters, int warmup) : dev_(dev), iters_(iters), warmup_(warmup) {}

  // Median ms of fn (which runs forward + backward), and the peak extra bytes of one run.
  std::pair<double, double> time(const std::function<void()>& fn) {
    double extra_mib = -1;
#ifdef ZTRAIN_WITH_CUDA
    if (dev_.is_cuda()) {
      fn();  // warm: algorithm choice, module load, allocator blocks
      ZT_CUDA_CHECK(cudaDeviceSynchronize());
      const size_t before = cuda::allocated_bytes(dev_.index);
      cuda::reset_peak_allocated(dev_.index);
      fn();
      ZT_CUDA_CHECK(cudaDeviceSynchronize());
      extra_mib = static_cast<double>(cuda::peak_allocated_bytes(dev_.index) - before) / (1 << 20);
      return {bench::median_ms(fn, warmup_, iters_), extra_mib};
    }
#endif
    for (int i = 0; i < warmup_; ++i) fn();
    std::vector<double> s;
    for (int i = 0; i < iters_; ++i) s.push_back(bench::wall_seconds(fn) * 1e3);
    return {bench::median(s), extra_mib};
  }

 private:
  Device dev_;
  int iters_, warmup_;
};

std::vector<Row> bench_shape(const Shape3& s, DType dtype, Device dev, const ops::CrossEntropyOptions& opt,
                             int64_t chunk_rows, int iters, int warmup) {
  Generator gen(1234);
  const Tensor h = Tensor::randn({s.n, s.c}, DType::f32, gen, 0, 1, dev).to(dtype);
  const Tensor w = Tensor::randn({s.v, s.c}, DType::f32, gen, 0, 1 / std::sqrt(static_cast<double>(s.c)), dev).to(dtype);
  std::vector<int64_t> tv(static_cast<size_t>(s.n));
  for (auto& y : tv) y = static_cast<int64_t>(gen.uniform() * static_cast<double>(s.v)) % s.v;
  const Tensor targets = Tensor::from_vector(tv, {s.n}, dev);

  RunOut last;
  auto unfused = [&] {
    Variable hv(h, true), wv(w, true);
    ops::CrossEntropyResult r = ops::cross_entropy(ops::linear(hv, wv), targets, opt);
    r.loss.backward();
    last = {r.loss.tensor(), hv.grad(), wv.grad()};
  };
  auto fused = [&] {
    Variable hv(h, true), wv(w, true);
    ops::CrossEntropyResult r = ops::linear_cross_entropy(hv, wv, targets, opt, chunk_rows);
    r.loss.backward();
    last = {r.loss.tensor(), hv.grad(), wv.grad()};
  };

  Bench bench(dev, iters, warmup);
  const double flops = 6.0 * static_cast<double>(s.n) * static_cast<double>(s.c) * static_cast<double>(s.v);
  std::vector<Row> rows;
  RunOut ref;
  for (const char* variant : {"unfused", "fused"}) {
    const auto [ms, extra] = bench.time(std::string(variant) == "fused" ? std::function<void()>(fused) : unfused);
    Row r;
    r.shape = s.str();
    r.dtype = dtype_name(dtype);
    r.variant = variant;
    r.median_ms = ms;
    r.tflops = flops / (ms * 1e-3) / 1e12;
    r.extra_mib = extra;
    r.chunk_rows = std::string(variant) == "fused"
                       ? (chunk_rows > 0 ? chunk_rows : ops::linear_cross_entropy_chunk_rows(s.n, s.v, dtype))
                       : 0;
    if (std::string(variant) == "unfused") {
      ref = last;
    } else {
      r.loss_rel = rel_diff(last.loss, ref.loss);
      r.dh_rel = rel_diff(last.dh, ref.dh);
      r.dw_rel = rel_diff(last.dw, ref.dw);
    }
    std::cerr << "  " << r.shape << " " << r.dtype << " " << variant << ": " << std::fixed << std::setprecision(3) << ms
              << " ms\n";
    rows.push_back(r);
    last = {};
  }
  return rows;
}

std::string fmt(double v, int digits) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(digits) << v;
  return o.str();
}
std::string sci(double v) {
  std::ostringstream o;
  o << std::scientific << std::setprecision(2) << v;
  return o.str();
}

std::string markdown(const std::vector<Row>& rows, const std::string& header) {
  std::ostringstream o;
  o << header << "\n\n";
  o << "| shape NxCxV | dtype | variant | chunk rows | median ms | TFLOP/s (6NCV) | extra MiB | loss rel diff | "
       "dhidden rel diff | dweight rel diff |\n";
  o << "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows)
    o << "| " << r.shape << " | " << r.dtype << " | " << r.variant << " | " << (r.chunk_rows ? std::to_string(r.chunk_rows) : "")
      << " | " << fmt(r.median_ms, 3) << " | " << fmt(r.tflops, 2) << " | "
      << (r.extra_mib < 0 ? std::string("n/a") : fmt(r.extra_mib, 1)) << " | "
      << (r.variant == "fused" ? sci(r.loss_rel) : "") << " | " << (r.variant == "fused" ? sci(r.dh_rel) : "")
      << " | " << (r.variant == "fused" ? sci(r.dw_rel) : "") << " |\n";
  return o.str();
}

nlohmann::json to_json(const std::vector<Row>& rows, const std::string& header) {
  nlohmann::json j = {{"header", header}, {"rows", nlohmann::json::array()}};
  for (const Row& r : rows)
    j["rows"].push_back({{"shape", r.shape}, {"dtype", r.dtype}, {"variant", r.variant}, {"chunk_rows", r.chunk_rows},
                         {"median_ms", r.median_ms}, {"tflops", r.tflops}, {"extra_mib", r.extra_mib},
                         {"loss_rel_diff", r.loss_rel}, {"dhidden_rel_diff", r.dh_rel}, {"dweight_rel_diff", r.dw_rel}});
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_linear_xent: the fused head (linear_cross_entropy) against head GEMM + loss + two GEMMs"};
  std::string device = "cuda", dtype_s = "bf16", out;
  std::string shapes_s = "16384x768x50304,8192x2048x128256,8192x4096x128256,8192x2304x256000";
  double z = 1e-4, e = 0.1, cap = 0;
  int64_t chunk_rows = 0;
  int iters = 10, warmup = 2;
  app.add_option("--device", device, "cpu | cuda (default cuda)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", dtype_s, "f32 | bf16 | f64 (default bf16)")->check(CLI::IsMember({"f32", "bf16", "f64"}));
  app.add_option("--shapes", shapes_s, "comma-separated NxCxV (default the four issue shapes)");
  app.add_option("--z-loss-weight", z, "z-loss weight (default 1e-4)");
  app.add_option("--label-smoothing", e, "label smoothing (default 0.1)");
  app.add_option("--logit-softcap", cap, "logit soft-cap (default 0: off)");
  app.add_option("--chunk-rows", chunk_rows, "fused: rows per chunk (default 0: the op's bound)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--iters", iters, "timed runs per variant; the median is reported (default 10)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "untimed runs first (default 2)")->check(CLI::Range(0, 1000));
  app.add_option("--out", out, "also write the table to this path (.json for JSON, else markdown)");
  return tool::run_tool("bench_linear_xent", app, argc, argv, [&] {
    Device dev = Device::cpu();
    if (device == "cuda") {
      bench::require_gpu("--device cuda: ");
      dev = Device::cuda(0);
    }
    ops::CrossEntropyOptions opt;
    opt.z_loss_weight = z;
    opt.label_smoothing = e;
    opt.logit_softcap = cap;
    const DType dtype = parse_dtype(dtype_s);
    std::vector<Row> rows;
    for (const Shape3& s : parse_shapes(shapes_s)) {
      std::vector<Row> r = bench_shape(s, dtype, dev, opt, chunk_rows, iters, warmup);
      rows.insert(rows.end(), r.begin(), r.end());
    }
    const std::string header = detail::cat("bench_linear_xent --device ", device, ": forward+backward, z-loss ", z,
                                           ", label smoothing ", e, ", logit softcap ", cap, ", mean, ", iters,
                                           " timed runs after ", warmup, " warm-up");
    const std::string table = markdown(rows, header);
    std::cout << table;
    if (!out.empty()) bench::write_out_file(out, bench::is_json_path(out) ? to_json(rows, header).dump(2) + "\n" : table);
    return 0;
  });
}
