#pragma once
// Between the config, the model and checkpoints: the device a config names, putting a model's
// parameters into a Checkpoint ("model/<name>") and loading them back with shape checks.
#include <string>

#include "framework/device.h"
#include "models/model.h"
#include "trainers/checkpoint.h"
#include "trainers/sharded_checkpoint.h"
#include "trainers/config.h"

namespace zt {

// auto: cuda:0 when a GPU is visible, else cpu. cuda without a GPU is an error naming
// `setting`, where the name came from (the config key, or a tool's --device).
Device resolve_device(const std::string& name, const std::string& setting = "train.device");

void save_model(const Model& model, Checkpoint& ckpt);
// How each tensor a training checkpoint stores ("model/<name>", "adamw/m/<name>",
// "adamw/v/<name>") is split over the tensor-parallel ranks: its parameter's split.
SplitOf checkpoint_splits(const Model& model);
// Before anything is built from a checkpoint's stated config: its model tensors must be f32
// and hold exactly the config's parameter count, so a crafted or damaged header cannot make
// a reader build a model larger than the file (a 1 KB file stating a 1024-layer config).
void check_checkpoint_matches_config(const CheckpointHeader& header, const ModelConfig& model, const std::string& source);
// Every parameter must be present with its shape; `source` names the file in errors.
void load_model(Model& model, const Checkpoint& ckpt, const std::string& source);

}  // namespace zt
