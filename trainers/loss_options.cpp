#include "trainers/loss_options.h"

namespace zt {

namespace {
// What training and evaluation share: the same model output (soft-capped as configured, through
// the same head), the same ignored targets, summed.
LossOptions shared_options(const LossConfig& loss, bool fused_head) {
  LossOptions o;
  o.loss.logit_softcap = loss.logit_softcap;
  o.loss.ignore_index = loss.ignore_index;
  o.loss.reduction = ops::Reduction::sum;
  o.fused_head = fused_head;
  return o;
}
}  // namespace

LossOptions training_loss_options(const LossConfig& loss, double z_loss_weight, double scale, bool fused_head) {
  LossOptions o = shared_options(loss, fused_head);
  o.loss.z_loss_weight = z_loss_weight;
  o.loss.label_smoothing = loss.label_smoothing;
  o.loss.scale = scale;
  return o;
}

LossOptions evaluation_loss_options(const LossConfig& loss, bool fused_head) {
  LossOptions o = shared_options(loss, fused_head);
  o.loss.inplace_grad = false;
  return o;
}

}  // namespace zt
