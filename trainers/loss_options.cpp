#include "trainers/loss_options.h"

namespace zt {

LossOptions training_loss_options(const LossConfig& loss, double z_loss_weight, double scale) {
  LossOptions o;
  o.z_loss_weight = z_loss_weight;
  o.label_smoothing = loss.label_smoothing;
  o.ignore_index = loss.ignore_index;
  o.reduction = ops::Reduction::sum;
  o.scale = scale;
  return o;
}

LossOptions evaluation_loss_options(const LossConfig& loss) {
  LossOptions o;
  o.ignore_index = loss.ignore_index;
  o.reduction = ops::Reduction::sum;
  o.inplace_grad = false;
  return o;
}

}  // namespace zt
