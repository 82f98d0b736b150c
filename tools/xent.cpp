// xent: golden-file front end to ops::cross_entropy and ops::linear_cross_entropy.
//
//   xent --logits L.npy --targets T.npy [--label-smoothing E] [--z-loss-weight Z]
//        [--ignore-index I] [--reduction mean|sum|none] [--num-classes C] [--logit-softcap C]
//        [--tp P] [--device cpu|cuda] [--dtype f32|bf16|f64] --out DIR
//   xent --hidden H.npy --weight W.npy --targets T.npy [--chunk-rows R] [the same flags] --out DIR
//
// --num-classes C: the logits' columns >= C are padding (left out of the loss, gradient 0).
// --logit-softcap C: every logit x enters the loss as C tanh(x / C) (0: off).
//
// --hidden/--weight: the fused head, logits = hidden weight^T never formed (hidden [N, C],
// weight [V, C]); writes DIR/loss.npy, lse.npy, z_loss.npy and, for mean and sum,
// grad_hidden.npy [N, C] and grad_weight.npy [V, C] (reduction none is forward only there).
// Under --tp P the weight's rows are split into P shards (rank 0 gathers grad_weight).
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
#include "ops/linear_cross_entropy.h"
#include "tools/tool_main.h"

namespace {

using namespace zt;

struct Args {
  std::string logits, hidden, weight, targets, out;
  double label_smoothing = 0, z_loss_weight = 0, logit_softcap = 0;
  int64_t chunk_rows = 0;  // --hidden: rows per chunk; 0: the op's default bound
  int64_t ignore_index = -100;
  int64_t num_classes = -1;  // -1: every column is a class
  std::string reduction = "mean", device = "cpu", dtype = "f32";
  int tp = 1;
  bool worker = false;  // set on the ranks that --tp starts
};

struct Inputs {
  Tensor logits;   // [N, V] f32/f64 as read (the --logits form)
  Tensor hidden;   // [N, C] and
  Tensor weight;   // [V, C] f32/f64 as read (the --hidden form)
  Tensor targets;  // [N] i32/i64
};

bool fused(const Args& a) { return !a.hidden.empty(); }

void check_float_matrix(const Tensor& t, const std::string& file, const char* what, const char* shape) {
  ZT_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, file, ": ", what, " must be f32 or f64, got ",
           dtype_name(t.dtype()));
  ZT_CHECK(t.dim() == 2, file, ": ", what, " must be ", shape, ", got shape ", shape_str(t.shape()));
}

// The checks both forms share: targets [N] i32/i64 beside `rows` ([N, ...] of `rows_file`),
// and a vocabulary of `vocab` `units` (logit columns or weight rows) that --tp and
// --num-classes must fit.
void check_targets_and_vocab(const Args& a, const Tensor& targets, const Tensor& rows, const char* rows_name,
                             int64_t vocab, const char* units, const std::string& vocab_file) {
  ZT_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, a.targets,
           ": targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  ZT_CHECK(targets.dim() == 1 && targets.size(0) == rows.size(0), a.targets, ": targets of shape ",
           shape_str(targets.shape()), " do not match ", rows_name, " of shape ", shape_str(rows.shape()),
           " (expected [", rows.size(0), "])");
  ZT_CHECK(vocab % a.tp == 0, "vocabulary of ", vocab, " ", units, " is not divisible by --tp ", a.tp);
  const bool columns = std::string(units) == "columns";
  ZT_CHECK(a.num_classes == -1 || (a.num_classes >= 1 && a.num_classes <= vocab), "--num-classes ", a.num_classes,
           ": expected -1 (every ", columns ? "column" : "row", ") or 1..", vocab, " (the ",
           columns ? "columns" : "rows", " of ", vocab_file, ")");
}

Inputs load_fused_inputs(const Args& a) {
  Inputs in;
  in.hidden = io::read_npy(a.hidden);
  in.weight = io::read_npy(a.weight);
  in.targets = io::read_npy(a.targets);
  check_float_matrix(in.hidden, a.hidden, "hidden", "[N, C]");
  check_float_matrix(in.weight, a.weight, "weight", "[V, C]");
  ZT_CHECK(in.weight.size(1) == in.hidden.size(1), a.weight, ": weight of shape ", shape_str(in.weight.shape()),
           " does not match hidden of shape ", shape_str(in.hidden.shape()), " (expected [V, ", in.hidden.size(1), "])");
  check_targets_and_vocab(a, in.targets, in.hidden, "hidden", in.weight.size(0), "weight rows", a.weight);
  return in;
}

