// xent: golden-file front end to ops::cross_entropy.
//
//   xent --logits L.npy --targets T.npy [--label-smoothing E] [--z-loss-weight Z]
//        [--ignore-index I] [--reduction mean|sum|none] [--num-classes C] [--tp P]
//        [--device cpu|cuda] [--dtype f32|bf16|f64] --out DIR
//
// --num-classes C: the logits' columns >= C are padding (left out of the loss, gradient 0).
//
// Writes DIR/loss.npy (scalar, or [N] for none), DIR/grad.npy ([N, V]: gradient of the
// returned loss w.r.t. the logits, seed 1, i.e. ones for none), DIR/lse.npy and
// DIR/z_loss.npy ([N]). Inputs: f32/f64 logits, i32/i64 targets; --dtype is the compute
// dtype; outputs are f32 (f64 with --dtype f64).
//
// --tp P splits the vocabulary into P equal shards and runs P ranks of this program (the
// local launcher, as `launch` does) through the real process-group path; rank 0 gathers the
// gradient and writes the files.
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "framework/autograd/variable.h"
#include "framework/device.h"
#include "framework/distributed/local_launcher.h"
#include "framework/distributed/process_group.h"
#include "framework/error.h"
#include "framework/io/npy.h"
#include "ops/cross_entropy.h"
#include "tools/tool_main.h"

