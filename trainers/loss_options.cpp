#include "trainers/loss_options.h"

namespace zt {

LossOptions training_loss_options(const LossConfig& loss, double z_loss_weight, double scale, bool fused_head) {
  LossOptions o;
  o.logit_softcap = loss.logit_softcap;
  o.fused_head = fused_head;
  o.z_loss_weight = z_loss_weight;
  o.label_smoothing = loss.label_smoothing;
  o.ignore_index = loss.ignore_index;
  o.reduction = ops::Reduction::sum;
  o.scale = scale;
  return o;
}

LossOptions evaluation_loss_options(const LossConfig& loss, bool fused_head) {
  LossOptions o;
  o.logit_softcap = loss.logit_softcap;
  o.fused_head = fused_head;
  o.ignore_index = loss.ignore_index;
  o.reduction = ops::Reduction::sum;
  o.inplace_grad = false;
  return o;
}

}  // namespace zt
