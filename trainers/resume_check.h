#pragma once
// Which config changes a resume may make. The model's shape (model.n_layer, n_head,
// d_model, seq_len, vocab_size, vocab_multiple, and the family's choices: arch, norm, mlp,
// d_ff, position, qk_norm, n_kv_head, tie_embeddings, bias) fixes the tensors a checkpoint holds: a
// resume that changes one of them would load part of the state and misread the rest, so it
// is refused. The parallel layout (parallel.*, the number of ranks) may change: checkpoints
// record how each tensor is split and are re-sharded on load (trainers/sharded_checkpoint.h).
// Everything else (lr, max_steps, z_loss_weight, dropout, ...) may change too; the trainer
// notes that the resumed run then differs from an uninterrupted one.
#include <string>
#include <vector>

#include "trainers/config.h"

namespace zt {

// The keys above whose values differ between a checkpoint's stored config (its YAML text)
// and the config of the run that resumes it, as "key: old -> new", in key-table order.
// A key absent from the old text counts as its default (checkpoints of older ztrains).
// An unreadable old config gives one entry saying so.
std::vector<std::string> resume_incompatibilities(const std::string& old_config_yaml, const Config& now);

// True for the keys above: the model's shape.
bool is_layout_key(const std::string& section, const std::string& key);

}  // namespace zt
