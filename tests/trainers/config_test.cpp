// Config loading: every key typed and range-checked, errors name the key and file:line.
#include "trainers/config.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "framework/error.h"
#include "tests/support/input_files.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

const char* kMinimal =
    "model:\n"
    "  n_layer: 2\n"
    "  n_head: 2\n"
    "  d_model: 8\n"
    "data:\n"
    "  train: data/train_*.bin\n"
    "  val: data/val_000.bin\n";

// The message of the zt::Error that parsing `text` (with overrides) throws, or "" if none.
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, "test.yaml", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, MinimalFileFillsDefaults) {
  Config c = parse_config(kMinimal, "test.yaml");
  EXPECT_EQ(c.model.n_layer, 2);
  EXPECT_EQ(c.model.d_model, 8);
  EXPECT_EQ(c.model.vocab_size, 50257);
  EXPECT_EQ(c.model.padded_vocab(), 50304);
  EXPECT_EQ(c.data.train, std::vector<std::string>{"data/train_*.bin"});
  EXPECT_EQ(c.train.device, "auto");
  EXPECT_EQ(c.loss.z_loss_schedule, "constant");
  EXPECT_EQ(c.where.at("model.n_layer"), "test.yaml:2:12");
}

TEST(Config, DataListsAndOverrides) {
  Config c = parse_config(std::string(kMinimal) + "loss:\n  z_loss_weight: 1e-4\n", "test.yaml",
                          {"loss.z_loss_weight=1e-3", "data.train=[a.bin, b.bin]", "train.device=cuda:1",
                           "log.out_dir=runs/x"});
  EXPECT_DOUBLE_EQ(c.loss.z_loss_weight, 1e-3);
  EXPECT_EQ(c.data.train, (std::vector<std::string>{"a.bin", "b.bin"}));
  EXPECT_EQ(c.train.device, "cuda:1");
  EXPECT_EQ(c.log.out_dir, "runs/x");
  EXPECT_EQ(c.where.at("loss.z_loss_weight"), "--set loss.z_loss_weight=1e-3");
}

TEST(Config, ResolvedYamlRoundTrips) {
  Config a = parse_config(std::string(kMinimal) + "optim:\n  lr: 0.0006\n  min_lr: 6e-5\n", "test.yaml",
                          {"data.val=[x.bin, y.bin]", "loss.z_loss_weight=0.0001"});
  const std::string text = config_to_yaml(a);
  Config b = parse_config(text, "resolved.yaml");
  auto body = [](const std::string& t) { return t.substr(t.find('\n')); };  // past the "# source" comment
  EXPECT_EQ(body(config_to_yaml(b)), body(text));  // same text, so every key came back
  EXPECT_EQ(b.optim.lr, a.optim.lr);   // exact doubles
  EXPECT_EQ(b.optim.min_lr, a.optim.min_lr);
  EXPECT_EQ(b.loss.z_loss_weight, 1e-4);
  EXPECT_EQ(b.data.val, a.data.val);
}

// Each bad input and the pieces its message must contain: the location and the key.
struct BadCase {
  const char* name;
  std::string yaml;                    // appended to kMinimal (which has 7 lines)
  std::vector<std::string> overrides;  // or a command-line override
  std::vector<std::string> expect;
};

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, MessageNamesKeyAndLocation) {
  const BadCase& c = GetParam();
  const std::string msg = error_of(std::string(kMinimal) + c.yaml, c.overrides);
  ASSERT_NE(msg, "") << "no error for " << c.name;
  for (const auto& part : c.expect) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
}

