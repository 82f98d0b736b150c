#include "models/parameter_registry.h"

namespace zt {

Variable ParameterRegistry::add(const std::string& name, Tensor init, bool decay, ParamGroup group, ShardSpec shard) {
  for (const auto& p : params_) ZT_CHECK(p.name != name, "parameter '", name, "' registered twice");
  Variable v(std::move(init), /*requires_grad=*/true, name);
  params_.push_back({name, v, decay, shard, group});
  return v;
}

const Parameter& ParameterRegistry::get(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return p;
  ZT_FAIL("no parameter named '", name, "'");
}

int64_t ParameterRegistry::numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.var.numel();
  return n;
}

void ParameterRegistry::zero_grad() {
  for (auto& p : params_) p.var.zero_grad();
}

}  // namespace zt
