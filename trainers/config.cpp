#include "trainers/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <functional>
#include <set>
#include <sstream>

#include "framework/error.h"
#include "framework/io/input_file.h"

namespace zt {

namespace {

// A value a key rejects; the caller adds the location and the key's name.
struct BadValue {
  std::string message;
};

std::string shortest(double v) {  // shortest text that reads back as the same double
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// The documents of a YAML text, counted up to 2 through the parser's events (nothing is built).
// Not YAML::LoadAll: on some malformed texts (", }" ...) its document loop never ends, each turn
// allocating a node, while the first document's parse has already succeeded or failed.
struct DocumentCount {
  int count = 0;
  YAML::Mark second_start = YAML::Mark::null_mark();
};

DocumentCount count_documents(const std::string& text) {
  struct Counter : YAML::EventHandler {
    DocumentCount* out;
    explicit Counter(DocumentCount* o) : out(o) {}
    void OnDocumentStart(const YAML::Mark& mark) override {
      if (++out->count == 2) out->second_start = mark;
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  };
  DocumentCount result;
  std::istringstream in(text);
  YAML::Parser parser(in);
  Counter counter(&result);
  for (int turn = 0; turn < 2 && parser.HandleNextDocument(counter); ++turn) {
  }
  return result;
}

std::string show(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing";
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  return "a map";
}

// ---- typed readers ----

// Decimal only, as YAML 1.2's core schema reads integers: yaml-cpp's own conversion takes a
// leading 0 for octal ("010" would be 8) and 0x for hex.
int64_t read_int(const YAML::Node& n) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    const size_t digits = !s.empty() && (s[0] == '+' || s[0] == '-') ? 1 : 0;
    const bool decimal = s.size() > digits && s.find_first_not_of("0123456789", digits) == std::string::npos;
    if (decimal) {
      int64_t v = 0;
      const char* first = s.data() + (s[0] == '+' ? 1 : 0);
      const auto r = std::from_chars(first, s.data() + s.size(), v);
      if (r.ec == std::errc::result_out_of_range) throw BadValue{"integer " + show(n) + " is out of range"};
      if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return v;
    }
  }
  throw BadValue{"expected an integer (decimal digits), got " + show(n)};
}

double read_real(const YAML::Node& n) {
  if (n.IsScalar()) {
    // Plain nan/inf spellings too, so they reach the range check ("must be finite").
    std::string s = n.Scalar();
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (s == "nan" || s == ".nan") return NAN;
    if (s == "inf" || s == "+inf" || s == "infinity" || s == ".inf" || s == "+.inf") return INFINITY;
    if (s == "-inf" || s == "-infinity" || s == "-.inf") return -INFINITY;
    try {
      return n.as<double>();
    } catch (const YAML::Exception&) {
    }
  }
  throw BadValue{"expected a number, got " + show(n)};
}

bool read_bool(const YAML::Node& n) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  throw BadValue{"expected true or false, got " + show(n)};
}

std::string read_string(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  throw BadValue{"expected a string, got " + show(n)};
}

std::vector<std::string> read_string_list(const YAML::Node& n) {
  if (n.IsScalar()) return {n.Scalar()};
  if (n.IsSequence()) {
    std::vector<std::string> out;
    for (const auto& e : n) {
      if (!e.IsScalar()) throw BadValue{"expected a path or a list of paths, got a list containing " + show(e)};
      out.push_back(e.Scalar());
    }
    return out;
  }
  throw BadValue{"expected a path or a list of paths, got " + show(n)};
}

// ---- the key table ----

struct KeySpec {
  std::string section, key, type, doc;
  std::function<void(Config&, const YAML::Node&)> read;  // parses and range-checks
  std::function<std::string(const Config&)> text;        // current value, for docs
  std::function<void(YAML::Emitter&, const Config&)> emit;
  bool required = false;
};

using IntRef = std::function<int64_t&(Config&)>;
using RealRef = std::function<double&(Config&)>;
using StrRef = std::function<std::string&(Config&)>;
using ListRef = std::function<std::vector<std::string>&(Config&)>;

KeySpec int_key(std::string s, std::string k, IntRef ref, int64_t lo, int64_t hi, std::string doc) {
  KeySpec spec{s, k, "int", std::move(doc), {}, {}, {}};
  spec.read = [=](Config& c, const YAML::Node& n) {
    int64_t v = read_int(n);
    if (v < lo || v > hi) {
      std::string range = hi == INT64_MAX ? ">= " + std::to_string(lo)
                                          : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
      throw BadValue{"must be " + range + ", got " + std::to_string(v)};
    }
    ref(c) = v;
  };
  spec.text = [=](const Config& c) { return std::to_string(ref(const_cast<Config&>(c))); };
  spec.emit = [=](YAML::Emitter& e, const Config& c) { e << ref(const_cast<Config&>(c)); };
  return spec;
}

// check returns "" when v is fine, else what it must be ("must be > 0").
KeySpec real_key(std::string s, std::string k, RealRef ref, std::function<std::string(double)> check,
                 std::string doc) {
  KeySpec spec{s, k, "float", std::move(doc), {}, {}, {}};
  spec.read = [=](Config& c, const YAML::Node& n) {
    double v = read_real(n);
    std::string why = std::isfinite(v) ? check(v) : "must be finite";
    if (!why.empty()) throw BadValue{why + ", got " + shortest(v)};
    ref(c) = v;
  };
  spec.text = [=](const Config& c) { return shortest(ref(const_cast<Config&>(c))); };
  spec.emit = [=](YAML::Emitter& e, const Config& c) { e << shortest(ref(const_cast<Config&>(c))); };
  return spec;
}

KeySpec choice_key(std::string s, std::string k, StrRef ref, std::vector<std::string> choices, std::string doc) {
  std::string alts;
  for (const auto& ch : choices) alts += (alts.empty() ? "" : "|") + ch;
  KeySpec spec{s, k, alts, std::move(doc), {}, {}, {}};
  spec.read = [=](Config& c, const YAML::Node& n) {
    std::string v = read_string(n);
    bool ok = false;
    for (const auto& ch : choices) ok = ok || v == ch;
    if (!ok) throw BadValue{"must be one of " + alts + ", got '" + v + "'"};
    ref(c) = v;
  };
  spec.text = [=](const Config& c) { return ref(const_cast<Config&>(c)); };
  spec.emit = [=](YAML::Emitter& e, const Config& c) { e << ref(const_cast<Config&>(c)); };
  return spec;
}

using BoolRef = std::function<bool&(Config&)>;

KeySpec bool_key(std::string s, std::string k, BoolRef ref, std::string doc) {
  KeySpec spec{s, k, "bool", std::move(doc), {}, {}, {}};
  spec.read = [=](Config& c, const YAML::Node& n) { ref(c) = read_bool(n); };
  spec.text = [=](const Config& c) { return std::string(ref(const_cast<Config&>(c)) ? "true" : "false"); };
  spec.emit = [=](YAML::Emitter& e, const Config& c) { e << ref(const_cast<Config&>(c)); };
  return spec;
}

KeySpec string_key(std::string s, std::string k, StrRef ref, std::function<std::string(const std::string&)> check,
                   std::string doc) {
  KeySpec spec{s, k, "string", std::move(doc), {}, {}, {}};
  spec.read = [=](Config& c, const YAML::Node& n) {
    std::string v = read_string(n);
    std::string why = check(v);
    if (!why.empty()) throw BadValue{why + ", got '" + v + "'"};
    ref(c) = v;
  };
  spec.text = [=](const Config& c) { return ref(const_cast<Config&>(c)); };
  spec.emit = [=](YAML::Emitter& e, const Config& c) { e << ref(const_cast<Config&>(c)); };
  return spec;
}

KeySpec list_key(std::string s, std::string k, ListRef ref, std::string doc) {
  KeySpec spec{s, k, "path or list of paths", std::move(doc), {}, {}, {}};
  spec.read = [=](Config& c, const YAML::Node& n) {
    auto v = read_string_list(n);
    if (v.empty()) throw BadValue{"must name at least one file or glob, got an empty list"};
    for (const auto& p : v)
      if (p.empty()) throw BadValue{"must not contain an empty path"};
    ref(c) = v;
  };
  spec.text = [=](const Config& c) {
    const auto& v = ref(const_cast<Config&>(c));
    std::string r;
    for (const auto& p : v) r += (r.empty() ? "" : ", ") + p;
    return v.empty() ? std::string("(required)") : r;
  };
  spec.emit = [=](YAML::Emitter& e, const Config& c) {
    const auto& v = ref(const_cast<Config&>(c));
    if (v.size() == 1) {
      e << v[0];
    } else {
      e << YAML::Flow << YAML::BeginSeq;
      for (const auto& p : v) e << p;
      e << YAML::EndSeq;
    }
  };
  spec.required = true;
  return spec;
}

std::string positive(double v) { return v > 0 ? "" : "must be > 0"; }
// A size in MiB that the trainer turns into a byte count (int64): at least one byte, at most
// 1 TiB, so the conversion never wraps (1e300 became -2^63 bytes).
std::string mebibytes(double v) {
  return v * 1048576.0 >= 1.0 && v <= 1048576.0 ? "" : "must be in [2^-20, 2^20] MiB (1 byte to 1 TiB)";
}
std::string non_negative(double v) { return v >= 0 ? "" : "must be >= 0"; }
std::string unit_open(double v) { return v >= 0 && v < 1 ? "" : "must be in [0, 1)"; }
std::string non_empty(const std::string& v) { return v.empty() ? "must not be empty" : ""; }
std::string device_name(const std::string& v) {
  if (v == "auto" || v == "cpu" || v == "cuda") return "";
  if (v.rfind("cuda:", 0) == 0 && v.size() > 5 && v.find_first_not_of("0123456789", 5) == std::string::npos)
    return "";
  return "must be auto, cpu, cuda or cuda:N";
}

#define ZT_FIELD(path) [](Config& c) -> auto& { return c.path; }
constexpr int64_t kMax = INT64_MAX;

const std::vector<KeySpec>& key_table() {
  static const std::vector<KeySpec> table = {
      int_key("model", "n_layer", ZT_FIELD(model.n_layer), 1, 1024, "transformer blocks"),
      int_key("model", "n_head", ZT_FIELD(model.n_head), 1, 1024, "attention heads; must divide d_model"),
      int_key("model", "d_model", ZT_FIELD(model.d_model), 1, 65536, "residual stream width"),
      int_key("model", "seq_len", ZT_FIELD(model.seq_len), 1, 1 << 20, "context length T (tokens per sequence)"),
      int_key("model", "vocab_size", ZT_FIELD(model.vocab_size), 2, 1 << 30,
              "tokenizer vocabulary (GPT-2: 50257); token ids must lie in [0, vocab_size)"),
      int_key("model", "vocab_multiple", ZT_FIELD(model.vocab_multiple), 1, 1 << 16,
              "embedding rows padded up to a multiple of this (50257 -> 50304); padded logits "
              "never enter the loss or sampling"),
      real_key("model", "dropout", ZT_FIELD(model.dropout), unit_open,
               "dropout on embeddings and residual branches, in [0, 1); CPU only (no CUDA kernel)"),
      choice_key("model", "arch", ZT_FIELD(model.arch), {"gpt2", "llama"},
                 "model family: gpt2 (LayerNorm, GELU, learned positions, tied head, biases; the keys below "
                 "keep GPT-2's values) or llama (any combination of the keys below; unset ones take the llama "
                 "defaults named in each)"),
      choice_key("model", "norm", ZT_FIELD(model.norm), {"layernorm", "rmsnorm"},
                 "normalisation of each block and the final norm (llama default: rmsnorm)"),
      choice_key("model", "mlp", ZT_FIELD(model.mlp), {"gelu", "swiglu"},
                 "feed-forward block: gelu (GPT-2) or swiglu = (silu(x W_gate) * x W_up) W_down (llama default)"),
      int_key("model", "d_ff", ZT_FIELD(model.d_ff), 0, 1 << 20,
              "MLP hidden width; 0: 4 * d_model for gelu, 8/3 * d_model rounded up to a multiple of 64 for swiglu"),
      choice_key("model", "position", ZT_FIELD(model.position), {"learned", "rope"},
                 "positions: a learned table added to the embeddings (GPT-2) or rotary embeddings on q and k "
                 "(llama default)"),
      real_key("model", "rope_theta", ZT_FIELD(model.rope_theta), positive,
               "RoPE base theta (Llama 3, OLMo 2: 500000)"),
      bool_key("model", "qk_norm", ZT_FIELD(model.qk_norm),
               "RMSNorm of q and k over the head dimension, per head, before RoPE (OLMo 2, Wortsman et al. 2023; "
               "llama default: false)"),
      int_key("model", "n_kv_head", ZT_FIELD(model.n_kv_head), 0, 1024,
              "key/value heads (grouped-query attention); must divide n_head; 0 = n_head"),
      bool_key("model", "tie_embeddings", ZT_FIELD(model.tie_embeddings),
               "the LM head reuses the token embedding table (GPT-2; llama default: false, its own head)"),
      bool_key("model", "bias", ZT_FIELD(model.bias),
               "biases in the linear layers and LayerNorm (GPT-2; llama default: false)"),
      real_key("model", "norm_eps", ZT_FIELD(model.norm_eps), positive,
               "epsilon of every norm (LayerNorm, RMSNorm, QK-norm)"),

      real_key("loss", "z_loss_weight", ZT_FIELD(loss.z_loss_weight), non_negative,
               "z-loss weight z (loss += z * lse^2); the target value of the z-loss schedule"),
      real_key("loss", "label_smoothing", ZT_FIELD(loss.label_smoothing), unit_open,
               "label smoothing e in [0, 1)"),
      int_key("loss", "ignore_index", ZT_FIELD(loss.ignore_index), INT64_MIN, kMax,
              "target id that contributes no loss"),
      choice_key("loss", "z_loss_schedule", ZT_FIELD(loss.z_loss_schedule), {"constant", "linear_warmup"},
                 "constant: z_loss_weight from step 0; linear_warmup: z_loss_start -> z_loss_weight over "
                 "z_loss_warmup_steps"),
      real_key("loss", "z_loss_start", ZT_FIELD(loss.z_loss_start), non_negative,
               "z-loss weight at step 0 under linear_warmup"),
      int_key("loss", "z_loss_warmup_steps", ZT_FIELD(loss.z_loss_warmup_steps), 0, kMax,
              "steps of the z-loss warmup (linear_warmup only; >= 1 there)"),
      real_key("loss", "logit_softcap", ZT_FIELD(loss.logit_softcap), non_negative,
               "logit soft-capping: logits -> cap * tanh(logits / cap) before the loss, in evaluation and in "
               "generate (Gemma 2: 30); 0 = off. The alternative to z-loss for logit drift"),
      choice_key("loss", "fused_head", ZT_FIELD(loss.fused_head), {"auto", "on", "off"},
                 "the LM head's product and the loss as one op that never holds the [tokens, vocab] logits "
                 "(ops/linear_cross_entropy.h); auto: on when the unfused logits would not fit in free memory"),

      int_key("parallel", "tensor_parallel_size", ZT_FIELD(parallel.tensor_parallel_size), 1, 1024,
              "tensor-parallel ranks T (Megatron-style); a world of N ranks is T-way tensor x N/T-way data "
              "parallel; T must divide N, n_head, 4 * d_model and the padded vocabulary"),
      string_key("parallel", "store_dir", ZT_FIELD(parallel.store_dir), [](const std::string&) { return std::string(); },
                 "rendezvous directory on a filesystem every rank sees (mpirun/srun without build/bin/launch); "
                 "$ZTRAIN_STORE_DIR wins; in either, a subfolder per job (launch's job id, Slurm's or OpenMPI's)"),
      int_key("parallel", "rendezvous_timeout_s", ZT_FIELD(parallel.rendezvous_timeout_s), 1, 86400,
              "seconds the ranks wait for each other at start-up; then the ranks that never arrived are named"),
      real_key("parallel", "bucket_mb", ZT_FIELD(parallel.bucket_mb), mebibytes,
               "data-parallel gradient bucket size in MiB (f32, 2^-20 to 2^20); each bucket's all-reduce starts "
               "when backward has filled it"),
      int_key("parallel", "zero_stage", ZT_FIELD(parallel.zero_stage), 0, 2,
              "ZeRO over the data-parallel ranks: 0 replicates the optimizer; 1 shards AdamW's moments, and with "
              "train.dtype bf16 the f32 master weights (the model keeps bf16 weights), each rank updating its "
              "shard of the weights, then all-gathering them; 2 shards the gradients too (reduce-scattered every "
              "micro-batch)"),

      real_key("optim", "lr", ZT_FIELD(optim.lr), positive, "peak learning rate (after warmup)"),
      real_key("optim", "min_lr", ZT_FIELD(optim.min_lr), non_negative,
               "learning rate at the end of the cosine decay; <= lr"),
      real_key("optim", "weight_decay", ZT_FIELD(optim.weight_decay), non_negative,
               "AdamW decoupled weight decay (matrices and embeddings only; none on biases and LayerNorm)"),
      real_key("optim", "beta1", ZT_FIELD(optim.beta1), unit_open, "AdamW beta1"),
      real_key("optim", "beta2", ZT_FIELD(optim.beta2), unit_open, "AdamW beta2"),
      real_key("optim", "eps", ZT_FIELD(optim.eps), positive, "AdamW epsilon"),
      real_key("optim", "grad_clip", ZT_FIELD(optim.grad_clip), non_negative,
               "clip gradients to this global L2 norm; 0 = no clipping"),

      int_key("schedule", "warmup_steps", ZT_FIELD(schedule.warmup_steps), 0, kMax,
              "linear learning-rate warmup steps, then cosine decay to min_lr at max_steps"),

      list_key("data", "train", ZT_FIELD(data.train), "training token shards: a path, a glob, or a list"),
      list_key("data", "val", ZT_FIELD(data.val), "validation token shards: a path, a glob, or a list"),
      choice_key("data", "tokenizer", ZT_FIELD(data.tokenizer), {"gpt2", "cl100k", "o200k", "llama3"},
                 "the tokenizer the shards were made with (prepare_data --tokenizer); generate encodes prompts "
                 "and decodes samples with it"),

      int_key("train", "batch_size", ZT_FIELD(train.batch_size), 1, kMax,
              "sequences per micro-batch over all data-parallel ranks (the global micro-batch; each of D "
              "data-parallel ranks takes batch_size / D)"),
      int_key("train", "grad_accum", ZT_FIELD(train.grad_accum), 1, kMax,
              "micro-batches per optimizer step (tokens/step = batch_size * grad_accum * seq_len, whatever "
              "the number of ranks)"),
      int_key("train", "max_steps", ZT_FIELD(train.max_steps), 1, kMax, "optimizer steps"),
      int_key("train", "seed", ZT_FIELD(train.seed), 0, kMax, "seeds initialisation, data order and dropout"),
      choice_key("train", "dtype", ZT_FIELD(train.dtype), {"f32", "bf16"},
                 "compute dtype; parameters and optimizer state stay f32"),
      choice_key("train", "activation_checkpointing", ZT_FIELD(model.activation_checkpointing),
                 {"none", "block", "mlp"},
                 "recompute activations in backward instead of keeping them (bit-identical results, about one "
                 "more forward of compute): block keeps only each transformer block's input; mlp recomputes the "
                 "second half of each block (norm, MLP, residual), dropping the MLP's hidden values"),
      string_key("train", "device", ZT_FIELD(train.device), device_name,
                 "auto (cuda when available, else cpu) | cpu | cuda | cuda:N"),
      choice_key("train", "on_nonfinite", ZT_FIELD(train.on_nonfinite), {"stop", "skip"},
                 "non-finite loss or gradient norm: stop with the step, or skip that update"),
      int_key("train", "max_skipped_consecutive", ZT_FIELD(train.max_skipped_consecutive), 1, kMax,
              "on_nonfinite=skip: the run stops (no checkpoint) after more skipped updates in a row than this"),
      int_key("train", "max_skipped_total", ZT_FIELD(train.max_skipped_total), 1, kMax,
              "on_nonfinite=skip: the run stops (no checkpoint) after more skipped updates in all than this"),
      int_key("train", "threads", ZT_FIELD(train.threads), 0, 4096, "CPU threads; 0 = OpenMP's default"),

      string_key("log", "out_dir", ZT_FIELD(log.out_dir), non_empty,
                 "run directory: metrics.jsonl, config.yaml, checkpoints/"),
      int_key("log", "log_every", ZT_FIELD(log.log_every), 1, kMax,
              "steps between progress lines when output is not a terminal and between the instability "
              "signals in metrics.jsonl (both also at step 1 and the last step)"),
      int_key("log", "eval_every", ZT_FIELD(log.eval_every), 0, kMax,
              "steps between validation evaluations (also before step 1 and after the last); 0 = only those"),
      int_key("log", "eval_batches", ZT_FIELD(log.eval_batches), 1, kMax, "validation micro-batches per evaluation"),
      int_key("log", "checkpoint_every", ZT_FIELD(log.checkpoint_every), 0, kMax,
              "steps between checkpoints (one is always written after the last step); 0 = only that one"),
      int_key("log", "keep_checkpoints", ZT_FIELD(log.keep_checkpoints), 0, kMax,
              "newest checkpoints kept on disk; 0 = keep all"),
      real_key("log", "peak_tflops", ZT_FIELD(log.peak_tflops), positive,
               "device peak TFLOP/s for the mfu field (GPU runs only)"),
  };
  return table;
}
#undef ZT_FIELD

std::string mark_str(const std::string& source, const YAML::Mark& m) {
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

const KeySpec* find_key(const std::string& section, const std::string& key) {
  for (const auto& spec : key_table())
    if (spec.section == section && spec.key == key) return &spec;
  return nullptr;
}

bool known_section(const std::string& section) {
  for (const auto& spec : key_table())
    if (spec.section == section) return true;
  return false;
}

std::string keys_of(const std::string& section) {
  std::string r;
  for (const auto& spec : key_table())
    if (spec.section == section) r += (r.empty() ? "" : ", ") + spec.key;
  return r;
}

std::string sections() {
  std::string r;
  std::set<std::string> seen;
  for (const auto& spec : key_table())
    if (seen.insert(spec.section).second) r += (r.empty() ? "" : ", ") + spec.section;
  return r;
}

void apply(Config& c, const KeySpec& spec, const YAML::Node& value, const std::string& where) {
  try {
    spec.read(c, value);
  } catch (const BadValue& e) {
    ZT_FAIL(where, ": ", spec.section, ".", spec.key, ": ", e.message);
  }
  c.where[spec.section + "." + spec.key] = where;
}

void apply_file(Config& c, const YAML::Node& root, const std::string& source) {
  if (!root.IsDefined() || root.IsNull()) return;
  ZT_CHECK(root.IsMap(), mark_str(source, root.Mark()), ": the config must be a map of sections (",
           sections(), "), got ", show(root));
  std::set<std::string> seen_sections;
  for (const auto& sec : root) {
    const std::string name = sec.first.Scalar();
    const std::string at = mark_str(source, sec.first.Mark());
    ZT_CHECK(known_section(name), at, ": unknown section '", name, "' (known sections: ", sections(), ")");
    ZT_CHECK(seen_sections.insert(name).second, at, ": section '", name, "' appears twice");
    const YAML::Node& body = sec.second;
    if (body.IsNull()) continue;  // "model:" with nothing under it
    ZT_CHECK(body.IsMap(), mark_str(source, body.Mark()), ": section '", name, "' must be a map of keys, got ",
             show(body));
    std::set<std::string> seen_keys;
    for (const auto& kv : body) {
      const std::string key = kv.first.Scalar();
      const std::string kat = mark_str(source, kv.first.Mark());
      const KeySpec* spec = find_key(name, key);
      ZT_CHECK(spec, kat, ": unknown key '", name, ".", key, "' (keys of ", name, ": ", keys_of(name), ")");
      ZT_CHECK(seen_keys.insert(key).second, kat, ": key '", name, ".", key, "' appears twice");
      // Locate values at the value itself (line of the number), keys without a value at the key.
      const std::string vat = kv.second.IsNull() ? kat : mark_str(source, kv.second.Mark());
      apply(c, *spec, kv.second, vat);
    }
  }
}

void apply_override(Config& c, const std::string& text) {
  const std::string where = "--set " + text;
  const auto eq = text.find('=');
  ZT_CHECK(eq != std::string::npos, where, ": expected section.key=value");
  const std::string name = text.substr(0, eq), value = text.substr(eq + 1);
  const auto dot = name.find('.');
  ZT_CHECK(dot != std::string::npos, where, ": expected section.key=value (the key '", name,
           "' has no section)");
  const std::string section = name.substr(0, dot), key = name.substr(dot + 1);
  ZT_CHECK(known_section(section), where, ": unknown section '", section, "' (known sections: ", sections(), ")");
  const KeySpec* spec = find_key(section, key);
  ZT_CHECK(spec, where, ": unknown key '", name, "' (keys of ", section, ": ", keys_of(section), ")");
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    ZT_FAIL(where, ": ", name, ": cannot parse the value: ", e.msg);
  }
  apply(c, *spec, node, where);
}

std::string at(const Config& c, const std::string& key) {
  auto it = c.where.find(key);
  return it != c.where.end() ? it->second : c.source;
}

// Checks that involve more than one key, or say "not yet" rather than "out of range".
// model.arch: llama gives the family keys a config leaves unset the llama defaults, so the
// resolved config states every choice (and a GPT-2 config keeps GPT-2's).
void apply_arch_defaults(Config& c) {
  if (c.model.arch != "llama") return;
  auto unset = [&](const char* key) { return !c.where.count(std::string("model.") + key); };
  if (unset("norm")) c.model.norm = "rmsnorm";
  if (unset("mlp")) c.model.mlp = "swiglu";
  if (unset("position")) c.model.position = "rope";
  if (unset("tie_embeddings")) c.model.tie_embeddings = false;
  if (unset("bias")) c.model.bias = false;
}

void validate(const Config& c) {
  ZT_CHECK(c.model.d_model % c.model.n_head == 0, at(c, "model.n_head"), ": model.n_head: ", c.model.n_head,
           " does not divide model.d_model = ", c.model.d_model);
  try {
    c.model.validate();
  } catch (const Error& e) {
    // Name where the offending key got its value: the message starts with "model.<key>" (or
    // train.activation_checkpointing, which the model section's struct holds too).
    const std::string what = e.what();
    const std::string key = what.substr(0, what.find_first_of(" :"));
    ZT_FAIL(at(c, c.where.count(key) ? key : "model.arch"), ": ", what);
  }
  try {
    c.model.validate_tensor_parallel(c.parallel.tensor_parallel_size);
  } catch (const Error& e) {
    ZT_FAIL(at(c, "parallel.tensor_parallel_size"), ": parallel.tensor_parallel_size: ", e.what());
  }
  ZT_CHECK(c.optim.min_lr <= c.optim.lr, at(c, "optim.min_lr"), ": optim.min_lr: ", shortest(c.optim.min_lr),
           " is larger than optim.lr = ", shortest(c.optim.lr));
  ZT_CHECK(c.loss.z_loss_schedule != "linear_warmup" || c.loss.z_loss_warmup_steps >= 1,
           at(c, "loss.z_loss_warmup_steps"), ": loss.z_loss_warmup_steps: must be >= 1 when "
           "loss.z_loss_schedule is linear_warmup, got ", c.loss.z_loss_warmup_steps);
  ZT_CHECK(c.loss.ignore_index < 0 || c.loss.ignore_index >= c.model.vocab_size, at(c, "loss.ignore_index"),
           ": loss.ignore_index: ", c.loss.ignore_index, " is a real token id (vocab_size ", c.model.vocab_size,
           "); use a negative value");
  for (const auto& spec : key_table())
    if (spec.required)
      ZT_CHECK(c.where.count(spec.section + "." + spec.key), c.source, ": ", spec.section, ".", spec.key,
               ": required key missing (", spec.doc, ")");
  if (c.train.device != "auto") validate_for_device(c, parse_device(c.train.device));
}

}  // namespace