INSTANTIATE_TEST_SUITE_P(
    All, ConfigErrors,
    ::testing::Values(
        BadCase{"unknown_key", "optim:\n  learning_rate: 0.1\n", {}, {"test.yaml:9:3", "optim.learning_rate", "unknown key"}},
        BadCase{"unknown_section", "optimizer:\n  lr: 0.1\n", {}, {"test.yaml:8:1", "unknown section 'optimizer'"}},
        BadCase{"wrong_type_int", "train:\n  batch_size: sixteen\n", {}, {"test.yaml:9:15", "train.batch_size", "expected an integer", "sixteen"}},
        BadCase{"wrong_type_float_int", "train:\n  max_steps: 2.5\n", {}, {"test.yaml:9:14", "train.max_steps", "expected an integer"}},
        BadCase{"wrong_type_number", "optim:\n  lr: fast\n", {}, {"test.yaml:9:7", "optim.lr", "expected a number"}},
        BadCase{"wrong_type_map", "optim:\n  lr: {a: 1}\n", {}, {"test.yaml:9:7", "optim.lr", "got a map"}},
        BadCase{"wrong_type_section", "optim: 3\n", {}, {"test.yaml:8:8", "section 'optim' must be a map"}},
        BadCase{"negative_z_loss", "loss:\n  z_loss_weight: -1e-4\n", {}, {"test.yaml:9:18", "loss.z_loss_weight", "must be >= 0", "-1e-04"}},
        BadCase{"nan_z_loss", "loss:\n  z_loss_weight: .nan\n", {}, {"test.yaml:9:18", "loss.z_loss_weight", "must be finite", "nan"}},
        BadCase{"nan_z_loss_plain", "loss:\n  z_loss_weight: nan\n", {}, {"test.yaml:9:18", "loss.z_loss_weight", "must be finite"}},
        BadCase{"inf_z_loss", "loss:\n  z_loss_weight: .inf\n", {}, {"test.yaml:9:18", "loss.z_loss_weight", "must be finite"}},
        BadCase{"label_smoothing_one", "loss:\n  label_smoothing: 1.0\n", {}, {"test.yaml:9:20", "loss.label_smoothing", "must be in [0, 1)"}},
        BadCase{"label_smoothing_negative", "loss:\n  label_smoothing: -0.1\n", {}, {"test.yaml:9:20", "loss.label_smoothing"}},
        BadCase{"n_head_not_dividing", "", {"model.n_head=3"}, {"--set model.n_head=3", "model.n_head", "does not divide", "d_model = 8"}},
        BadCase{"n_head_not_dividing_file", "", {"model.d_model=9"}, {"test.yaml:3:11", "model.n_head", "does not divide"}},
        BadCase{"zero_layers", "", {"model.n_layer=0"}, {"--set model.n_layer=0", "model.n_layer", "must be in [1, 1024], got 0"}},
        BadCase{"bad_dtype", "train:\n  dtype: fp16\n", {}, {"test.yaml:9:10", "train.dtype", "f32|bf16", "'fp16'"}},
        BadCase{"bad_device", "train:\n  device: tpu\n", {}, {"test.yaml:9:11", "train.device", "auto, cpu, cuda"}},
        BadCase{"bad_on_nonfinite", "train:\n  on_nonfinite: ignore\n", {}, {"train.on_nonfinite", "stop|skip"}},
        BadCase{"bad_schedule", "loss:\n  z_loss_schedule: cosine\n", {}, {"loss.z_loss_schedule", "constant|linear_warmup"}},
        BadCase{"warmup_without_steps", "loss:\n  z_loss_schedule: linear_warmup\n", {}, {"loss.z_loss_warmup_steps", "must be >= 1"}},
        BadCase{"tensor_parallel", "parallel:\n  tensor_parallel_size: 5\n", {}, {"test.yaml:9:25", "parallel.tensor_parallel_size", "does not divide model.n_head"}},
        BadCase{"min_lr_above_lr", "optim:\n  lr: 1e-4\n  min_lr: 1e-3\n", {}, {"test.yaml:10:11", "optim.min_lr", "larger than optim.lr"}},
        BadCase{"beta_one", "optim:\n  beta2: 1\n", {}, {"optim.beta2", "must be in [0, 1)"}},
        BadCase{"duplicate_key", "optim:\n  lr: 1e-4\n  lr: 2e-4\n", {}, {"test.yaml:10:3", "optim.lr", "twice"}},
        BadCase{"duplicate_section", "model:\n  dropout: 0.1\n", {}, {"test.yaml:8:1", "section 'model' appears twice"}},
        BadCase{"ignore_index_real_token", "loss:\n  ignore_index: 5\n", {}, {"loss.ignore_index", "real token id"}},
        BadCase{"empty_value", "log:\n  out_dir:\n", {}, {"test.yaml:9:3", "log.out_dir", "got nothing"}},
        BadCase{"empty_data_list", "", {"data.train=[]"}, {"--set data.train=[]", "data.train", "empty list"}},
        BadCase{"override_unknown", "", {"model.layers=3"}, {"--set model.layers=3", "unknown key 'model.layers'"}},
        BadCase{"override_no_section", "", {"lr=3"}, {"--set lr=3", "section.key=value"}},
        BadCase{"override_no_equals", "", {"optim.lr"}, {"--set optim.lr", "section.key=value"}},
        BadCase{"override_wrong_type", "", {"train.batch_size=big"}, {"--set train.batch_size=big", "expected an integer"}},
        BadCase{"dropout_on_cuda", "train:\n  device: cuda\n", {"model.dropout=0.1"},
                {"--set model.dropout=0.1: model.dropout: 0.1 needs train.device: cpu",
                 "train.device is cuda (test.yaml:9:11)", "set model.dropout: 0 or train.device: cpu"}},
        BadCase{"hex_int", "train:\n  batch_size: 0x10\n", {}, {"test.yaml:9:15", "train.batch_size", "expected an integer (decimal digits)", "'0x10'"}},
        BadCase{"int_out_of_range", "train:\n  max_steps: 99999999999999999999\n", {}, {"train.max_steps", "out of range"}},
        BadCase{"not_yaml", "model: [\n", {}, {"test.yaml:", "not valid YAML"}},
        BadCase{"bad_arch", "", {"model.arch=mamba"}, {"--set model.arch=mamba", "model.arch", "gpt2|llama"}},
        BadCase{"gpt2_with_rmsnorm", "", {"model.norm=rmsnorm"},
                {"--set model.norm=rmsnorm: model.norm: rmsnorm needs model.arch: llama"}},
        BadCase{"gpt2_untied", "", {"model.tie_embeddings=false"},
                {"--set model.tie_embeddings=false", "needs model.arch: llama"}},
        BadCase{"bad_bool", "", {"model.qk_norm=yes please"}, {"model.qk_norm", "expected true or false"}},
        BadCase{"kv_heads_not_dividing", "", {"model.arch=llama", "model.n_kv_head=3", "model.n_head=2"},
                {"--set model.n_kv_head=3", "model.n_kv_head 3 does not divide model.n_head 2"}},
        BadCase{"rope_odd_head_dim", "", {"model.arch=llama", "model.d_model=6", "model.n_head=2"},
                {"model.position: rope needs an even head dimension"}},
        BadCase{"bad_tokenizer", "", {"data.tokenizer=sentencepiece"}, {"data.tokenizer", "gpt2|cl100k|o200k|llama3"}},
        // 1e300 MiB passed and failed at run time as "-9223372036854775808 bytes".
        BadCase{"bucket_mb_huge", "parallel:\n  bucket_mb: 1e300\n", {}, {"test.yaml:9:14", "parallel.bucket_mb", "1 byte to 1 TiB", "1e+300"}},
        BadCase{"bucket_mb_tiny", "", {"parallel.bucket_mb=1e-300"}, {"parallel.bucket_mb", "1 byte to 1 TiB"}},
        // Several documents: one of them was used without a word.
        BadCase{"two_documents", "---\noptim:\n  lr: 1\n", {}, {"test.yaml:8:1", "2 YAML documents", "one document"}}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

// Dropout needs the CPU. train.device auto passes parsing and is checked against the device it
// resolves to (the trainer calls validate_for_device at start-up).
TEST(Config, DropoutIsCheckedAgainstTheDevice) {
  const Config cpu = parse_config(kMinimal, "test.yaml", {"model.dropout=0.1", "train.device=cpu"});
  EXPECT_NO_THROW(validate_for_device(cpu, Device::cpu()));
  const Config aut = parse_config(kMinimal, "test.yaml", {"model.dropout=0.1"});
  EXPECT_NO_THROW(validate_for_device(aut, Device::cpu()));
  try {
    validate_for_device(aut, Device::cuda(1));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "--set model.dropout=0.1: model.dropout: 0.1 needs train.device: cpu (dropout has no CUDA kernel), but "
              "train.device is auto, resolved to cuda:1 (test.yaml); set model.dropout: 0 or train.device: cpu");
  }
  const Config none = parse_config(kMinimal, "test.yaml", {"train.device=cuda:1"});
  EXPECT_NO_THROW(validate_for_device(none, Device::cuda(1)));  // dropout 0 runs anywhere
}

TEST(Config, MissingRequiredDataKey) {
  try {
    parse_config("model:\n  n_layer: 1\n", "test.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train: required key missing"), std::string::npos) << e.what();
  }
}

