// bench_gemm: times every matrix product of one GPT-2-small (configs/gpt_small.yaml) training
// step on one GPU, each issued exactly as the ops issue it (ops/matmul_kernels.h, which calls
// zt::cuda::gemm): the linear forward with the bias epilogue (linear_forward_cuda; the MLP's fc
// product with GELU_AUX_BIAS), dX (gemm_cuda; the MLP's d gelu product with DGELU), dW and db
// (the packed column reduction, or the bias-gradient epilogue with ZT_DB_EPILOGUE=1), bf16
// operands and outputs as in the bf16 model, row-major, rows = B * T.
//
//   bench_gemm                              rows 16384 (B = 16, T = 1024), median of 20 runs
//   bench_gemm --rows 32768 --iters 50 --out runs/bench_gemm.json
//
// Per product: milliseconds with the algorithm tuning off (cuBLASLt's first heuristic choice)
// and on (the fastest of its candidates, framework/cuda/blas.h), TFLOP/s and % of the ceiling
// (a --ceiling^3 bf16 product, tuned, measured in the same run), and the algorithm picked.
// Then the summed time of one step's products (every linear x --layers, plus the LM head at
// 50257 or at 50304 columns). Rows marked "info" (the other way of issuing a product, under the
// other setting of a switch; the db reduction alone) are not in the sums. CUDA events around each run; --warmup untimed
// runs first (the tuned plan is timed there). Operands are random bf16 (a random block tiled
// over each buffer: filling 800M values on the host would take longer than the benchmark) and
// stay the same between runs, so small products may run partly from L2.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "framework/device.h"
#include "framework/error.h"
#include "framework/random.h"
#include "framework/tensor.h"
#include "tools/bench_util.h"
#include "tools/tool_main.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/blas.h"
#include "ops/matmul_kernels.h"
#include "ops/reduce_kernels.h"

