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

void save_model(const Model& model, Checkpoint& ckpt) {
  for (const auto& p : model.parameters().all()) ckpt.tensors["model/" + p.name] = p.var.tensor();
}

SplitOf checkpoint_splits(const Model& model) {
  std::map<std::string, ShardSpec> splits;
  for (const auto& p : model.parameters().all())
    for (const char* prefix : {"model/", "adamw/m/", "adamw/v/"}) splits[prefix + p.name] = p.shard;
  return [splits = std::move(splits)](const std::string& key) {
    const auto it = splits.find(key);
    return it == splits.end() ? ShardSpec{} : it->second;
  };
}

void check_checkpoint_matches_config(const CheckpointHeader& header, const ModelConfig& model, const std::string& source) {
  int64_t held = 0;
  for (const auto& t : header.tensors) {
    if (t.name.rfind("model/", 0) != 0) continue;
    ZT_CHECK(t.dtype == DType::f32, "checkpoint '", source, "': parameter '", t.name.substr(6), "' is ",
             dtype_name(t.dtype), ", not f32");
    held += shape_numel(t.shape);  // the header check bounds each by the file size
  }
  const int64_t needed = model.num_parameters();
  ZT_CHECK(held == needed, "checkpoint '", source, "' holds ", held, " model parameters but the config it states (",
           model.arch, ", ", model.n_layer, " layers, d_model ", model.d_model, ", vocab ", model.vocab_size, ", seq_len ",
           model.seq_len, ") has ", needed, ": the file is damaged or was not written by this model");
}

void load_model(Model& model, const Checkpoint& ckpt, const std::string& source) {
  for (auto& p : model.parameters().all()) {
    auto it = ckpt.tensors.find("model/" + p.name);
    ZT_CHECK(it != ckpt.tensors.end(), "checkpoint '", source, "' has no parameter '", p.name,
             "' (saved from a different model?)");
    ZT_CHECK(it->second.shape() == p.var.shape(), "checkpoint '", source, "': parameter '", p.name, "' has shape ",
             shape_str(it->second.shape()), " but the model's is ", shape_str(p.var.shape()),
             " (the model section of the config differs from the checkpoint's)");
    ZT_CHECK(it->second.dtype() == DType::f32, "checkpoint '", source, "': parameter '", p.name, "' is ",
             dtype_name(it->second.dtype()), ", not f32");
    p.var.tensor().copy_(it->second);
  }
}

}  // namespace zt
