#pragma once
// Between the config, the model and checkpoints: the device a config names, putting a GPT's
// parameters into a Checkpoint ("model/<name>") and loading them back with shape checks.
#include <string>

#include "framework/device.h"
#include "models/gpt.h"
#include "trainers/checkpoint.h"
#include "trainers/config.h"

namespace zt {

// auto: cuda:0 when a GPU is visible, else cpu. cuda without a GPU is an error naming
// `setting`, where the name came from (the config key, or a tool's --device).
Device resolve_device(const std::string& name, const std::string& setting = "train.device");

void save_model(const Gpt& model, Checkpoint& ckpt);
// Every parameter must be present with its shape; `source` names the file in errors.
void load_model(Gpt& model, const Checkpoint& ckpt, const std::string& source);

}  // namespace zt