// The benchmark itself: CUDA builds only (main says so in others).
namespace {

using zt::DType;
using zt::Shape;
using zt::Tensor;

const zt::Device kGpu = zt::Device::cuda(0);

// A bf16 device tensor of random normal(0, std) values: a random block of an odd length made
// on the host, tiled over the buffer with device copies (so rows do not repeat in step).
Tensor random_bf16(const Shape& shape, double std, zt::Generator& gen) {
  constexpr int64_t kBlock = (int64_t{1} << 20) + 7;
  Tensor t = Tensor::empty(shape, DType::bf16, kGpu);
  const int64_t n = t.numel();
  const Tensor block = Tensor::randn({std::min(n, kBlock)}, DType::bf16, gen, 0.0, std, kGpu);
  auto* dst = static_cast<char*>(t.raw_data());
  for (int64_t off = 0; off < n; off += kBlock) {
    const int64_t len = std::min(kBlock, n - off);
    ZT_CUDA_CHECK(cudaMemcpyAsync(dst + off * 2, block.raw_data(), static_cast<size_t>(len) * 2,
                                  cudaMemcpyDeviceToDevice, zt::cuda::current_stream()));
  }
  ZT_CUDA_CHECK(cudaStreamSynchronize(zt::cuda::current_stream()));
  return t;
}

using zt::bench::median_ms;

struct Product {
  std::string name;    // "qkv fwd+bias"
  std::string shape;   // "M x N x K" of the product as issued
  double flops = 0;    // 2 M N K; 0 for the reduction
  int64_t per_step = 0;  // times one step issues it; 0: information only
  std::string group;   // "" (every step), "head50257" or "head50304": which step sum it joins
  std::function<void()> run;
  std::string note;
  double untuned_ms = 0, tuned_ms = 0;
  zt::cuda::GemmChoice choice;
};

std::string mnk(int64_t m, int64_t n, int64_t k) {
  return std::to_string(m) + " x " + std::to_string(n) + " x " + std::to_string(k);
}

double flops_of(int64_t m, int64_t n, int64_t k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

struct Linear {
  std::string name;
  int64_t out, in;
  bool bias;
};

// The tensors of one linear layer's products; kept alive for the whole run.
struct LinearBuffers {
  Tensor x, w, b, y, g, dx, dw, db, pre;  // pre: the MLP's pre-activation (fc, fc_proj)
};
}  // namespace
#endif

int main(int argc, char** argv) {
  CLI::App app{"Time every matrix product of one GPT-2-small training step through the ops' cuBLASLt calls"};
  int64_t rows = 16384, layers = 12, d_model = 768, vocab = 50257, vocab_padded = 50304, ceiling = 8192;
  int iters = 20, warmup = 5;
  std::string out_path;
  app.add_option("--rows", rows, "rows of every activation: batch x sequence length (16 x 1024)");
  app.add_option("--layers", layers, "transformer blocks per step (each issues every linear's products once)");
  app.add_option("--d-model", d_model, "model width (qkv 3d, fc 4d)");
  app.add_option("--vocab", vocab, "LM head columns as the model computes them today");
  app.add_option("--vocab-padded", vocab_padded, "LM head columns when padded to a multiple of 64");
  app.add_option("--ceiling", ceiling, "size n of the n x n x n bf16 product measured as the ceiling");
  app.add_option("--iters", iters, "timed runs per product and setting (median reported)");
  app.add_option("--warmup", warmup, "untimed runs first (the tuned plan is made there)");
  app.add_option("--out", out_path, "also write the results as JSON here");
  return zt::tool::run_tool("bench_gemm", app, argc, argv, [&]() -> int {
    zt::bench::require_gpu();
#ifdef ZTRAIN_WITH_CUDA
    ZT_CHECK(rows >= 1 && layers >= 1 && d_model >= 1 && vocab >= 1 && vocab_padded >= 1 && ceiling >= 1,
             "--rows, --layers, --d-model, --vocab, --vocab-padded and --ceiling must be >= 1");
    ZT_CHECK(iters >= 1 && warmup >= 1, "--iters and --warmup must be >= 1, got ", iters, " and ", warmup);
    const bool tuning_default = zt::cuda::gemm_tuning();  // reads ZT_GEMM_TUNE; the table shows both anyway
    zt::Generator gen(20261130);
    cudaDeviceProp prop{};
    ZT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("bench_gemm: %s, rows %lld, d_model %lld, %lld layers, vocab %lld / %lld, bf16, median of %d "
                "(warm-up %d)\n",
                prop.name, static_cast<long long>(rows), static_cast<long long>(d_model),
                static_cast<long long>(layers), static_cast<long long>(vocab), static_cast<long long>(vocab_padded),
                iters, warmup);

    std::vector<Product> products;
    std::deque<LinearBuffers> buffers;  // stable addresses: the products' lambdas point into it
    const int64_t R = rows, C = d_model;

    // The ceiling: one large square bf16 product.
    Tensor ca = random_bf16({ceiling, ceiling}, 1.0, gen), cb = random_bf16({ceiling, ceiling}, 1.0, gen);
    Tensor cc = Tensor::empty({ceiling, ceiling}, DType::bf16, kGpu);
    Product ceil_p{"ceiling", mnk(ceiling, ceiling, ceiling), flops_of(ceiling, ceiling, ceiling), 0, "",
                   [&] { zt::ops::gemm_cuda(ca, cb, cc, {1, ceiling, ceiling, ceiling, false, false}); }, ""};

    // The block's four linears (x12), then the LM head (tied wte, no bias) at both widths.
    const std::vector<Linear> linears = {{"qkv", 3 * C, C, true},
                                         {"attn_proj", C, C, true},
                                         {"fc", 4 * C, C, true},
                                         {"fc_proj", C, 4 * C, true},
                                         {"head" + std::to_string(vocab), vocab, C, false},
                                         {"head" + std::to_string(vocab_padded), vocab_padded, C, false}};
    // Each product as the step issues it under the current switches (ZT_MLP_EPILOGUES,
    // ZT_DB_EPILOGUE); the other way of issuing it follows as an "info" row.
    const bool mlp_epilogues = zt::ops::mlp_epilogues_enabled(), db_epilogue = zt::ops::db_epilogue_preferred();
    for (const Linear& l : linears) {
      const bool head = !l.bias;
      const int64_t per_step = head ? 1 : layers;
      const std::string group = head ? l.name : "";
      LinearBuffers& b = buffers.emplace_back();
      b.x = random_bf16({R, l.in}, 1.0, gen);
      b.w = random_bf16({l.out, l.in}, 0.02, gen);
      b.g = random_bf16({R, l.out}, 1e-3, gen);
      b.y = Tensor::empty({R, l.out}, DType::bf16, kGpu);
      b.dx = Tensor::empty({R, l.in}, DType::bf16, kGpu);
      b.dw = Tensor::empty({l.out, l.in}, DType::bf16, kGpu);
      if (l.bias) {
        b.b = random_bf16({l.out}, 0.02, gen);
        b.db = Tensor::empty({l.out}, DType::bf16, kGpu);
      }
      LinearBuffers* p = &b;
      const int64_t out = l.out, in = l.in;
      auto add = [&](const std::string& name, int64_t m, int64_t n, int64_t k, bool in_step, std::function<void()> run,
                     std::string note) {
        products.push_back({l.name + " " + name, mnk(m, n, k), flops_of(m, n, k), in_step ? per_step : 0,
                            in_step ? group : "", std::move(run), in_step ? std::move(note) : "info: " + note});
      };
      auto plain_fwd = [p] { zt::ops::linear_forward_cuda(p->x, p->w, p->b, p->y); };
      auto plain_dx = [p, R, in, out] { zt::ops::gemm_cuda(p->g, p->w, p->dx, {1, R, in, out, false, false}); };
      const std::string fwd = l.bias ? "fwd+bias" : "fwd";
      if (l.name == "fc") {  // the MLP's first product: GELU_AUX_BIAS also writes gelu(pre)
        b.pre = Tensor::empty({R, out}, DType::bf16, kGpu);
        add(fwd + "+gelu", R, out, in, mlp_epilogues, [p] {
          ZT_CHECK(zt::ops::linear_gelu_forward_cuda(p->x, p->w, p->b, p->y, p->pre), "no GELU_AUX_BIAS epilogue");
        }, "GELU_AUX_BIAS epilogue");
        add(fwd, R, out, in, !mlp_epilogues, plain_fwd, "then the GELU kernel (ZT_MLP_EPILOGUES=0)");
      } else {
        add(fwd, R, out, in, true, plain_fwd, "");
      }
      if (l.name == "fc_proj") {  // d gelu(pre): the DGELU epilogue applies gelu'(pre) as it writes dX
        b.pre = random_bf16({R, in}, 1.0, gen);
        add("dX+dgelu", R, in, out, mlp_epilogues, [p] {
          ZT_CHECK(zt::ops::gelu_input_grad_cuda(p->g, p->w, p->pre, p->dx), "no DGELU epilogue");
        }, "DGELU epilogue");
        add("dX", R, in, out, !mlp_epilogues, plain_dx, "then the GELU backward kernel (ZT_MLP_EPILOGUES=0)");
      } else {
        add("dX", R, in, out, true, plain_dx, "");
      }
      if (!l.bias) {
        add("dW", out, in, R, true, [p] { (void)zt::ops::linear_weight_grad_cuda(p->g, p->x, p->dw, p->db); }, "");
        continue;
      }
      // db as LinearNode issues it: the packed column reduction after dW, or (ZT_DB_EPILOGUE=1)
      // cuBLASLt's bias-gradient epilogue on the dW product.
      add("dW+db", out, in, R, !db_epilogue, [p, R, in, out] {
        zt::ops::gemm_cuda(p->g, p->x, p->dw, {1, out, in, R, true, false});
        (void)zt::ops::sum_rows_cuda(p->g, out);
      }, "dW, then the packed column reduction");
      const bool fused = zt::ops::linear_weight_grad_cuda(b.g, b.x, b.dw, b.db);
      add("dW+db", out, in, R, db_epilogue, [p, out] {
        if (!zt::ops::linear_weight_grad_cuda(p->g, p->x, p->dw, p->db)) (void)zt::ops::sum_rows_cuda(p->g, out);
      }, fused ? "db fused (BGRADB, ZT_DB_EPILOGUE=1)" : "db NOT fused: dW, then sum_rows");
      products.push_back({l.name + " db sum_rows", std::to_string(R) + " x " + std::to_string(out), 0, 0, "",
                          [p, out] { (void)zt::ops::sum_rows_cuda(p->g, out); }, "info: the reduction alone"});
    }

    auto measure = [&](Product& pr) {
      zt::cuda::set_gemm_tuning(false);
      pr.untuned_ms = median_ms(pr.run, warmup, iters);
      zt::cuda::set_gemm_tuning(true);
      pr.tuned_ms = median_ms(pr.run, warmup, iters);
      pr.choice = zt::cuda::last_gemm_choice();
    };
    measure(ceil_p);
    for (Product& pr : products) measure(pr);
    zt::cuda::set_gemm_tuning(tuning_default);
    const double ceiling_tflops = ceil_p.flops / (ceil_p.tuned_ms * 1e-3) / 1e12;

    auto tflops = [](double flops, double ms) { return flops > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0; };
    std::printf("\nceiling: %s bf16, untuned %.3f ms, tuned %.3f ms = %.1f TFLOP/s (algorithm %d of %d)\n\n",
                ceil_p.shape.c_str(), ceil_p.untuned_ms, ceil_p.tuned_ms, ceiling_tflops, ceil_p.choice.chosen,
                ceil_p.choice.candidates);
    std::printf("| product | M x N x K | per step | untuned ms | tuned ms | untuned TFLOP/s | tuned TFLOP/s | %% of "
                "ceiling (tuned) | algorithm (of candidates) | note |\n|---|---|---|---|---|---|---|---|---|---|\n");
    nlohmann::json jrows = nlohmann::json::array();
    for (const Product& pr : products) {
      const double tu = tflops(pr.flops, pr.untuned_ms), tt = tflops(pr.flops, pr.tuned_ms);
      if (pr.flops > 0)
        std::printf("| %s | %s | %lld | %.4f | %.4f | %.1f | %.1f | %.1f | %d of %d | %s |\n", pr.name.c_str(),
                    pr.shape.c_str(), static_cast<long long>(pr.per_step), pr.untuned_ms, pr.tuned_ms, tu, tt,
                    100 * tt / ceiling_tflops, pr.choice.chosen, pr.choice.candidates, pr.note.c_str());
      else
        std::printf("| %s | %s | %lld | %.4f | %.4f | - | - | - | - | %s |\n", pr.name.c_str(), pr.shape.c_str(),
                    static_cast<long long>(pr.per_step), pr.untuned_ms, pr.tuned_ms, pr.note.c_str());
      jrows.push_back({{"name", pr.name}, {"shape", pr.shape}, {"flops", pr.flops}, {"per_step", pr.per_step},
                       {"group", pr.group}, {"untuned_ms", pr.untuned_ms}, {"tuned_ms", pr.tuned_ms},
                       {"tuned_tflops", tt}, {"untuned_tflops", tu}, {"note", pr.note}});
      if (pr.flops > 0) {
        jrows.back()["algorithm"] = pr.choice.chosen;
        jrows.back()["candidates"] = pr.choice.candidates;
      }
    }

    std::printf("\none step's products (%lld layers x 4 linears x fwd, dX, dW+db; plus the LM head):\n",
                static_cast<long long>(layers));
    std::printf("| LM head | products | untuned ms | tuned ms | FLOP | untuned TFLOP/s | tuned TFLOP/s |\n"
                "|---|---|---|---|---|---|---|\n");
    nlohmann::json jsteps = nlohmann::json::array();
    for (const std::string head : {"head" + std::to_string(vocab), "head" + std::to_string(vocab_padded)}) {
      double u = 0, t = 0, f = 0;
      int64_t count = 0;
      for (const Product& pr : products)
        if (pr.per_step > 0 && (pr.group.empty() || pr.group == head)) {
          u += static_cast<double>(pr.per_step) * pr.untuned_ms;
          t += static_cast<double>(pr.per_step) * pr.tuned_ms;
          f += static_cast<double>(pr.per_step) * pr.flops;
          count += pr.per_step;
        }
      std::printf("| %s | %lld | %.2f | %.2f | %.3g | %.1f | %.1f |\n", head.c_str(), static_cast<long long>(count), u,
                  t, f, tflops(f, u), tflops(f, t));
      jsteps.push_back({{"head", head}, {"products", count}, {"untuned_ms", u}, {"tuned_ms", t}, {"flops", f}});
    }
    const zt::cuda::GemmPlanStats stats = zt::cuda::gemm_plan_stats();
    std::printf("\nplans: %lld made, %lld tuned by timing\n", static_cast<long long>(stats.plans),
                static_cast<long long>(stats.tuned));

    if (!out_path.empty()) {
      nlohmann::json out = {{"device", prop.name},
                            {"rows", rows},
                            {"layers", layers},
                            {"d_model", d_model},
                            {"iters", iters},
                            {"ceiling", {{"n", ceiling},
                                         {"untuned_ms", ceil_p.untuned_ms},
                                         {"tuned_ms", ceil_p.tuned_ms},
                                         {"tuned_tflops", ceiling_tflops}}},
                            {"products", jrows},
                            {"step", jsteps}};
      zt::bench::write_out_file(out_path, out.dump(2) + "\n");
    }
#endif
    return 0;
  });
}
