#include "trainers/sharded_checkpoint.h"

#include <filesystem>
#include <random>
#include <regex>
#include <set>

#include "framework/error.h"

namespace zt {

namespace {

namespace fs = std::filesystem;

// step_00000100.ckpt -> step_00000100.tp1of2.ckpt
std::string shard_path(const std::string& manifest_path, int tp_rank, int tp_size) {
  const fs::path p(manifest_path);
  return (p.parent_path() / (p.stem().string() + ".tp" + std::to_string(tp_rank) + "of" + std::to_string(tp_size) +
                             p.extension().string()))
      .string();
}

}  // namespace

std::string write_checkpoint_shard(const std::string& manifest_path, const Checkpoint& ckpt, int tp_rank, int tp_size) {
  if (tp_size == 1) {
    write_checkpoint(manifest_path, ckpt);
    return manifest_path;
  }
  // The shard says whose it is, so a file swapped, replaced or copied from elsewhere is caught.
  Checkpoint shard;
  shard.meta = ckpt.meta;
  shard.meta["shard"] = {{"tp_rank", tp_rank},
                         {"tp_size", tp_size},
                         {"step", ckpt.meta.value("step", nlohmann::json())},
                         {"run_id", ckpt.meta.value("run_id", nlohmann::json())}};
  shard.config_yaml = ckpt.config_yaml;
  shard.tensors = ckpt.tensors;  // shares the storages
  const std::string path = shard_path(manifest_path, tp_rank, tp_size);
  write_checkpoint(path, shard);
  return path;
}

void write_checkpoint_manifest(const std::string& manifest_path, Checkpoint meta_only, int tp_size,
                               const std::vector<std::string>& split_keys, const SplitOf& split_of) {
  if (tp_size == 1) return;  // the single file is its own manifest
  nlohmann::json files = nlohmann::json::array(), splits = nlohmann::json::object(), shards = nlohmann::json::array();
  for (int r = 0; r < tp_size; ++r) {
    const std::string shard = shard_path(manifest_path, r, tp_size);
    files.push_back(fs::path(shard).filename().string());
    // Each shard's size and digest: the manifest binds exactly these files.
    shards.push_back({{"bytes", static_cast<uint64_t>(fs::file_size(shard))},
                      {"digest", checkpoint_digest(read_checkpoint_header(shard))}});
  }
  for (const std::string& key : split_keys) {
    const ShardSpec s = split_of(key);
    if (s.sharded()) splits[key] = {s.dim, s.parts};
  }
  meta_only.tensors.clear();
  meta_only.meta["tensor_parallel"] = {{"size", tp_size}, {"files", files}, {"splits", splits}, {"shards", shards}};
  write_checkpoint(manifest_path, meta_only);
}

Checkpoint read_checkpoint_for_rank(const std::string& path, int tp_rank, int tp_size, const SplitOf& split_of,
                                    int* saved_tp_size, const std::string& prefix) {
  Checkpoint manifest = read_checkpoint(path, prefix);
  const nlohmann::json* tp = manifest.meta.contains("tensor_parallel") ? &manifest.meta["tensor_parallel"] : nullptr;
  int saved = 1;
  std::vector<Checkpoint> parts;
  std::map<std::string, ShardSpec> saved_splits;
  try {
    if (tp) {
      saved = tp->at("size").get<int>();
      const auto files = tp->at("files").get<std::vector<std::string>>();
      ZT_CHECK(saved >= 1 && static_cast<int>(files.size()) == saved, "checkpoint '", path, "': its manifest lists ",
               files.size(), " shard files for tensor_parallel size ", saved);
      for (const auto& [key, v] : tp->at("splits").items()) saved_splits[key] = ShardSpec{v.at(0).get<int>(), v.at(1).get<int>()};
      const fs::path dir = fs::path(path).parent_path();
      // Each shard read must be the manifest's own (rank, step, run, size, digest).
      const auto read_shard = [&](int r) {
        const std::string why = shard_mismatch(path, manifest.meta, r);
        ZT_CHECK(why.empty(), why);
        return read_checkpoint((dir / files[static_cast<size_t>(r)]).string(), prefix);
      };
      // Same layout: this rank's file is all it needs.
      if (saved == tp_size) {
        parts.push_back(read_shard(tp_rank));
      } else {
        for (int r = 0; r < saved; ++r) parts.push_back(read_shard(r));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    ZT_FAIL("checkpoint '", path, "': bad tensor_parallel manifest (", e.what(), ")");
  }
  if (saved_tp_size) *saved_tp_size = saved;

  Checkpoint out;
  out.meta = manifest.meta;
  out.meta.erase("tensor_parallel");
  out.config_yaml = manifest.config_yaml;
  if (!tp) {  // a single-rank checkpoint: cut this rank's pieces
    for (auto& [key, t] : manifest.tensors) out.tensors[key] = shard_of(t, split_of(key), tp_rank, tp_size);
    return out;
  }
  if (saved == tp_size) {
    out.tensors = std::move(parts.front().tensors);
    return out;
  }
  // Another layout: join every split tensor from all shards, then cut this rank's piece.
  for (auto& [key, t] : parts.front().tensors) {
    const auto it = saved_splits.find(key);
    Tensor full = t;
    if (it != saved_splits.end()) {
      std::vector<Tensor> pieces;
      for (size_t r = 0; r < parts.size(); ++r) {
        auto p = parts[r].tensors.find(key);
        ZT_CHECK(p != parts[r].tensors.end(), "checkpoint '", path, "': shard ", r, " lacks '", key, "'");
        pieces.push_back(p->second);
      }
      full = unshard(pieces, it->second);
    }
    out.tensors[key] = shard_of(full, split_of(key), tp_rank, tp_size);
  }
  return out;
}

int64_t new_run_id() {
  std::random_device rd;
  const uint64_t hi = rd(), lo = rd();
  return static_cast<int64_t>(((hi << 32) | lo) >> 2);
}

void prune_sharded_checkpoints(const std::string& run_dir, int64_t keep) {
  prune_checkpoints(run_dir, keep);
  // Shard files whose manifest was pruned (or never written: a run killed between the two).
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  const std::vector<std::string> manifests = list_checkpoints(dir.string());  // ascending step
  if (manifests.empty()) return;
  std::set<std::string> kept;
  for (const std::string& m : manifests) kept.insert(fs::path(m).stem().string());
  const std::string newest = fs::path(manifests.back()).stem().string();
  static const std::regex shard_re("(step_[0-9]+)\\.tp[0-9]+of[0-9]+\\.ckpt");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    // Older than the newest manifest and without one of its own: a leftover, never in use.
    if (std::regex_match(name, m, shard_re) && !kept.count(m[1].str()) && m[1].str() < newest)
      fs::remove(e.path(), ec);
  }
}

}  // namespace zt