namespace {

using namespace zt;

struct Args {
  std::string logits, targets, out;
  double label_smoothing = 0, z_loss_weight = 0;
  int64_t ignore_index = -100;
  int64_t num_classes = -1;  // -1: every column is a class
  std::string reduction = "mean", device = "cpu", dtype = "f32";
  int tp = 1;
  bool worker = false;  // set on the ranks that --tp starts
};

struct Inputs {
  Tensor logits;   // [N, V] f32/f64 as read
  Tensor targets;  // [N] i32/i64
};

Inputs load_inputs(const Args& a) {
  Inputs in{io::read_npy(a.logits), io::read_npy(a.targets)};
  ZT_CHECK(in.logits.dtype() == DType::f32 || in.logits.dtype() == DType::f64, a.logits,
           ": logits must be f32 or f64, got ", dtype_name(in.logits.dtype()));
  ZT_CHECK(in.logits.dim() == 2, a.logits, ": logits must be [N, V], got shape ", shape_str(in.logits.shape()));
  ZT_CHECK(in.targets.dtype() == DType::i32 || in.targets.dtype() == DType::i64, a.targets,
           ": targets must be i32 or i64, got ", dtype_name(in.targets.dtype()));
  ZT_CHECK(in.targets.dim() == 1 && in.targets.size(0) == in.logits.size(0), a.targets, ": targets of shape ",
           shape_str(in.targets.shape()), " do not match logits of shape ", shape_str(in.logits.shape()),
           " (expected [", in.logits.size(0), "])");
  ZT_CHECK(in.logits.size(1) % a.tp == 0, "vocabulary of ", in.logits.size(1), " columns is not divisible by --tp ",
           a.tp);
  ZT_CHECK(a.num_classes == -1 || (a.num_classes >= 1 && a.num_classes <= in.logits.size(1)), "--num-classes ",
           a.num_classes, ": expected -1 (every column) or 1..", in.logits.size(1), " (the columns of ", a.logits, ")");
  return in;
}

// --device cuda: a GPU for each of the ranks (NCCL refuses two ranks on one GPU, in its own
// words, deep inside its init).
void check_gpus(const Args& a) {
  if (a.device == "cpu") return;
  ZT_CHECK(cuda_available(), "--device cuda: no CUDA device available (this build or machine has none)");
  const int found = cuda_device_count();
  ZT_CHECK(found >= a.tp, "--tp ", a.tp, " --device cuda needs ", a.tp, " GPUs (one per rank), found ", found);
}

Device pick_device(const Args& a, const RankInfo& info) {
  check_gpus(a);
  if (a.device == "cpu") return Device::cpu();
  return Device::cuda(info.local_rank);
}

// One rank's share of the work (the only one without --tp): this rank's vocabulary shard.
void run_rank(const Args& a, const RankInfo& info) {
  const Inputs in = load_inputs(a);
  const Device device = pick_device(a, info);
  const DType compute = parse_dtype(a.dtype);
  const DType out_dtype = compute == DType::f64 ? DType::f64 : DType::f32;
  const int64_t n = in.logits.size(0), v_local = in.logits.size(1) / a.tp;

  std::shared_ptr<ProcessGroup> group;
  if (a.tp > 1) {
    ZT_CHECK(info.world_size == a.tp, "--tp ", a.tp, " rank started in a world of ", info.world_size);
    group = make_process_group("auto", info, make_store_from_env(), device);
  }
  const Tensor shard = in.logits.slice(1, info.rank * v_local, (info.rank + 1) * v_local).to(compute).contiguous();
  Variable x(shard.to(device).clone(), true);
  ops::CrossEntropyOptions opt;
  opt.label_smoothing = a.label_smoothing;
  opt.z_loss_weight = a.z_loss_weight;
  opt.ignore_index = a.ignore_index;
  opt.reduction = ops::parse_reduction(a.reduction);
  opt.num_classes = a.num_classes;
  opt.group = group;
  ops::CrossEntropyResult r = ops::cross_entropy(x, in.targets.to(device), opt);
  r.check();
  if (opt.reduction == ops::Reduction::none) r.loss.backward(Tensor::full({n}, 1.0, r.loss.dtype(), device));
  else r.loss.backward();

  Tensor grad = x.grad().to(out_dtype).contiguous();
  if (group) {
    // [P, N, V/P] from every rank, then columns back in vocabulary order: [N, P, V/P] -> [N, V].
    Tensor gathered = Tensor::empty({a.tp, n, v_local}, out_dtype, device);
    group->all_gather(grad, gathered);
    grad = gathered.transpose(0, 1).contiguous().view({n, a.tp * v_local});
  }
  if (info.rank != 0) return;
  std::filesystem::create_directories(a.out);
  const std::filesystem::path dir(a.out);
  io::write_npy((dir / "loss.npy").string(), r.loss.tensor().to(out_dtype));
  io::write_npy((dir / "grad.npy").string(), grad);
  io::write_npy((dir / "lse.npy").string(), r.lse.to(out_dtype));
  io::write_npy((dir / "z_loss.npy").string(), r.z_loss.to(out_dtype));
}

int run(const Args& a, const std::vector<std::string>& argv) {
  if (a.tp == 1 || a.worker) {
    run_rank(a, a.worker ? rank_info_from_env() : RankInfo{});
    return 0;
  }
  // The parent: check the inputs here, where the message is clearest, then start the ranks.
  check_gpus(a);
  load_inputs(a);
  LaunchOptions launch;
  launch.nproc = a.tp;
  launch.command = {current_executable()};
  launch.command.insert(launch.command.end(), argv.begin() + 1, argv.end());
  launch.command.push_back("--tp-worker");
  run_local_ranks(launch);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"xent: cross-entropy of .npy logits and targets, with gradient (golden files for ops::cross_entropy)"};
  app.add_option("--logits", a.logits, "[N, V] f32 or f64 .npy")->required();
  app.add_option("--targets", a.targets, "[N] i32 or i64 .npy")->required();
  app.add_option("--label-smoothing", a.label_smoothing, "e in [0, 1) (default 0)");
  app.add_option("--z-loss-weight", a.z_loss_weight, "z >= 0 (default 0)");
  app.add_option("--ignore-index", a.ignore_index, "target of rows to skip (default -100)");
  app.add_option("--reduction", a.reduction, "mean | sum | none (default mean)")
      ->check(CLI::IsMember({"mean", "sum", "none"}));
  app.add_option("--num-classes", a.num_classes,
                 "real classes: columns >= it are padding, left out of the loss with gradient 0 (default -1: all)");
  app.add_option("--tp", a.tp, "vocab-parallel ranks (default 1)")->check(CLI::Range(1, 1024));
  app.add_option("--device", a.device, "cpu | cuda (default cpu)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", a.dtype, "compute dtype f32 | bf16 | f64 (default f32)")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}));
  app.add_option("--out", a.out, "output directory (created when missing)")->required();
  app.add_flag("--tp-worker", a.worker, "internal: this process is one rank of --tp")->group("");
  return tool::run_tool("xent", app, argc, argv, [&] { return run(a, std::vector<std::string>(argv, argv + argc)); });
}
