// bench_step: times full training steps of a config on one GPU: the trainer's own step
// (trainers/training_step.h: forward, fused cross-entropy with z-loss, backward, global grad
// norm, clip, AdamW; grad_accum micro-batches from the config or --grad-accum), on synthetic
// tokens (uniform over the vocabulary; data loading is not what is measured), or with --data
// on the config's training shards through train's data loader (real text repeats tokens, whose
// gradient rows the embedding backward sums per row; and the loader's host time is then in
// the step). Random tokens stay below the clipping threshold, so their steps do not clip;
// clipping costs nothing of its own (AdamW applies the factor).
//
//   bench_step                                    configs/gpt_small.yaml, B = 16, T = 1024
//                                                 (3 warm-up steps, then 3 s of them: --warmup-s)
//   bench_step --batch-size 32 --steps 20 --profile --out runs/bench_step_b32.json
//   bench_step --set train.activation_checkpointing=block   (any config key: --set section.key=value)
//   bench_step --signals                          every step a log step (trainers/signals.h): the
//                                                 time a log step's signals add
//
// Prints tokens/s (median step), MFU against the bf16 dense peak (989 TFLOP/s on H100/H200;
// FLOPs per token 6 N + 6 L d T), peak device memory, the host's time per phase against the
// wall time, host<->device copies per step (each one a host synchronisation), and with
// --profile the device span of each phase next to its host time (a phase without host reads
// whose host time reaches its device span is CPU-bound), and the device time per op family and
// phase (CUDA events around each op; framework/cuda/op_profiler.h). Work outside the ops has
// families too: "cast" (dtype casts of weights and their gradients), "accumulate" (the
// autograd engine's gradient sums), "copy" / "fill" / "add_" / "scale_" (Tensor's own
// kernels: contiguous, clone, to, zeros, ...). A phase's "other" is its
// device span outside every range: idle gaps (launch overhead, host syncs) and unmarked work.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>

#include "framework/error.h"
#include "models/model.h"
#include "tools/bench_util.h"
#include "tools/tool_main.h"
#include "trainers/adamw.h"
#include "trainers/config.h"
#include "trainers/data/data_loader.h"
#include "trainers/model_state.h"
#include "trainers/parallel_context.h"
#include "trainers/training_step.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#include "framework/cuda/op_profiler.h"

// The benchmark itself: CUDA builds only (main says so in others).
namespace {

using Clock = std::chrono::steady_clock;

struct Bench {
  zt::Config cfg;
  int64_t B = 16, T = 1024;
  zt::DType compute = zt::DType::bf16;
  zt::ParallelContext par = zt::single_rank_context(zt::Device::cuda(0));
  std::unique_ptr<zt::Model> model;
  std::unique_ptr<zt::AdamW> adam;
  std::unique_ptr<zt::TrainingStep> runner;
  bool fused_head = false;  // loss.fused_head as resolved (--set loss.fused_head=on|off|auto)
  bool signals = false;     // --signals: every step a log step (the instability signals measured)
  zt::Generator data_gen{12345};
  std::unique_ptr<zt::data::DataLoader> loader;  // --data: train's loader over data.train
  std::map<std::string, double> phase_ms;       // profiled runs: device time per phase (event to event)
  std::map<std::string, double> phase_host_ms;  // unprofiled runs: host time per phase (issuing it, waits included)

  zt::Tensor random_tokens(int64_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& x : v) x = static_cast<int32_t>(data_gen.uniform() * static_cast<double>(cfg.model.vocab_size)) %
                          static_cast<int32_t>(cfg.model.vocab_size);
    return zt::Tensor::from_vector(v, {n});
  }

  // One optimizer step of the trainer (TrainingStep::run). With `profile`, events mark the
  // phases so the op ranges can be set against each phase's total; with grad_accum > 1 each
  // phase's time is summed over the micro-batches.
  double step(bool profile) {
    // (phase, device event, host time) at each phase boundary; "" closes the last phase.
    struct Mark {
      std::string phase;
      cudaEvent_t event = nullptr;
      Clock::time_point host;
    };
    std::vector<Mark> marks;
    auto phase = [&](const char* p) {
      Mark m{p, nullptr, Clock::now()};
      if (profile) {
        ZT_CUDA_CHECK(cudaEventCreate(&m.event));
        ZT_CUDA_CHECK(cudaEventRecord(m.event, 0));
      }
      marks.push_back(m);
      zt::cuda::profiler_set_phase(p);
    };
    auto next = [&] {
      if (loader) return loader->next();
      zt::data::Batch b;
      b.inputs = random_tokens(B * T).view({B, T});
      b.targets = random_tokens(B * T).view({B, T});
      return b;
    };
    const zt::StepMetrics m = runner->run(next, cfg.optim.lr, cfg.loss.z_loss_weight, false, phase, signals);
    if (profile && !marks.empty()) ZT_CUDA_CHECK(cudaEventSynchronize(marks.back().event));
    for (size_t i = 0; i + 1 < marks.size(); ++i) {
      if (profile) {
        float ms = 0;
        ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, marks[i].event, marks[i + 1].event));
        phase_ms[marks[i].phase] += ms;
      } else {
        phase_host_ms[marks[i].phase] +=
            std::chrono::duration<double, std::milli>(marks[i + 1].host - marks[i].host).count();
      }
    }
    for (auto& mk : marks)
      if (mk.event) cudaEventDestroy(mk.event);
    return m.loss;
  }
};
}  // namespace
#endif

