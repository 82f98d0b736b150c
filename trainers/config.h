#pragma once
// The training configuration: one struct per YAML section, loaded and validated by a key
// table (config.cpp) so every key is typed, range-checked and documented in one place.
//
// Errors (unknown key, wrong type, out-of-range value, a section that is not a map, a
// duplicate key) are zt::Error messages of the form
//   configs/gpt_tiny.yaml:12:3: loss.z_loss_weight: must be finite and >= 0, got nan
// and for command-line overrides
//   --set loss.z_loss_weight=-1: loss.z_loss_weight: must be finite and >= 0, got -1
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "framework/device.h"
#include "models/model_config.h"

namespace zt {

// The model section is the models' own configuration (models/model_config.h): one struct, no
// copy between them. It also holds train.activation_checkpointing, which the model's forward
// reads (ModelConfig::activation_checkpointing).

struct LossConfig {
  double z_loss_weight = 0.0;
  double label_smoothing = 0.0;
  int64_t ignore_index = -100;
  std::string z_loss_schedule = "constant";  // constant | linear_warmup
  double z_loss_start = 0.0;                 // linear_warmup: the weight at step 0
  int64_t z_loss_warmup_steps = 0;           // linear_warmup: steps to reach z_loss_weight
  double logit_softcap = 0.0;                // 0: off; else logits -> cap tanh(logits / cap) (Gemma 2: 30)
  std::string fused_head = "auto";           // auto | on | off: the head product and the loss in one op
};

struct ParallelConfig {
  int64_t tensor_parallel_size = 1;  // T; the world's N ranks are T-way TP x N/T-way DP
  std::string store_dir;             // rendezvous directory when $ZTRAIN_STORE_DIR is unset
  double bucket_mb = 25.0;           // data-parallel gradient bucket size (MiB of f32)
  int64_t zero_stage = 0;            // 0: replicated optimizer; 1: AdamW state sharded over DP; 2: gradients too
  int64_t rendezvous_timeout_s = 120;  // how long ranks wait for each other at start-up
};

struct OptimConfig {
  double lr = 6e-4;
  double min_lr = 6e-5;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // global-norm clipping threshold; 0 turns clipping off
};

struct ScheduleConfig {
  int64_t warmup_steps = 0;
};

struct DataConfig {
  std::vector<std::string> train;  // shard paths or globs
  std::vector<std::string> val;
  std::string tokenizer = "gpt2";  // what made the shards; generate encodes prompts with it
};

struct TrainConfig {
  int64_t batch_size = 8;  // sequences per micro-batch, over all data-parallel ranks
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  int64_t max_steps = 1000;
  int64_t seed = 1337;
  std::string dtype = "f32";        // f32 | bf16 (compute dtype; parameters stay f32)
  std::string device = "auto";      // auto | cpu | cuda | cuda:N
  std::string on_nonfinite = "stop";  // stop | skip
  int64_t max_skipped_consecutive = 5;  // skip: stop after more skipped updates in a row than this
  int64_t max_skipped_total = 20;       // skip: stop after more skipped updates in the run than this
  int64_t threads = 0;              // CPU threads for the ops; 0 = OpenMP's default
};

struct LogConfig {
  std::string out_dir = "runs/run";
  int64_t log_every = 10;
  int64_t eval_every = 100;       // 0: evaluate only before the first and after the last step
  int64_t eval_batches = 10;
  int64_t checkpoint_every = 0;   // 0: checkpoint only after the last step
  int64_t keep_checkpoints = 2;   // newest N checkpoints kept; 0 keeps all
  double peak_tflops = 989.0;     // device peak for mfu (GPU only); H100/H200 dense bf16
};

struct Config {
  ModelConfig model;
  LossConfig loss;
  ParallelConfig parallel;
  OptimConfig optim;
  ScheduleConfig schedule;
  DataConfig data;
  TrainConfig train;
  LogConfig log;

  std::string source;  // the file it was read from ("<string>" for text)
  // Where each key got its value ("file:line:col" or "--set k=v"), for cross-key errors.
  std::map<std::string, std::string> where;
};

// Reads a YAML file, applies "section.key=value" overrides (values parsed as YAML scalars
// or flow sequences: --set data.train=[a.bin,b.bin]), validates everything.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from text; `source` names it in error messages.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

// The checks that need the device the run takes: model.dropout > 0 has no CUDA kernel, so it
// needs the CPU. parse_config runs them when train.device names a device; "auto" resolves only
// at run time, so the trainer runs them again once it knows the device, before it builds the
// model. Errors name model.dropout and train.device with where each got its value.
void validate_for_device(const Config& c, Device device);

// The resolved configuration as YAML (every key, defaults filled in); parse_config of it
// gives the same Config back.
std::string config_to_yaml(const Config& c);

// A markdown table of every key: section.key | type | default | meaning.
std::string config_keys_markdown();

}  // namespace zt
