#pragma once
// The training loop. One step:
//
//   for each of grad_accum micro-batches:
//     DataLoader -> (inputs, targets) -> Model::loss (models/model.h) -> logits [B*T, padded V]
//     -> ops::cross_entropy (num_classes V, z-loss weight of this step, label smoothing) -> loss
//     -> backward(1 / grad_accum)            gradients accumulate in the parameters
//   global grad norm -> non-finite? stop (or skip the update) -> clip -> AdamW(lr of this step)
//   -> metrics.jsonl record, progress line; evaluation and checkpoint when due
//
// Everything that decides the numbers (init, data order, dropout) is seeded from train.seed
// and saved in checkpoints, so on the CPU a resumed run writes the same metrics as an
// uninterrupted one, bit for bit (timing fields aside).
#include <cstdint>
#include <cstdio>
#include <string>

#include "trainers/config.h"

namespace zt {

struct TrainOptions {
  bool resume = false;     // continue from the newest checkpoint in log.out_dir
  bool overwrite = false;  // start fresh in a log.out_dir that holds a previous run
  std::FILE* out = stdout;  // progress and events
  int terminal = -1;        // 1: in-place progress line; 0: plain lines; -1: detect
  // Stop after this many steps of this invocation (tests simulate an interruption); 0 = no limit.
  int64_t stop_after = 0;
};

struct TrainSummary {
  int64_t first_step = 0;  // steps already done when this invocation started (resume)
  int64_t last_step = 0;   // steps done when it returned
  double last_loss = 0;
  double first_val_loss = 0;  // NaN when this invocation did not evaluate at step 0
  double last_val_loss = 0;
  double seconds = 0;
  // Non-zero: the run stopped early on this signal (SIGTERM, SIGUSR1) after checkpointing
  // last_step (trainers/preemption.h); every rank reports the same signal and step.
  int stop_signal = 0;
};

TrainSummary train(const Config& config, const TrainOptions& options = {});

}  // namespace zt
