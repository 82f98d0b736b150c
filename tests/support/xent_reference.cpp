#include "tests/support/xent_reference.h"

#include <cmath>
#include <limits>
#include <string>

namespace zt::test {

XentReference xent_reference(const Tensor& x_t, const std::vector<int64_t>& y, double e, double z,
                             int64_t ignore_index, const std::string& reduction, double seed,
                             const std::vector<double>& row_weights, int64_t num_classes, double softcap) {
  const int64_t n = x_t.size(0), width = x_t.size(1), v = num_classes < 0 ? width : num_classes;
  std::vector<double> x = x_t.to_vector<double>();
  std::vector<double> dcap(x.size(), 1.0);  // d capped / d x
  if (softcap > 0)
    for (size_t k = 0; k < x.size(); ++k) {
      if (x[k] == -std::numeric_limits<double>::infinity()) {
        dcap[k] = 0;
        continue;
      }
      const double u = x[k] / softcap, ch = std::cosh(u);
      x[k] = softcap * std::tanh(u);
      dcap[k] = 1 / (ch * ch);  // 1 - tanh^2 u, without the cancellation once tanh u rounds to 1
    }
  XentReference r;
  r.row_loss.assign(n, 0);
  r.lse.assign(n, 0);
  r.z_row.assign(n, 0);
  r.grad.assign(n * width, 0);  // padding columns [v, width) stay 0
  for (int64_t i = 0; i < n; ++i) r.count += y[i] != ignore_index;
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] == ignore_index) continue;
    const double* row = x.data() + i * width;
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t j = 0; j < v; ++j) m = std::max(m, row[j]), s += row[j];
    double d = 0;
    for (int64_t j = 0; j < v; ++j) d += std::exp(row[j] - m);
    const double lse = m + std::log(d);
    // ce = lse - (1-e) x_y - (e/V) S, with lse - x_y taken as (m - x_y) + log d: at logits of
    // 3e38 even f64 rounds log d away from m + log d.
    double ce = (1 - e) * (m - row[y[i]]) + std::log(d);
    if (e != 0) ce += e * (m - s / static_cast<double>(v));  // absent without smoothing (s may be -inf)
    r.lse[i] = lse;
    r.z_row[i] = z * lse * lse;
    r.row_loss[i] = ce + r.z_row[i];
    r.ce_sum += ce;
    r.z_sum += r.z_row[i];
    double w = 1;
    if (reduction == "mean") w = seed / static_cast<double>(r.count);
    else if (reduction == "sum") w = seed;
    else if (!row_weights.empty()) w = row_weights[i];
    for (int64_t j = 0; j < v; ++j) {
      const double p = std::exp(row[j] - m) / d;  // exp(x - lse) would carry lse's rounding
      r.grad[i * width + j] = w * (p * (1 + 2 * z * lse) - (j == y[i] ? 1 - e : 0) - e / static_cast<double>(v)) *
                              dcap[i * width + j];
    }
  }
  const double total = r.ce_sum + r.z_sum;
  r.loss = reduction == "mean" ? (r.count ? total / static_cast<double>(r.count) : 0.0) : total;
  return r;
}

}  // namespace zt::test