int main(int argc, char** argv) {
  CLI::App app{"Time full training steps of a config (GPT-2 or llama family) on one GPU (tokens/s, MFU, peak memory, per-op breakdown)"};
  std::string config_path = "configs/gpt_small.yaml", out_path;
  std::vector<std::string> overrides;
  int64_t batch = 16, seq_len = 1024, steps = 10, warmup = 3, profile_steps = 3;
  std::string dtype = "bf16";
  bool profile = false;
  double peak_tflops = 989.0;
  app.add_option("--config", config_path, "YAML config (model, loss and optimizer settings)");
  app.add_option("--set", overrides, "override a config key: --set section.key=value")->take_all();
  int64_t grad_accum = 1;
  app.add_option("--batch-size", batch, "sequences per micro-batch");
  app.add_option("--grad-accum", grad_accum, "micro-batches per optimizer step");
  app.add_option("--seq-len", seq_len, "tokens per sequence");
  app.add_option("--dtype", dtype, "compute dtype: bf16 | f32");
  app.add_option("--steps", steps, "timed steps (median reported)");
  app.add_option("--warmup", warmup, "untimed steps first (GEMM tuning, attention plans)");
  double warmup_s = 3.0;
  app.add_option("--warmup-s", warmup_s,
                 "then untimed steps for this many seconds: under sustained load the card settles at a lower clock "
                 "(its power cap) within about a second, and that clock is the one train runs at");
  app.add_flag("--profile", profile, "also run --profile-steps steps with per-op CUDA events");
  app.add_option("--profile-steps", profile_steps, "steps in the profiled run");
  app.add_option("--peak-tflops", peak_tflops, "device peak for MFU");
  app.add_option("--out", out_path, "write the results as JSON here");
  bool real_data = false, signals = false;
  app.add_flag("--data", real_data, "batches from the config's data.train shards (train's loader), not random tokens");
  app.add_flag("--signals", signals,
               "every step a log step: also measures the instability signals (their cost = this run's step time "
               "minus a run without)");
  return zt::tool::run_tool("bench_step", app, argc, argv, [&]() -> int {
    zt::bench::require_gpu();
#ifdef ZTRAIN_WITH_CUDA
    ZT_CHECK(batch >= 1 && seq_len >= 1 && steps >= 1 && warmup >= 0 && warmup_s >= 0 && grad_accum >= 1,
             "bad --batch-size/--seq-len/--steps/--warmup/--warmup-s/--grad-accum");
    Bench b;
    b.cfg = zt::load_config(config_path, overrides);
    zt::validate_for_device(b.cfg, b.par.device);
    b.B = batch;
    b.T = seq_len;
    b.compute = zt::parse_dtype(dtype);
    b.cfg.model.seq_len = seq_len;  // the step's targets count seq_len tokens per sequence
    b.cfg.train.batch_size = batch;
    b.cfg.train.grad_accum = grad_accum;
    b.cfg.train.dtype = dtype;
    zt::Generator init(static_cast<uint64_t>(b.cfg.train.seed));
    b.model = zt::make_model(b.cfg.model, init, b.par.device);
    b.adam = zt::make_optimizer(b.cfg, *b.model, b.par.layout);
    b.fused_head = zt::fused_head_for_run(b.cfg, b.par.layout, b.compute, b.par.device);
    b.signals = signals;
    b.runner = std::make_unique<zt::TrainingStep>(b.cfg, *b.model, *b.adam, b.par, b.compute, b.fused_head);
    if (real_data) {
      zt::data::DataLoaderOptions d;
      d.shards = b.cfg.data.train;
      d.batch_size = batch;
      d.seq_len = seq_len;
      d.seed = static_cast<uint64_t>(b.cfg.train.seed);
      d.vocab_size = b.cfg.model.vocab_size;
      b.loader = std::make_unique<zt::data::DataLoader>(d);
    }

    const auto& m = b.cfg.model;
    const double flops_per_token = b.model->flops_per_token();
    const std::string recompute =
        m.activation_checkpointing == "none" ? "" : ", activation checkpointing " + m.activation_checkpointing;
    std::printf("bench_step: %s, %s%s%s, %lld layers, d_model %lld, %s params, B=%lld T=%lld grad_accum %lld, %s, "
                "z_loss %.1e, %s\n",
                config_path.c_str(), b.model->describe().c_str(), b.fused_head ? ", fused head" : "", recompute.c_str(),
                static_cast<long long>(m.n_layer), static_cast<long long>(m.d_model),
                zt::format_parameter_count(b.model->num_parameters()).c_str(), static_cast<long long>(batch),
                static_cast<long long>(seq_len), static_cast<long long>(grad_accum), dtype.c_str(),
                b.cfg.loss.z_loss_weight, real_data ? "tokens from data.train" : "random tokens");

    // Warm-up: `warmup` steps (the first ones tune the GEMMs and build the attention plans),
    // then `warmup_s` seconds of back-to-back steps, so the timed steps run at the clock a long
    // training run settles at, not the cold card's boost.
    for (int64_t i = 0; i < warmup; ++i) b.step(false);
    ZT_CUDA_CHECK(cudaDeviceSynchronize());
    const auto warm_start = Clock::now();
    auto warm_seconds = [&] { return std::chrono::duration<double>(Clock::now() - warm_start).count(); };
    int64_t warm_steps = warmup;
    while (warm_seconds() < warmup_s) {
      b.step(false);
      ++warm_steps;
    }
    ZT_CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("warm-up: %lld steps, the last %lld in %.1f s\n", static_cast<long long>(warm_steps),
                static_cast<long long>(warm_steps - warmup), warm_seconds());
    zt::cuda::reset_peak_allocated(0);
    const zt::cuda::MemoryStats before = zt::cuda::memory_stats(0);
    const zt::cuda::HostCopyCounts copies_before = zt::cuda::host_copy_counts();
    b.phase_host_ms.clear();
    std::vector<double> times;
    double loss = 0;
    for (int64_t i = 0; i < steps; ++i)
      times.push_back(zt::bench::wall_seconds([&] {
        loss = b.step(false);
        ZT_CUDA_CHECK(cudaDeviceSynchronize());
      }));
    const zt::cuda::MemoryStats after = zt::cuda::memory_stats(0);
    const zt::cuda::HostCopyCounts copies_after = zt::cuda::host_copy_counts();
    const double copies_to_host = static_cast<double>(copies_after.to_host - copies_before.to_host) / steps;
    const double copies_to_device = static_cast<double>(copies_after.to_device - copies_before.to_device) / steps;
    const double median = zt::bench::percentile(times, 0.5);
    const auto [fastest, slowest] = std::minmax_element(times.begin(), times.end());
    const double tokens = static_cast<double>(batch * seq_len * grad_accum);
    const double tok_s = tokens / median;
    const double mfu = flops_per_token * tok_s / (peak_tflops * 1e12);
    size_t free_b = 0, total_b = 0;
    ZT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    std::printf("step: median %.2f ms (min %.2f, max %.2f over %lld), loss %.4f\n", median * 1e3, *fastest * 1e3,
                *slowest * 1e3, static_cast<long long>(steps), loss);
    std::printf("tokens/s: %.0f   MFU: %.1f%% (%.3g FLOP/token, peak %.0f TFLOP/s)\n", tok_s, 100 * mfu,
                flops_per_token, peak_tflops);
    std::printf("memory: peak allocated %.2f GiB, peak reserved %.2f GiB, device in use %.2f GiB; cudaMalloc calls "
                "during timed steps: %lld\n",
                after.peak_allocated / 1073741824.0, after.peak_reserved / 1073741824.0,
                (total_b - free_b) / 1073741824.0, static_cast<long long>(after.cuda_mallocs - before.cuda_mallocs));
    // train's up-front estimate of the same step (a lower bound), to set beside the peak.
    const zt::MemoryEstimate estimate = zt::rank_training_memory(b.cfg, b.par.layout, b.compute, b.fused_head);
    std::printf("memory estimate (train's, a lower bound): %.2f GiB = %s; peak allocated / estimate %.2f\n",
                estimate.total() / 1073741824.0, estimate.describe().c_str(), after.peak_allocated / estimate.total());
    // Host time per phase: issuing its work plus any wait for the device inside it (the loss
    // phase reads the loss, optim reads the gradient norm). A phase without host reads (fwd,
    // bwd) whose host time reaches its device span (--profile) keeps the GPU waiting for the CPU.
    std::printf("host ms per step (timed steps, mean): ");
    nlohmann::json host_phases;
    for (const char* phase : {"fwd", "loss", "bwd", "optim"}) {
      const double ms = b.phase_host_ms[phase] / static_cast<double>(steps);
      std::printf("%s %.2f; ", phase, ms);
      host_phases[phase] = ms;
    }
    std::printf("wall %.2f (median)\nhost<->device copies per step (each one a host sync): %.1f to host, %.1f to "
                "device\n",
                median * 1e3, copies_to_host, copies_to_device);

    nlohmann::json out = {{"config", config_path}, {"batch_size", batch}, {"grad_accum", grad_accum},
                          {"seq_len", seq_len}, {"dtype", dtype},
                          {"activation_checkpointing", m.activation_checkpointing},
                          {"step_ms_median", median * 1e3}, {"step_ms_min", *fastest * 1e3},
                          {"tokens_per_s", tok_s}, {"mfu", mfu}, {"flops_per_token", flops_per_token},
                          {"peak_allocated_bytes", after.peak_allocated}, {"peak_reserved_bytes", after.peak_reserved},
                          {"memory_estimate_bytes", estimate.total()},
                          {"steady_state_cuda_mallocs", after.cuda_mallocs - before.cuda_mallocs}, {"loss", loss},
                          {"warmup_steps", warm_steps},
                          {"host_ms_per_phase", host_phases}, {"copies_to_host_per_step", copies_to_host},
                          {"copies_to_device_per_step", copies_to_device}};

    if (profile && profile_steps > 0) {
      zt::cuda::profiler_enable(true);
      zt::cuda::profiler_collect();  // start clean
      for (int64_t i = 0; i < profile_steps; ++i) b.step(true);
      const std::vector<zt::cuda::OpTime> ops = zt::cuda::profiler_collect();
      zt::cuda::profiler_enable(false);
      const double n = static_cast<double>(profile_steps);
      double total = 0;
      for (const auto& [phase, ms] : b.phase_ms) total += ms / n;
      std::map<std::string, double> covered;
      std::printf("\nper-op device time (mean of %lld profiled steps; device total %.2f ms/step vs %.2f ms wall)\n",
                  static_cast<long long>(profile_steps), total, median * 1e3);
      std::printf("| phase/op | ms/step | %% of device time | calls/step |\n|---|---|---|---|\n");
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& o : ops) {
        const std::string phase = o.name.substr(0, o.name.find('/'));
        covered[phase] += o.ms / n;
        std::printf("| %s | %.3f | %.1f | %.0f |\n", o.name.c_str(), o.ms / n, 100 * o.ms / n / total, o.count / n);
        rows.push_back({{"name", o.name}, {"ms", o.ms / n}, {"calls", o.count / n}});
      }
      double ranged = 0;
      for (const auto& [phase, ms] : b.phase_ms) {
        const double other = ms / n - covered[phase];
        ranged += covered[phase];
        std::printf("| %s/other (outside every range: idle gaps, unmarked work) | %.3f | %.1f | |\n", phase.c_str(),
                    other, 100 * other / total);
        rows.push_back({{"name", phase + "/other"}, {"ms", other}});
      }
      // Per phase: the host's time on it (timed steps, no profiling overhead) against the
      // device's span and the part of that span the device spent inside op ranges (busy).
      std::printf("\n| phase | host ms (timed steps) | device span ms | device in op ranges ms | device outside ranges ms |\n"
                  "|---|---|---|---|---|\n");
      nlohmann::json phases = nlohmann::json::array();
      for (const auto& [phase, ms] : b.phase_ms) {
        const double host = b.phase_host_ms[phase] / static_cast<double>(steps);
        std::printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", phase.c_str(), host, ms / n, covered[phase],
                    ms / n - covered[phase]);
        phases.push_back({{"phase", phase}, {"host_ms", host}, {"device_span_ms", ms / n},
                          {"device_ranged_ms", covered[phase]}});
      }
      std::printf("step: wall %.2f ms (timed steps, median), device span %.2f ms, device in op ranges %.2f ms\n",
                  median * 1e3, total, ranged);
      out["profile"] = rows;
      out["profile_phases"] = phases;
      out["profile_device_ms_per_step"] = total;
      out["profile_device_ranged_ms_per_step"] = ranged;
    }
    if (!out_path.empty()) {
      zt::bench::write_out_file(out_path, out.dump(2) + "\n");
    }
#endif
    return 0;
  });
}
