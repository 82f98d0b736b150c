#pragma once
// Checkpoint files: one file per checkpoint, written atomically (temp file in the same
// directory, fsync, rename, fsync of the directory), so a crash at any moment leaves
// either the previous newest checkpoint or the new one, never a torn file.
//
// Layout, format version 2 (little-endian): 8-byte magic "ZTCKPT02", u64 header length,
// u32 crc32 of the header bytes, u32 zero, the header (JSON: metadata, the resolved config,
// and an index of tensors: name, dtype, shape, offset, nbytes, crc32 of the tensor's bytes),
// then the tensor bytes, each 64-byte aligned (the data section starts 64-byte aligned).
// Reading checks the magic, the header's checksum, every tensor's extent against the file
// size and every tensor's checksum (zlib's crc32), so a truncated, overlong, edited, damaged
// or foreign file is an error naming the file (and the tensor). Version 1 files (no
// checksums) are refused with a clear message.
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

// One row of the tensor table, as the header states it (checked for consistency with
// the file size and the dtype, so nbytes == numel(shape) * dtype size, without overflow).
struct CheckpointTensorEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t offset = 0, nbytes = 0;  // offset within the data section
  uint32_t crc32 = 0;
};

// Everything but the tensor bytes: cheap to read, so a file can be judged (its config, its
// tensor table) before anything large is allocated.
struct CheckpointHeader {
  nlohmann::json meta;
  std::string config_yaml;
  std::vector<CheckpointTensorEntry> tensors;
};

void write_checkpoint(const std::string& path, const Checkpoint& ckpt);
CheckpointHeader read_checkpoint_header(const std::string& path);
// Reads (and verifies) every tensor whose name starts with `prefix` ("" = all).
Checkpoint read_checkpoint(const std::string& path, const std::string& prefix = "");
// Reads the whole file in chunks, checking the header and every tensor's checksum without
// keeping the data: "" when it is sound, else the error message (naming file and tensor).
// For a tensor-parallel manifest, every shard file too (shard_mismatch, then its checksums).
std::string checkpoint_damage(const std::string& path);

// A checksum of everything a header states (meta, config, each tensor's name, dtype, shape,
// size and crc32): with the per-tensor checksums verified on read, equal digests mean equal
// contents. A tensor-parallel manifest records each shard's digest and size.
uint32_t checkpoint_digest(const CheckpointHeader& header);

// For the tensor-parallel manifest at `manifest_path` (meta: its header's meta): "" when its
// shard file `tp_rank` is the one it was written with, else why not, naming the file: missing,
// unreadable, another rank's shard, another step's, another run's (meta["shard"] and
// meta["run_id"]), or not the size and digest the manifest records. Reads the shard's header only.
std::string shard_mismatch(const std::string& manifest_path, const nlohmann::json& manifest_meta, int tp_rank);

// <run_dir>/checkpoints/step_00000100.ckpt
std::string checkpoint_path(const std::string& run_dir, int64_t step);
// The newest checkpoint under `where`: a checkpoint file itself, a run directory, or its
// checkpoints/ folder. nullopt when there is none. Does not read the files.
std::optional<std::string> newest_checkpoint(const std::string& where);

// The newest checkpoint under `where` that reads back intact (checksums, and a header step
// equal to the file name's step). Damaged newer ones are skipped with one message each
// (`skipped`) and listed in `damaged`. A file given directly is chosen as it is (reading it
// verifies it). Why fall back rather than stop: docs/reliability.md.
struct CheckpointChoice {
  std::optional<std::string> path;
  std::vector<std::string> skipped;  // "skipping damaged checkpoint 'X': <why>"
  std::vector<std::string> damaged;  // their paths, newest first
};
CheckpointChoice newest_good_checkpoint(const std::string& where);
// Renames each damaged checkpoint to <name>.damaged (kept for inspection, never chosen or
// pruned again); call only while holding the run directory's lock. Returns the new names.
std::vector<std::string> set_aside_damaged(const std::vector<std::string>& damaged);

// The checkpoint files (step_<N>.ckpt) of a run's checkpoints/ folder, ascending step.
std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir);

// Deletes all but the newest `keep` checkpoints of a run (keep == 0: keeps all). Touches
// only files named step_<N>.ckpt in <run_dir>/checkpoints.
void prune_checkpoints(const std::string& run_dir, int64_t keep);

// Writes `text` to `path` atomically (temp file <path>.tmp.<pid>, fsync, rename, fsync of
// the directory).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace zt
