#pragma once
// Which part of the model a parameter belongs to. The family says so when it registers the
// parameter; the trainer's per-group signals (grad_norm/<group>, update_ratio/<group>) read it
// and never look at names.
#include <array>

namespace zt {

enum class ParamGroup { embedding, attention, mlp, norm, head };

inline constexpr std::array<ParamGroup, 5> kParamGroups = {ParamGroup::embedding, ParamGroup::attention,
                                                           ParamGroup::mlp, ParamGroup::norm, ParamGroup::head};

// "embedding", "attention", "mlp", "norm", "head": the suffix of the metrics fields.
inline const char* group_name(ParamGroup g) {
  switch (g) {
    case ParamGroup::embedding: return "embedding";
    case ParamGroup::attention: return "attention";
    case ParamGroup::mlp: return "mlp";
    case ParamGroup::norm: return "norm";
    case ParamGroup::head: return "head";
  }
  return "?";
}

}  // namespace zt
