// bench_xent: times the cross-entropy op (forward + backward, the gradient fused into the
// forward and written in place) and sets it beside the memory floor measured in the same run:
//
//   floor = (bytes of logits read once + bytes of gradient written once) / copy bandwidth
//
// where the copy bandwidth is (bytes read + bytes written) / time of a large buffer copy on
// the same device. Prints a table; --out FILE.md / FILE.json writes it for docs/.
//
// Devices: cpu (below), and cuda (bench_cuda(), further down): CUDA events, K rotating
// logits buffers refilled outside the timed region, the kernels alone (in place and out of
// place), the op with its backward, the two-read fallback kernel for comparison, and the
// extra device memory each takes.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "framework/autograd/variable.h"
#include "framework/error.h"
#include "framework/random.h"
#include "framework/tensor.h"
#include "ops/cross_entropy.h"
#include "tools/bench_util.h"
#include "tools/tool_main.h"

namespace {

using namespace zt;

struct Shape2 {
  int64_t rows, vocab;
};

std::vector<Shape2> parse_shapes(const std::string& list) {
  std::vector<Shape2> out;
  for (const std::string& item : tool::split_list(list)) {
    const size_t x = item.find('x');
    ZT_CHECK(x != std::string::npos, "--shapes: '", item, "' is not NxV (e.g. 2048x50304)");
    try {
      size_t used_n = 0, used_v = 0;
      const int64_t n = std::stoll(item.substr(0, x), &used_n);
      const int64_t v = std::stoll(item.substr(x + 1), &used_v);
      ZT_CHECK(used_n == x && used_v == item.size() - x - 1 && n > 0 && v > 0, "");
      out.push_back({n, v});
    } catch (const std::exception&) {
      ZT_FAIL("--shapes: '", item, "' is not NxV with positive integers (e.g. 2048x50304)");
    }
  }
  ZT_CHECK(!out.empty(), "--shapes: no shapes given");
  return out;
}

using bench::median;

// What differs between devices: how to copy a buffer and how to time a piece of work.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // Seconds for dst <- src (same size and device), as the device runs it.
  virtual double time_copy(Tensor& dst, const Tensor& src) = 0;
  // Seconds for fn(), which enqueues work on the device.
  virtual double time(const std::function<void()>& fn) = 0;
};

class CpuBackend : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  double time_copy(Tensor& dst, const Tensor& src) override {
    // Every thread copies its own slice, as the op's threads each own rows.
    char* d = static_cast<char*>(dst.raw_data());
    const char* s = static_cast<const char*>(src.raw_data());
    const size_t bytes = src.nbytes();
    return time([&] {
#pragma omp parallel
      {
        const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
        const size_t lo = bytes * t / nt, hi = bytes * (t + 1) / nt;
        std::memcpy(d + lo, s + lo, hi - lo);
      }
    });
  }
  double time(const std::function<void()>& fn) override { return bench::wall_seconds(fn); }
};

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return std::make_unique<CpuBackend>();
  ZT_FAIL("--device ", device, ": the generic backend is cpu only (cuda runs bench_cuda)");
}

struct Row {
  std::string shape, dtype;
  double median_ms, floor_ms, percent, gbps, copy_gbps;
  int iters;
};

Row bench_one(Backend& be, Shape2 s, DType dtype, const ops::CrossEntropyOptions& opt, int iters, int warmup) {
  Generator gen(1234);
  const Device dev = be.device();
  // A pristine copy refreshes the logits before each run, since the gradient overwrites
  // them; the refresh is the copy the floor is measured with.
  const Tensor pristine = Tensor::randn({s.rows, s.vocab}, dtype, gen, 0, 2, dev);
  Tensor logits = Tensor::empty(pristine.shape(), dtype, dev);
  std::vector<int64_t> tv(static_cast<size_t>(s.rows));
  for (auto& y : tv) y = static_cast<int64_t>(gen.uniform() * static_cast<double>(s.vocab)) % s.vocab;
  const Tensor targets = Tensor::from_vector(tv, {s.rows}, dev);

  std::vector<double> op_times, copy_times;
  for (int it = 0; it < warmup + iters; ++it) {
    const double copy_s = be.time_copy(logits, pristine);
    Variable x(logits, true);
    const double op_s = be.time([&] {
      ops::CrossEntropyResult r = ops::cross_entropy(x, targets, opt);
      r.loss.backward();
    });
    if (it >= warmup) {
      op_times.push_back(op_s);
      copy_times.push_back(copy_s);
    }
  }
  const double bytes = 2.0 * static_cast<double>(pristine.nbytes());  // logits read + gradient written
  const double copy_bw = 2.0 * static_cast<double>(pristine.nbytes()) / median(copy_times);
  Row r;
  r.shape = std::to_string(s.rows) + "x" + std::to_string(s.vocab);
  r.dtype = dtype_name(dtype);
  r.median_ms = median(op_times) * 1e3;
  r.floor_ms = bytes / copy_bw * 1e3;
  r.percent = 100.0 * r.floor_ms / r.median_ms;
  r.gbps = bytes / (r.median_ms * 1e-3) / 1e9;
  r.copy_gbps = copy_bw / 1e9;
  r.iters = iters;
  return r;
}