TEST(Config, LoadsFileAndNamesIt) {
  const auto path = std::filesystem::temp_directory_path() / "ztrain_config_test.yaml";
  std::ofstream(path) << kMinimal << "loss:\n  z_loss_weight: -1\n";
  try {
    load_config(path.string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string() + ":9:18: loss.z_loss_weight"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
  EXPECT_THROW(load_config("/nonexistent/ztrain.yaml"), Error);
}

// Regression: yaml-cpp reads a leading zero as octal, so "010" became 8 without a word.
TEST(Config, IntegersAreDecimalEvenWithLeadingZeros) {
  const Config c = parse_config(std::string(kMinimal) + "train:\n  batch_size: 010\n  max_steps: +0300\n", "test.yaml",
                                {"log.log_every=007"});
  EXPECT_EQ(c.train.batch_size, 10);
  EXPECT_EQ(c.train.max_steps, 300);
  EXPECT_EQ(c.log.log_every, 7);
  EXPECT_EQ(parse_config(std::string(kMinimal) + "loss:\n  ignore_index: -0100\n", "t.yaml").loss.ignore_index, -100);
}

// Regression: `--config DIR` opened the directory, read nothing and reported a missing key.
TEST(Config, ADirectoryOrAFifoIsRefusedNamingThePath) {
  const std::string dir = std::filesystem::temp_directory_path().string();
  std::string msg;
  try {
    load_config(dir);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("config file '" + dir + "' is a directory"), std::string::npos) << msg;
  test::TempDir tmp;
  msg = test::error_of_reading_fifo(tmp.path() + "/pipe.yaml", [](const std::string& p) { load_config(p); });
  EXPECT_NE(msg.find("pipe.yaml' is a FIFO"), std::string::npos) << msg;
}

TEST(Config, ShippedConfigsLoad) {
  for (const char* name : {"gpt_small.yaml", "gpt_tiny.yaml"}) {
    const Config c = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/" + name);
    EXPECT_EQ(c.model.vocab_size, 50257) << name;
    EXPECT_EQ(c.model.padded_vocab(), 50304) << name;
  }
  const Config small = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/gpt_small.yaml");
  EXPECT_EQ(small.model.n_layer, 12);
  EXPECT_EQ(small.model.n_head, 12);
  EXPECT_EQ(small.model.d_model, 768);
  EXPECT_EQ(small.model.seq_len, 1024);
  EXPECT_EQ(small.loss.z_loss_weight, 1e-4);
}

// model.arch: llama fills the family keys a config leaves unset with the llama defaults, keeps
// the ones it sets, and the resolved YAML states every choice (it round-trips).
TEST(Config, LlamaDefaultsFillUnsetFamilyKeys) {
  const Config c = parse_config(std::string(kMinimal), "test.yaml", {"model.arch=llama", "model.qk_norm=true",
                                                                      "model.mlp=gelu"});
  EXPECT_EQ(c.model.norm, "rmsnorm");
  EXPECT_EQ(c.model.mlp, "gelu");  // set: kept
  EXPECT_EQ(c.model.position, "rope");
  EXPECT_TRUE(c.model.qk_norm);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_FALSE(c.model.bias);
  const Config back = parse_config(config_to_yaml(c), "resolved.yaml");
  EXPECT_EQ(config_to_yaml(back).substr(config_to_yaml(back).find('\n')),
            config_to_yaml(c).substr(config_to_yaml(c).find('\n')));
  // GPT-2 configs keep GPT-2's values.
  const Config g = parse_config(kMinimal, "test.yaml");
  EXPECT_EQ(g.model.arch, "gpt2");
  EXPECT_EQ(g.model.norm, "layernorm");
  EXPECT_TRUE(g.model.tie_embeddings);
}

TEST(Config, ShippedLlamaConfigsLoad) {
  const Config small = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/llama_small.yaml");
  EXPECT_EQ(small.model.arch, "llama");
  EXPECT_EQ(small.model.vocab_size, 128256);
  EXPECT_EQ(small.model.n_layer, 12);
  EXPECT_EQ(small.model.d_model, 768);
  EXPECT_TRUE(small.model.qk_norm);
  EXPECT_FALSE(small.model.tie_embeddings);
  const Config tiny = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/llama_tiny.yaml");
  EXPECT_EQ(tiny.model.arch, "llama");
}

// The 1B-class configs: the sizes their comments state, ZeRO-1 on.
TEST(Config, ShippedBillionParameterConfigsLoad) {
  const Config xl = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/gpt_xl.yaml");
  EXPECT_EQ(xl.model.n_layer, 48);
  EXPECT_EQ(xl.model.d_model, 1600);
  EXPECT_NEAR(static_cast<double>(xl.model.num_parameters()), 1.56e9, 0.01e9);
  EXPECT_EQ(xl.parallel.zero_stage, 1);
  const Config olmo = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/llama_1b.yaml");
  EXPECT_EQ(olmo.model.arch, "llama");
  EXPECT_EQ(olmo.model.padded_vocab(), 100352);
  EXPECT_NEAR(static_cast<double>(olmo.model.num_parameters()), 1.38e9, 0.01e9);
  EXPECT_EQ(olmo.data.tokenizer, "cl100k");
  EXPECT_EQ(olmo.parallel.zero_stage, 1);
}

// The learning-rate sweep's two small models (tools/gpu/run_lr_sweep.sh): the sizes their
// comments state, no weight decay, QK-norm off so that a sweep turns it on.
TEST(Config, ShippedLrSweepConfigsLoad) {
  const Config gpt = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/lr_sweep_gpt.yaml");
  EXPECT_EQ(gpt.model.num_parameters(), 30062592);
  EXPECT_EQ(gpt.optim.weight_decay, 0.0);
  const Config llama = load_config(std::string(ZTRAIN_SOURCE_DIR) + "/configs/lr_sweep_llama.yaml");
  EXPECT_EQ(llama.model.arch, "llama");
  EXPECT_EQ(llama.model.num_parameters(), 48075648);
  EXPECT_FALSE(llama.model.qk_norm);
  EXPECT_EQ(llama.optim.weight_decay, 0.0);
  EXPECT_EQ(llama.model.n_layer, gpt.model.n_layer);
  EXPECT_EQ(llama.model.d_model, gpt.model.d_model);
}

// The config fuzzer's find: on this text yaml-cpp's LoadAll never ended (a node a turn); the
// documents are now counted through the parser's events, two at most, so it is refused at once.
TEST(Config, MalformedTextIsRefusedAtOnce) {
  const std::string text("\x2c\x20\x7d\xc4\x23\x00\x00\x00\x00\x00\x6d\x0c\x6f\x64\x3a\x20\x32\x2c\x5b\x3a"
                         "\x20\x69\x6e\x61\x2c\x20\x7d\x2e\x0a",
                         29);
  const std::string first = text.substr(0, text.find('\0'));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(parse_config(first, "fuzz.yaml"), Error);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

// train.activation_checkpointing: read into the model's struct (the forward reads it), written
// back under train, refused naming the key, the value and where it came from.
TEST(Config, ActivationCheckpointingKey) {
  EXPECT_EQ(parse_config(kMinimal, "test.yaml").model.activation_checkpointing, "none");
  const Config c = parse_config(std::string(kMinimal) + "train:\n  activation_checkpointing: block\n", "test.yaml");
  EXPECT_EQ(c.model.activation_checkpointing, "block");
  EXPECT_EQ(parse_config(config_to_yaml(c), "resolved").model.activation_checkpointing, "block");
  EXPECT_NE(config_to_yaml(c).find("activation_checkpointing: block"), std::string::npos);
  EXPECT_EQ(parse_config(kMinimal, "test.yaml", {"train.activation_checkpointing=mlp"}).model.activation_checkpointing,
            "mlp");
  EXPECT_EQ(error_of(std::string(kMinimal) + "train:\n  activation_checkpointing: layers\n"),
            "test.yaml:9:29: train.activation_checkpointing: must be one of none|block|mlp, got 'layers'");
  EXPECT_EQ(error_of(kMinimal, {"train.activation_checkpointing=true"}),
            "--set train.activation_checkpointing=true: train.activation_checkpointing: must be one of "
            "none|block|mlp, got 'true'");
}

// The README's key table is the one `train --list-keys` prints, verbatim.
TEST(Config, ReadmeKeyTableIsTheValidatorsTable) {
  std::ifstream in(std::string(ZTRAIN_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md";
  const std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(readme.find(config_keys_markdown()), std::string::npos)
      << "update the README's table from build/bin/train --list-keys:\n"
      << config_keys_markdown();
}

TEST(Config, KeysTableListsEveryKey) {
  const std::string md = config_keys_markdown();
  for (const char* key : {"model.n_layer", "loss.z_loss_weight", "loss.z_loss_schedule", "parallel.tensor_parallel_size",
                          "optim.grad_clip", "schedule.warmup_steps", "data.val", "train.on_nonfinite", "log.checkpoint_every",
                          "model.arch", "model.norm", "model.mlp", "model.position", "model.qk_norm", "model.n_kv_head",
                          "model.tie_embeddings", "model.bias", "data.tokenizer", "train.activation_checkpointing"})
    EXPECT_NE(md.find(std::string("`") + key + "`"), std::string::npos) << key;
}

}  // namespace
}  // namespace zt
