#pragma once
// The loss options of a run, built in one place from the config's loss section, for the
// training step and for evaluation, so the two cannot drift apart.
#include "models/model.h"
#include "trainers/config.h"

namespace zt {

// Training: z-loss at this step's (scheduled) weight, label smoothing, ignore_index; reduction
// sum multiplied by `scale` (1 / the global batch's target tokens: the global mean's gradient,
// written by the loss kernel in place).
LossOptions training_loss_options(const LossConfig& loss, double z_loss_weight, double scale);
// Evaluation: the plain cross-entropy (no z-loss, no smoothing, so val_loss is comparable
// across z-loss and smoothing ablations), summed; no gradient.
LossOptions evaluation_loss_options(const LossConfig& loss);

}  // namespace zt