std::string fmt(double v, int prec) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(prec) << v;
  return s.str();
}

std::string markdown(const std::vector<Row>& rows, const std::string& device, const ops::CrossEntropyOptions& o) {
  std::ostringstream s;
  s << "bench_xent on " << device << " (forward + backward, gradient in place; z_loss_weight " << o.z_loss_weight
    << ", label_smoothing " << o.label_smoothing << ", " << omp_get_max_threads() << " threads)\n\n";
  s << "| shape | dtype | median ms | floor ms | % of floor | GB/s | copy GB/s | runs |\n";
  s << "|---|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows)
    s << "| " << r.shape << " | " << r.dtype << " | " << fmt(r.median_ms, 3) << " | " << fmt(r.floor_ms, 3) << " | "
      << fmt(r.percent, 1) << " | " << fmt(r.gbps, 1) << " | " << fmt(r.copy_gbps, 1) << " | " << r.iters << " |\n";
  return s.str();
}

nlohmann::json to_json(const std::vector<Row>& rows, const std::string& device, const ops::CrossEntropyOptions& o) {
  nlohmann::json j;
  j["device"] = device;
  j["threads"] = omp_get_max_threads();
  j["z_loss_weight"] = o.z_loss_weight;
  j["label_smoothing"] = o.label_smoothing;
  for (const Row& r : rows)
    j["rows"].push_back({{"shape", r.shape},
                         {"dtype", r.dtype},
                         {"median_ms", r.median_ms},
                         {"floor_ms", r.floor_ms},
                         {"percent_of_floor", r.percent},
                         {"gb_per_s", r.gbps},
                         {"copy_gb_per_s", r.copy_gbps},
                         {"runs", r.iters}});
  return j;
}

}  // namespace

// ---- CUDA (CUDA builds only: its headers and code) -------------------------------------
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#include "ops/cross_entropy_kernels.h"