Inputs load_inputs(const Args& a) {
  if (fused(a)) return load_fused_inputs(a);
  Inputs in{io::read_npy(a.logits), Tensor(), Tensor(), io::read_npy(a.targets)};
  check_float_matrix(in.logits, a.logits, "logits", "[N, V]");
  check_targets_and_vocab(a, in.targets, in.logits, "logits", in.logits.size(1), "columns", a.logits);
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

ops::CrossEntropyOptions loss_options(const Args& a, std::shared_ptr<ProcessGroup> group) {
  ops::CrossEntropyOptions opt;
  opt.label_smoothing = a.label_smoothing;
  opt.z_loss_weight = a.z_loss_weight;
  opt.ignore_index = a.ignore_index;
  opt.reduction = ops::parse_reduction(a.reduction);
  opt.num_classes = a.num_classes;
  opt.logit_softcap = a.logit_softcap;
  opt.group = std::move(group);
  return opt;
}

std::shared_ptr<ProcessGroup> rank_group(const Args& a, const RankInfo& info, Device device) {
  if (a.tp == 1) return nullptr;
  ZT_CHECK(info.world_size == a.tp, "--tp ", a.tp, " rank started in a world of ", info.world_size);
  return make_process_group("auto", info, make_store_from_env(), device);
}

void write_row_outputs(const std::filesystem::path& dir, const ops::CrossEntropyResult& r, DType out_dtype) {
  io::write_npy((dir / "loss.npy").string(), r.loss.tensor().to(out_dtype));
  io::write_npy((dir / "lse.npy").string(), r.lse.to(out_dtype));
  io::write_npy((dir / "z_loss.npy").string(), r.z_loss.to(out_dtype));
}

// The fused head on this rank's rows of the weight; rank 0 gathers grad_weight.
void run_fused_rank(const Args& a, const RankInfo& info, const Inputs& in, Device device, DType compute,
                    DType out_dtype) {
  const int64_t v_local = in.weight.size(0) / a.tp;
  const ops::CrossEntropyOptions opt = loss_options(a, rank_group(a, info, device));
  const bool grad = opt.reduction != ops::Reduction::none;
  Variable h(in.hidden.to(compute).to(device), grad);
  Variable w(in.weight.slice(0, info.rank * v_local, (info.rank + 1) * v_local).to(compute).contiguous().to(device),
             grad);
  ops::CrossEntropyResult r = ops::linear_cross_entropy(h, w, in.targets.to(device), opt, a.chunk_rows);
  r.check();
  Tensor dh, dw;
  if (grad) {
    r.loss.backward();
    dh = h.grad().to(out_dtype).contiguous();
    dw = w.grad().to(out_dtype).contiguous();
    if (opt.group) {  // [P, V/P, C] from every rank is [V, C] in row order
      Tensor gathered = Tensor::empty({a.tp, v_local, in.weight.size(1)}, out_dtype, device);
      opt.group->all_gather(dw, gathered);
      dw = gathered.view({a.tp * v_local, in.weight.size(1)});
    }
  }
  if (info.rank != 0) return;
  std::filesystem::create_directories(a.out);
  const std::filesystem::path dir(a.out);
  write_row_outputs(dir, r, out_dtype);
  if (grad) {
    io::write_npy((dir / "grad_hidden.npy").string(), dh);
    io::write_npy((dir / "grad_weight.npy").string(), dw);
  }
}

// One rank's share of the work (the only one without --tp): this rank's vocabulary shard.
void run_rank(const Args& a, const RankInfo& info) {
  const Inputs in = load_inputs(a);
  const Device device = pick_device(a, info);
  const DType compute = parse_dtype(a.dtype);
  const DType out_dtype = compute == DType::f64 ? DType::f64 : DType::f32;
  if (fused(a)) return run_fused_rank(a, info, in, device, compute, out_dtype);
  const int64_t n = in.logits.size(0), v_local = in.logits.size(1) / a.tp;

  const ops::CrossEntropyOptions opt = loss_options(a, rank_group(a, info, device));
  const std::shared_ptr<ProcessGroup>& group = opt.group;
  const Tensor shard = in.logits.slice(1, info.rank * v_local, (info.rank + 1) * v_local).to(compute).contiguous();
  Variable x(shard.to(device).clone(), true);
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
  write_row_outputs(dir, r, out_dtype);
  io::write_npy((dir / "grad.npy").string(), grad);
}

int run(const Args& a, const std::vector<std::string>& argv) {
  tool::usage_check(a.logits.empty() != a.hidden.empty(),
                    "give either --logits or --hidden with --weight (the fused head), not both or neither");
  tool::usage_check(a.hidden.empty() == a.weight.empty(), "--hidden and --weight go together");
  tool::usage_check(fused(a) || a.chunk_rows == 0, "--chunk-rows applies to --hidden/--weight (the fused head)");
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
  CLI::App app{"xent: cross-entropy of .npy logits (or hidden and head weight, fused) and targets, with gradients "
               "(golden files for ops::cross_entropy and ops::linear_cross_entropy)"};
  app.add_option("--logits", a.logits, "[N, V] f32 or f64 .npy");
  app.add_option("--hidden", a.hidden, "[N, C] f32 or f64 .npy: the fused head's input (with --weight, not --logits)");
  app.add_option("--weight", a.weight, "[V, C] f32 or f64 .npy: the fused head's weight (logits = hidden weight^T)");
  app.add_option("--chunk-rows", a.chunk_rows, "fused head: rows per chunk (default 0: the op's bound)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--targets", a.targets, "[N] i32 or i64 .npy")->required();
  app.add_option("--label-smoothing", a.label_smoothing, "e in [0, 1) (default 0)");
  app.add_option("--z-loss-weight", a.z_loss_weight, "z >= 0 (default 0)");
  app.add_option("--ignore-index", a.ignore_index, "target of rows to skip (default -100)");
  app.add_option("--reduction", a.reduction, "mean | sum | none (default mean)")
      ->check(CLI::IsMember({"mean", "sum", "none"}));
  app.add_option("--num-classes", a.num_classes,
                 "real classes: columns >= it are padding, left out of the loss with gradient 0 (default -1: all)");
  app.add_option("--logit-softcap", a.logit_softcap, "cap C: logits enter the loss as C tanh(x / C) (default 0: off)");
  app.add_option("--tp", a.tp, "vocab-parallel ranks (default 1)")->check(CLI::Range(1, 1024));
  app.add_option("--device", a.device, "cpu | cuda (default cpu)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", a.dtype, "compute dtype f32 | bf16 | f64 (default f32)")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}));
  app.add_option("--out", a.out, "output directory (created when missing)")->required();
  app.add_flag("--tp-worker", a.worker, "internal: this process is one rank of --tp")->group("");
  return tool::run_tool("xent", app, argc, argv, [&] { return run(a, std::vector<std::string>(argv, argv + argc)); });
}
