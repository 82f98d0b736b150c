#pragma once
// Checkpoint files: one file per checkpoint, written atomically (temp file in the same
// directory, fsync, rename, fsync of the directory), so a crash at any moment leaves
// either the previous newest checkpoint or the new one, never a torn file.
//
// Layout (little-endian): 8-byte magic "ZTCKPT01", u64 header length, the header (JSON:
// metadata, the resolved config, and an index of tensors: name, dtype, shape, offset,
// nbytes), then the tensor bytes, each 64-byte aligned relative to the end of the header.
// Reading checks the magic, the header, every tensor's extent and the total file size, so
// a truncated or foreign file is an error naming the file.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/tensor.h"

namespace zt {

struct Checkpoint {
  nlohmann::json meta;               // step, tokens, data position, RNG state, ...
  std::string config_yaml;           // the resolved config of the run
  std::map<std::string, Tensor> tensors;  // host or device tensors; read back on the host
};

void write_checkpoint(const std::string& path, const Checkpoint& ckpt);
Checkpoint read_checkpoint(const std::string& path);

// <run_dir>/checkpoints/step_00000100.ckpt
std::string checkpoint_path(const std::string& run_dir, int64_t step);
// The newest complete checkpoint under `where`: a checkpoint file itself, a run directory,
// or its checkpoints/ folder. nullopt when there is none.
std::optional<std::string> newest_checkpoint(const std::string& where);
// Deletes all but the newest `keep` checkpoints of a run (keep == 0: keeps all).
void prune_checkpoints(const std::string& run_dir, int64_t keep);

// Writes `text` to `path` atomically (temp file, fsync, rename, fsync of the directory).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace zt
