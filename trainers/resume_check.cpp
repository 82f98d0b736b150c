#include "trainers/resume_check.h"

#include <yaml-cpp/yaml.h>

namespace zt {

bool is_layout_key(const std::string& section, const std::string& key) {
  // Every model key that changes the parameters' set or shapes (dropout, rope_theta and norm_eps
  // change values only: a resume may change them, with the usual note).
  static const char* const keys[] = {"n_layer", "n_head", "d_model",  "seq_len",   "vocab_size",     "vocab_multiple",
                                     "arch",    "norm",   "mlp",      "d_ff",      "position",       "qk_norm",
                                     "n_kv_head", "tie_embeddings", "bias"};
  if (section != "model") return false;
  for (const char* k : keys)
    if (key == k) return true;
  return false;
}

std::vector<std::string> resume_incompatibilities(const std::string& old_config_yaml, const Config& now) {
  YAML::Node old_root;
  try {
    old_root = YAML::Load(old_config_yaml);
  } catch (const YAML::Exception& e) {
    return {"config: the checkpoint's stored config is not valid YAML (" + e.msg + ")"};
  }
  if (!old_root.IsMap()) return {"config: the checkpoint's stored config is not a map of sections"};
  const YAML::Node& old = old_root;  // const: looking a key up must not insert it
  // Both sides as config_to_yaml writes them, so the same value has the same text.
  const YAML::Node new_root = YAML::Load(config_to_yaml(now));
  const YAML::Node defaults = YAML::Load(config_to_yaml(Config{}));
  auto text = [](const YAML::Node& n) { return n && n.IsScalar() ? n.Scalar() : std::string("(none)"); };
  std::vector<std::string> out;
  for (const auto& sec : new_root) {
    const std::string section = sec.first.Scalar();
    for (const auto& kv : sec.second) {
      const std::string key = kv.first.Scalar();
      if (!is_layout_key(section, key)) continue;
      const bool stored = old[section] && old[section].IsMap() && old[section][key];
      const std::string was = text(stored ? old[section][key] : defaults[section][key]), is = text(kv.second);
      if (was != is) out.push_back(section + "." + key + ": " + was + " -> " + is);
    }
  }
  return out;
}

}  // namespace zt
