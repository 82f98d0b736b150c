#include "trainers/loss_stats.h"

#include <cmath>
#include <limits>

#include "ops/device_dispatch.h"

namespace zt {

LossStats::LossStats(Device device)
    : sums_(Tensor::zeros({4}, DType::f64, device)),
      max_(Tensor::full({1}, -std::numeric_limits<double>::infinity(), DType::f64, device)) {}

void LossStats::add(const ops::CrossEntropyResult& r) {
  ZT_ON_DEVICE(sums_, add_on_host(r), loss_stats_cuda::accumulate(r.ce_sum, r.z_sum, r.count, r.lse, sums_, max_));
}

void LossStats::add_on_host(const ops::CrossEntropyResult& r) {
  double* s = sums_.data<double>();
  double& m = max_.data<double>()[0];
  s[0] += r.ce_sum.item();
  s[1] += r.z_sum.item();
  s[3] += static_cast<double>(r.count.item());
  for (double v : r.lse.to_vector<double>()) {
    s[2] += v;
    m = std::isnan(v) || std::isnan(m) ? std::numeric_limits<double>::quiet_NaN() : std::max(m, v);
  }
}

LossStats::Totals LossStats::reduce(ProcessGroup& dp) {
  if (dp.size() > 1) {
    dp.all_reduce(sums_, ReduceOp::sum);
    dp.all_reduce(max_, ReduceOp::max);
  }
  const std::vector<double> s = sums_.to_vector<double>();
  Totals t;
  t.ce_sum = s[0];
  t.z_sum = s[1];
  t.lse_sum = s[2];
  t.count = s[3];
  t.lse_max = t.count > 0 ? max_.item() : 0.0;
  return t;
}

}  // namespace zt