void validate_for_device(const Config& c, Device device) {
  const std::string named = c.train.device == "auto" ? "auto, resolved to " + device.str() : c.train.device;
  ZT_CHECK(c.model.dropout == 0 || device.is_cpu(), at(c, "model.dropout"), ": model.dropout: ",
           shortest(c.model.dropout), " needs train.device: cpu (dropout has no CUDA kernel), but train.device is ",
           named, " (", at(c, "train.device"), "); set model.dropout: 0 or train.device: cpu");
}

Config parse_config(const std::string& yaml_text, const std::string& source, const std::vector<std::string>& overrides) {
  Config c;
  c.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
    // A file of several documents ("---") is refused instead of using one of them.
    const DocumentCount docs = count_documents(yaml_text);
    ZT_CHECK(docs.count <= 1, mark_str(source, docs.second_start), ": the file holds ", docs.count,
             " YAML documents (separated by '---'); a config is one document: merge them or keep one");
  } catch (const YAML::Exception& e) {
    ZT_FAIL(mark_str(source, e.mark), ": not valid YAML: ", e.msg);
  }
  apply_file(c, root, source);
  for (const auto& o : overrides) apply_override(c, o);
  apply_arch_defaults(c);
  validate(c);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(io::read_regular_file(path, "config file"), path, overrides);
}

std::string config_to_yaml(const Config& c) {
  YAML::Emitter e;
  e << YAML::Comment("resolved configuration (source: " + c.source + "; defaults filled in, --set applied)");
  e << YAML::BeginMap;
  std::string section;
  for (const auto& spec : key_table()) {
    if (spec.section != section) {
      if (!section.empty()) e << YAML::EndMap;
      section = spec.section;
      e << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    e << YAML::Key << spec.key << YAML::Value;
    spec.emit(e, c);
  }
  if (!section.empty()) e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::string config_keys_markdown() {
  const Config defaults;
  std::string r = "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& spec : key_table())
  {
    auto cell = [](std::string t) {  // a '|' inside a cell would end it
      for (size_t p = 0; (p = t.find('|', p)) != std::string::npos; p += 2) t.replace(p, 1, "\\|");
      return t;
    };
    r += "| `" + spec.section + "." + spec.key + "` | " + cell(spec.type) + " | " + cell(spec.text(defaults)) + " | " +
         cell(spec.doc) + " |\n";
  }
  return r;
}

}  // namespace zt
