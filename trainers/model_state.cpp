#include "trainers/model_state.h"

#include "framework/error.h"

namespace zt {

Device resolve_device(const std::string& name, const std::string& setting) {
  if (name == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  const Device d = parse_device(name);
  if (d.is_cuda()) {
    const int n = cuda_device_count();
    ZT_CHECK(n > 0, setting, ": '", name, "' requested but no GPU is available",
             " (or this ztrain was built without CUDA); use ", setting, "=cpu or auto");
    ZT_CHECK(d.index < n, setting, ": '", name, "' requested but only ", n, " GPU(s) are visible");
  }
  return d;
}

void save_model(const Gpt& model, Checkpoint& ckpt) {
  for (const auto& p : model.parameters().all()) ckpt.tensors["model/" + p.name] = p.var.tensor();
}

void load_model(Gpt& model, const Checkpoint& ckpt, const std::string& source) {
  for (auto& p : model.parameters().all()) {
    auto it = ckpt.tensors.find("model/" + p.name);
    ZT_CHECK(it != ckpt.tensors.end(), "checkpoint '", source, "' has no parameter '", p.name,
             "' (saved from a different model?)");
    ZT_CHECK(it->second.shape() == p.var.shape(), "checkpoint '", source, "': parameter '", p.name, "' has shape ",
             shape_str(it->second.shape()), " but the model's is ", shape_str(p.var.shape()),
             " (the model section of the config differs from the checkpoint's)");
    p.var.tensor().copy_(it->second);
  }
}

}  // namespace zt