namespace {

namespace xent = zt::ops::xent;

//
// Per shape, all on one device, timed with CUDA events on the default stream:
//   copy          cudaMemcpy device-to-device of the logits; bandwidth = (read + written) / time
//   fused         the op's kernels (row count, fused forward+backward, loss sums) on
//                 preallocated outputs, gradient in place: exactly the device work of
//                 cross_entropy() + backward() without the host-side allocations
//   fused-oop     the same, gradient into a separate buffer (logits untouched)
//   op            ops::cross_entropy + loss.backward() through autograd, in place
//   rowwise       `fused` with ZT_XENT_KERNEL=rowwise: the two-read fallback kernel
// In-place runs overwrite their logits: K buffers rotate, and each is refilled from a
// pristine copy right after its run (outside the timed region), so the buffer of the next run
// was last touched K-1 runs ago and the L2 (60 MB on an H200) holds none of it.

struct CudaRow {
  std::string shape, dtype, variant;
  double median_ms, p10_ms, p90_ms, floor_ms, percent, gbps, copy_gbps, extra_mib, extra_meminfo_mib;
  int iters;
};

using bench::percentile;

size_t free_device_bytes() {
  size_t free_b = 0, total_b = 0;
  ZT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

// Random logits without a host-side draw of N x V normals: a block of host draws (a length
// prime to V, so rows differ) tiled over the buffer on the device.
Tensor device_random_logits(int64_t rows, int64_t vocab, DType dtype, Generator& gen, Device dev) {
  const int64_t n = rows * vocab, block = std::min<int64_t>(n, 4000037);
  const Tensor pattern = Tensor::randn({block}, dtype, gen, 0, 2, dev);
  Tensor out = Tensor::empty({rows, vocab}, dtype, dev);
  const size_t es = dtype_size(dtype);
  for (int64_t at = 0; at < n; at += block) {
    const int64_t len = std::min(block, n - at);
    ZT_CUDA_CHECK(cudaMemcpy(static_cast<char*>(out.raw_data()) + at * es, pattern.raw_data(), len * es,
                             cudaMemcpyDeviceToDevice));
  }
  return out;
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

std::vector<CudaRow> bench_cuda_shape(Shape2 s, DType dtype, const ops::CrossEntropyOptions& opt, int iters,
                                      int warmup, const std::vector<std::string>& variants) {
  const Device dev = Device::cuda(0);
  Generator gen(1234);
  const Tensor pristine = device_random_logits(s.rows, s.vocab, dtype, gen, dev);
  const size_t bytes = pristine.nbytes();
  int l2 = 0;
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  // Enough buffers that those between two uses of one hold several times the L2; at least 2.
  const int k = static_cast<int>(std::max<int64_t>(2, std::min<int64_t>(16, (4 * static_cast<int64_t>(l2)) /
                                                                           static_cast<int64_t>(bytes) + 2)));
  std::vector<Tensor> bufs;
  for (int i = 0; i < k; ++i) bufs.push_back(pristine.clone());
  std::vector<int64_t> tv(static_cast<size_t>(s.rows));
  for (auto& y : tv) y = static_cast<int64_t>(gen.below(static_cast<uint64_t>(s.vocab)));
  const Tensor targets = Tensor::from_vector(tv, {s.rows}, dev);
  const DType acc = dtype == DType::f64 ? DType::f64 : DType::f32;
  bench::EventTimer ev;  // on the legacy default stream
  auto refill = [&](int b) {
    ZT_CUDA_CHECK(cudaMemcpy(bufs[b].raw_data(), pristine.raw_data(), bytes, cudaMemcpyDeviceToDevice));
  };

  // Copy bandwidth of this device, in this run.
  std::vector<double> copy_ms;
  for (int it = 0; it < warmup + iters; ++it) {
    const int b = it % k;
    ev.start();
    refill(b);
    const double ms = ev.stop_ms();
    if (it >= warmup) copy_ms.push_back(ms);
  }
  const double copy_bw = 2.0 * static_cast<double>(bytes) / (median(copy_ms) * 1e-3);
  const double floor_ms = 2.0 * static_cast<double>(bytes) / copy_bw * 1e3;

  // Preallocated outputs for the kernel-level variants.
  xent::Params p;
  p.rows = s.rows;
  p.vocab_local = p.vocab_global = s.vocab;
  p.label_smoothing = opt.label_smoothing;
  p.z_loss_weight = opt.z_loss_weight;
  p.ignore_index = opt.ignore_index;
  xent::Outputs out;
  out.row_loss = Tensor::empty({s.rows}, acc, dev);
  out.lse = Tensor::empty({s.rows}, acc, dev);
  out.z_row = Tensor::empty({s.rows}, acc, dev);
  const Tensor bad_target = Tensor::zeros({}, DType::i32, dev);
  out.bad_target = static_cast<int*>(bad_target.raw_data());
  out.grad_scale = Tensor::empty({}, acc, dev);
  Tensor count = Tensor::empty({}, DType::i64, dev), loss = Tensor::empty({}, acc, dev),
         ce_sum = Tensor::empty({}, acc, dev), z_sum = Tensor::empty({}, acc, dev);
  auto kernels = [&](const Tensor& x, const Tensor& grad) {
    out.grad = grad;
    xent::count_rows_cuda(targets, p.ignore_index, opt.reduction == ops::Reduction::mean, count, out.grad_scale);
    xent::fused_cuda(x, targets, p, out);
    xent::reduce_rows_cuda(out.row_loss, out.z_row, out.grad_scale, loss, ce_sum, z_sum);
  };

  std::vector<CudaRow> rows;
  for (const std::string& variant : variants) {
    std::unique_ptr<ScopedEnv> env;
    if (variant == "rowwise") env = std::make_unique<ScopedEnv>("ZT_XENT_KERNEL", "rowwise");
    Tensor oop_grad;
    if (variant == "fused-oop") oop_grad = Tensor::empty(pristine.shape(), dtype, dev);
    std::vector<double> ms;
    size_t peak_extra = 0, meminfo_extra = 0;
    for (int it = 0; it < warmup + iters; ++it) {
      const int b = it % k;
      const size_t before_alloc = cuda::allocated_bytes(0), before_free = free_device_bytes();
      cuda::reset_peak_allocated(0);
      size_t low_free = before_free;
      ev.start();
      if (variant == "fused" || variant == "rowwise") {
        kernels(bufs[b], bufs[b]);
      } else if (variant == "fused-oop") {
        kernels(bufs[b], oop_grad);
      } else {  // op
        Variable x(bufs[b], true);
        ops::CrossEntropyResult r = ops::cross_entropy(x, targets, opt);
        low_free = std::min(low_free, free_device_bytes());
        r.loss.backward();
        low_free = std::min(low_free, free_device_bytes());
      }
      const double t = ev.stop_ms();
      if (variant != "fused-oop") refill(b);
      if (it >= warmup) {
        ms.push_back(t);
        peak_extra = std::max(peak_extra, cuda::peak_allocated_bytes(0) - before_alloc);
        meminfo_extra = std::max(meminfo_extra, before_free - low_free);
      }
    }
    if (variant == "fused-oop") peak_extra = std::max(peak_extra, oop_grad.nbytes());  // held across runs
    const double med = median(ms);
    CudaRow r;
    r.shape = std::to_string(s.rows) + "x" + std::to_string(s.vocab);
    r.dtype = dtype_name(dtype);
    r.variant = variant;
    r.median_ms = med;
    r.p10_ms = percentile(ms, 0.1);
    r.p90_ms = percentile(ms, 0.9);
    r.floor_ms = floor_ms;
    r.percent = 100.0 * floor_ms / med;
    r.gbps = 2.0 * static_cast<double>(bytes) / (med * 1e-3) / 1e9;
    r.copy_gbps = copy_bw / 1e9;
    r.extra_mib = static_cast<double>(peak_extra) / (1 << 20);
    r.extra_meminfo_mib = static_cast<double>(meminfo_extra) / (1 << 20);
    r.iters = iters;
    rows.push_back(r);
    std::cerr << "  " << r.shape << " " << r.dtype << " " << variant << ": " << fmt(med, 4) << " ms\n";
  }
  return rows;
}

std::string cuda_header(const ops::CrossEntropyOptions& o) {
  cudaDeviceProp prop{};
  ZT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::ostringstream s;
  s << "bench_xent on " << prop.name << " (" << prop.multiProcessorCount << " SMs, " << prop.l2CacheSize / (1 << 20)
    << " MiB L2, " << prop.totalGlobalMem / (1 << 20) << " MiB), forward + backward; z_loss_weight "
    << o.z_loss_weight << ", label_smoothing " << o.label_smoothing << ", reduction mean\n";
  return s.str();
}

std::string cuda_markdown(const std::vector<CudaRow>& rows, const std::string& header) {
  std::ostringstream s;
  s << header << "\n";
  s << "| shape | dtype | variant | median ms | p10-p90 ms | floor ms | % of floor | GB/s | copy GB/s | extra MiB "
       "(allocator) | extra MiB (cudaMemGetInfo) | runs |\n";
  s << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const CudaRow& r : rows)
    s << "| " << r.shape << " | " << r.dtype << " | " << r.variant << " | " << fmt(r.median_ms, 4) << " | "
      << fmt(r.p10_ms, 4) << "-" << fmt(r.p90_ms, 4) << " | " << fmt(r.floor_ms, 4) << " | " << fmt(r.percent, 1)
      << " | " << fmt(r.gbps, 0) << " | " << fmt(r.copy_gbps, 0) << " | " << fmt(r.extra_mib, 1) << " | "
      << fmt(r.extra_meminfo_mib, 1) << " | " << r.iters << " |\n";
  return s.str();
}

nlohmann::json cuda_json(const std::vector<CudaRow>& rows, const std::string& header) {
  nlohmann::json j;
  j["header"] = header;
  for (const CudaRow& r : rows)
    j["rows"].push_back({{"shape", r.shape},          {"dtype", r.dtype},          {"variant", r.variant},
                         {"median_ms", r.median_ms},  {"p10_ms", r.p10_ms},        {"p90_ms", r.p90_ms},
                         {"floor_ms", r.floor_ms},    {"percent_of_floor", r.percent}, {"gb_per_s", r.gbps},
                         {"copy_gb_per_s", r.copy_gbps}, {"extra_mib", r.extra_mib},
                         {"extra_meminfo_mib", r.extra_meminfo_mib}, {"runs", r.iters}});
  return j;
}
}  // namespace
#endif  // ZTRAIN_WITH_CUDA

int main(int argc, char** argv) {
  CLI::App app{"bench_xent: cross-entropy forward+backward against the memory-copy floor"};
  std::string device = "cpu", dtype_s = "f32", shapes_s, out;
  double z = 1e-4, e = 0.1;
  int iters = 20, warmup = 3;
  std::string variants_s = "fused,fused-oop,op,rowwise";
  app.add_option("--device", device, "cpu | cuda (default cpu)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", dtype_s, "f32 | bf16 | f64 (default f32 on cpu, bf16 on cuda)")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}));
  app.add_option("--shapes", shapes_s,
                 "comma-separated NxV (default 2048x50304 on cpu, 8192x50304,16384x128256 on cuda)");
  app.add_option("--variants", variants_s, "cuda: comma-separated fused, fused-oop, op, rowwise (default all)");
  app.add_option("--z-loss-weight", z, "z-loss weight (default 1e-4)");
  app.add_option("--label-smoothing", e, "label smoothing (default 0.1)");
  app.add_option("--iters", iters, "timed runs per shape; the median is reported (default 20)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "untimed runs first (default 3)")->check(CLI::Range(0, 1000));
  app.add_option("--out", out, "also write the table to this path (.json for JSON, else markdown)");
  return tool::run_tool("bench_xent", app, argc, argv, [&] {
    if (shapes_s.empty()) shapes_s = device == "cpu" ? "2048x50304" : "8192x50304,16384x128256";
    ops::CrossEntropyOptions opt;
    opt.z_loss_weight = z;
    opt.label_smoothing = e;
    opt.reduction = ops::Reduction::mean;
    opt.inplace_grad = true;
    if (device == "cuda") {
      bench::require_gpu("--device cuda: ");
#ifdef ZTRAIN_WITH_CUDA
      if (app.count("--dtype") == 0) dtype_s = "bf16";
      if (app.count("--iters") == 0) iters = 50;
      if (app.count("--warmup") == 0) warmup = 5;
      std::vector<std::string> variants;
      for (const std::string& v : tool::split_list(variants_s))
        if (!v.empty()) {
          ZT_CHECK(v == "fused" || v == "fused-oop" || v == "op" || v == "rowwise", "--variants: unknown '", v,
                   "' (expected fused, fused-oop, op, rowwise)");
          variants.push_back(v);
        }
      std::vector<CudaRow> rows;
      for (const Shape2& s : parse_shapes(shapes_s)) {
        std::vector<CudaRow> r = bench_cuda_shape(s, parse_dtype(dtype_s), opt, iters, warmup, variants);
        rows.insert(rows.end(), r.begin(), r.end());
      }
      const std::string header = cuda_header(opt);
      const std::string table = cuda_markdown(rows, header);
      std::cout << table;
      if (!out.empty())
        bench::write_out_file(out, bench::is_json_path(out) ? cuda_json(rows, header).dump(2) + "\n" : table);
#endif
      return 0;
    }
    auto be = make_backend(device);
    std::vector<Row> rows;
    for (const Shape2& s : parse_shapes(shapes_s)) rows.push_back(bench_one(*be, s, parse_dtype(dtype_s), opt, iters, warmup));
    const std::string table = markdown(rows, device, opt);
    std::cout << table;
    if (!out.empty())
      bench::write_out_file(out, bench::is_json_path(out) ? to_json(rows, device, opt).dump(2) + "\n" : table);
    return 0;
  });
}
