// generate: samples text from a trained checkpoint.
//   generate --checkpoint runs/gpt_tiny --prompt "The jury said" --max-tokens 50 --temperature 0.8 --top-k 40
// --checkpoint takes a run directory (its newest checkpoint), its checkpoints/ folder, or a
// checkpoint file. The model's architecture comes from the config stored in the checkpoint.
// Exit status: 0, 2 for a bad command line, 1 for other errors (tools/tool_main.h).
#include <cmath>
#include <cstdio>
#include <iostream>

#include "framework/autograd/grad_mode.h"
#include "framework/error.h"
#include "models/model.h"
#include "models/sampling.h"
#include "tools/tool_main.h"
#include "trainers/checkpoint.h"
#include "trainers/config.h"
#include "trainers/data/tokenizer.h"
#include "trainers/memory_estimate.h"
#include "trainers/model_state.h"

int main(int argc, char** argv) {
  CLI::App app{"Sample text from a trained checkpoint"};
  std::string checkpoint, prompt, tokenizer, vocab_dir, device_name = "cpu";
  int64_t max_tokens = 100, top_k = 40;
  uint64_t seed = 0;
  double temperature = 1.0;
  bool stop_at_eot = true;
  app.add_option("--checkpoint", checkpoint, "run directory, checkpoints folder or checkpoint file")->required();
  app.add_option("--prompt", prompt, "text to continue (empty: start from <|endoftext|>)")->required();
  app.add_option("--max-tokens", max_tokens, "tokens to generate")->capture_default_str();
  app.add_option("--temperature", temperature, "softmax temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", top_k, "sample among the k most likely tokens; 0 = all")->capture_default_str();
  app.add_option("--seed", seed, "sampling seed")->capture_default_str();
  app.add_option("--device", device_name, "cpu | cuda | cuda:N | auto")->capture_default_str();
  app.add_option("--tokenizer", tokenizer,
                 "gpt2, cl100k, o200k or llama3 (default: the checkpoint's data.tokenizer, what its shards were made with)");
  app.add_option("--vocab-dir", vocab_dir, "directory with the tokenizer's files (default data/TOKENIZER)");
  app.add_flag("!--no-stop", stop_at_eot, "keep going after the document separator (<|endoftext|> for gpt2)");
  return zt::tool::run_tool("generate", app, argc, argv, [&] {
    zt::tool::usage_check(max_tokens >= 0, "--max-tokens must be >= 0, got ", max_tokens);
    zt::tool::usage_check(temperature >= 0 && std::isfinite(temperature), "--temperature must be >= 0, got ",
                          temperature);
    zt::tool::usage_check(top_k >= 0, "--top-k must be >= 0, got ", top_k);
    const zt::Device device = zt::resolve_device(device_name, "--device");
    // The newest intact checkpoint; a damaged newer one is named and skipped.
    const zt::CheckpointChoice choice = zt::newest_good_checkpoint(checkpoint);
    for (const auto& note : choice.skipped) std::cerr << "generate: " << note << "\n";
    const auto& path = choice.path;
    ZT_CHECK(path || !choice.skipped.empty(), "no checkpoint found at '", checkpoint,
             "' (give a run directory, its checkpoints/ folder or a .ckpt file)");
    ZT_CHECK(path, "no intact checkpoint at '", checkpoint, "' (every one is damaged, see above)");
    // Judge the header (config, tensor table, memory) before building or reading anything large.
    const zt::CheckpointHeader header = zt::read_checkpoint_header(*path);
    const zt::Config cfg = zt::parse_config(header.config_yaml, *path + " (stored config)");
    // A tensor-parallel run's manifest holds no tensors; its shard files are checked (checksums,
    // shapes) as they are read and joined into the whole model.
    if (!header.meta.contains("tensor_parallel")) zt::check_checkpoint_matches_config(header, cfg.model, *path);
    zt::check_memory_fits(zt::estimate_inference_memory(cfg.model, 1), device, "generate with the model of '" + *path + "'");
    const zt::Checkpoint ck =
        zt::read_checkpoint_for_rank(*path, 0, 1, [](const std::string&) { return zt::ShardSpec{}; }, nullptr, "model/");
    zt::Generator init(0);
    const std::unique_ptr<zt::Model> model_ptr = zt::make_model(cfg.model, init, device);
    zt::Model& model = *model_ptr;
    zt::load_model(model, ck, *path);
    const auto tokenizer_ptr = zt::data::make_tokenizer(tokenizer.empty() ? cfg.data.tokenizer : tokenizer, vocab_dir);
    const zt::data::Tokenizer& tok = *tokenizer_ptr;
    std::cerr << "generate: " << *path << " (step " << ck.meta.value("step", int64_t{0}) << ", "
              << zt::format_parameter_count(model.num_parameters()) << " parameters)\n";

    std::vector<int32_t> ids = tok.encode(prompt, zt::data::SpecialTokens::allowed);
    if (ids.empty()) ids.push_back(tok.document_separator());
    for (int32_t id : ids)
      ZT_CHECK(id < cfg.model.vocab_size, "the prompt has token ", id, " but the model's vocabulary is ",
               cfg.model.vocab_size);
    std::cout << prompt << std::flush;

    zt::NoGradGuard no_grad;
    zt::Generator gen(seed), dropout_unused(0);
    const zt::SamplingOptions so{temperature, top_k};
    const int64_t T = cfg.model.seq_len;
    for (int64_t i = 0; i < max_tokens; ++i) {
      const int64_t n = static_cast<int64_t>(ids.size()), start = std::max<int64_t>(0, n - T);
      std::vector<int64_t> ctx(ids.begin() + start, ids.end());
      const zt::Tensor input = zt::Tensor::from_vector(ctx, {1, n - start}, device);
      const zt::Variable logits = model.forward(input, zt::DType::f32, /*training=*/false, dropout_unused);
      // The last position's logits over the real vocabulary (the padded columns dropped).
      std::vector<double> last = zt::real_vocab_row(logits.tensor(), n - start - 1, cfg.model.vocab_size);
      zt::apply_logit_softcap(last, cfg.loss.logit_softcap);  // the logits the model was trained on
      const auto next = static_cast<int32_t>(zt::sample_token(last, so, gen));
      if (stop_at_eot && next == tok.document_separator()) break;
      ids.push_back(next);
      std::cout << tok.token_bytes(next) << std::flush;
    }
    std::cout << "\n";
    return 0;
  });
}
