#pragma once
// The loss options of a run, built in one place from the config's loss section, for the
// training step and for evaluation, so the two cannot drift apart.
#include "models/model.h"
#include "trainers/config.h"

namespace zt {

// Training: z-loss at this step's (scheduled) weight, label smoothing, ignore_index, soft-capping;
// reduction sum multiplied by `scale` (1 / the global batch's target tokens: the global mean's
// gradient, written by the loss kernel in place); the fused head when `fused_head`
// (resolve_fused_head).
LossOptions training_loss_options(const LossConfig& loss, double z_loss_weight, double scale, bool fused_head);
// Evaluation: the plain cross-entropy (no z-loss, no smoothing, so val_loss is comparable
// across z-loss and smoothing ablations) of the same model (soft-capping is part of its
// output), summed; no gradient.
LossOptions evaluation_loss_options(const LossConfig& loss, bool fused_head);


}  // namespace zt
