#pragma once
// Checkpoints of a tensor-parallel run, and loading any checkpoint under any layout.
//
// Saved with T > 1 tensor-parallel ranks, a checkpoint is T shard files plus a manifest:
//   checkpoints/step_00000100.tp0of2.ckpt   rank 0's shards (and the replicated tensors)
//   checkpoints/step_00000100.tp1of2.ckpt   rank 1's
//   checkpoints/step_00000100.ckpt          the manifest: metadata, config, no tensors, and
//                                           meta["tensor_parallel"] = {size, files, splits}
// Each file is written atomically; the shards first, then (after every rank has written) the
// manifest, so a checkpoint exists exactly when its manifest does: the newest-checkpoint
// search and pruning see manifests only. With T = 1 the checkpoint is the one file, as ever.
// Data-parallel ranks hold the same values: only data-parallel rank 0's group writes.
//
// Loading for tensor-parallel rank r of T: the same layout reads file r alone; any other
// layout (TP=2 -> TP=1, 1 -> 2, 4 -> 2 ...) reads every shard, joins each split tensor
// (models/tensor_parallel_split.h) and cuts rank r's piece.
#include <functional>
#include <string>

#include "models/tensor_parallel_split.h"
#include "trainers/checkpoint.h"

namespace zt {

// How the tensor stored under `key` ("model/<name>", "adamw/m/<name>", ...) is split.
using SplitOf = std::function<ShardSpec(const std::string& key)>;

// Rank `tp_rank` of `tp_size` writes its file (ckpt holds its shards), the manifest's path
// being `manifest_path`; returns that file's path. With tp_size 1 it writes the manifest path
// itself (the plain single-file checkpoint).
// Shard files carry meta["shard"] = {tp_rank, tp_size, step, run_id} (run_id from ckpt.meta);
// the manifest records each shard's size and digest, and every read checks both
// (shard_mismatch, trainers/checkpoint.h), so swapped, stale or foreign shards are errors
// naming the file, and the newest-checkpoint search falls back past them.
std::string write_checkpoint_shard(const std::string& manifest_path, const Checkpoint& ckpt, int tp_rank, int tp_size);
// After every rank's write_checkpoint_shard: the manifest (tp_size > 1), by one rank.
void write_checkpoint_manifest(const std::string& manifest_path, Checkpoint meta_only, int tp_size,
                               const std::vector<std::string>& split_keys, const SplitOf& split_of);

// The checkpoint at `path` (a manifest or a plain file) as tensor-parallel rank `tp_rank` of
// `tp_size` sees it: its shards of the split tensors, the replicated ones whole. The meta and
// config are the manifest's. `saved_tp_size` (optional) receives the layout it was saved with;
// only tensors whose name starts with `prefix` are read ("" = all). Every file's checksums are
// verified as it is read (trainers/checkpoint.h).
Checkpoint read_checkpoint_for_rank(const std::string& path, int tp_rank, int tp_size, const SplitOf& split_of,
                                    int* saved_tp_size = nullptr, const std::string& prefix = "");

// A fresh run identity (random, 62 bits): a run keeps it in every checkpoint's meta["run_id"].
int64_t new_run_id();

// prune_checkpoints, plus the shard files whose manifest is gone.
void prune_sharded_checkpoints(const std::string& run_dir, int64_t keep);

}  // namespace zt
