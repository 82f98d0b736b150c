#include "trainers/resume_check.h"

#include <yaml-cpp/yaml.h>

namespace zt {

bool is_layout_key(const std::string& section, const std::string& key) {
  return section == "model" && (key == "n_layer" || key == "n_head" || key == "d_model" || key == "seq_len" ||
                                key == "vocab_size" || key == "vocab_multiple");
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
