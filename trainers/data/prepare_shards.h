#pragma once
// Text -> token shards: the work behind tools/prepare_data.
//
// Inputs are files or directories (walked recursively, hidden entries skipped, sorted by path).
// Documents: a text file is split at each "<|endoftext|>"; in the brown format each corpus
// file (ca01..cr09) is one document, its tags stripped (brown_corpus.h). Every document is
// tokenized (threads over documents) with the chosen tokenizer (tokenizer.h) and written
// preceded by the tokenizer's document separator (GPT-2's end-of-text token 50256, as llm.c
// does; <|begin_of_text|> for llama3) to OUT/train_NNN.bin or OUT/val_NNN.bin (token_shard.h:
// version 1, llm.c's uint16 ids, when the vocabulary fits 16 bits, else version 2).
//
// The validation split is a fixed rule on the document index i (0-based, in input order):
// i goes to val when floor((i+1) f) > floor(i f) for the fraction f, i.e. exactly floor(n f)
// of n documents, evenly spread (f = 0.1: documents 9, 19, 29, ...). It depends on nothing
// but the inputs and f, so val stays the same across runs and machines.
//
// Idempotent: OUT/manifest.json records the settings (the tokenizer's name and files among
// them), the inputs (path, size, mtime) and the outputs; a run whose settings and inputs match and whose outputs are intact and newer than
// every input does nothing. The manifest is written last, so an interrupted run is redone.
#include <cstdint>
#include <string>
#include <vector>

namespace zt::data {

enum class TextFormat { text, brown };
TextFormat parse_text_format(const std::string& name);  // "text" | "brown"
const char* text_format_name(TextFormat format);

// The most tokenizer threads prepare_data starts (each holds a batch of documents).
constexpr int kMaxPrepareThreads = 1024;

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  std::string tokenizer = "gpt2";  // a name of tokenizer_names()
  std::string vocab_dir;           // empty: default_vocab_dir(tokenizer)
  TextFormat format = TextFormat::text;
  double val_fraction = 0.1;           // in [0, 1)
  int64_t shard_tokens = 100'000'000;  // tokens per shard file (llm.c's size)
  int threads = 0;                     // 0: every core; at most kMaxPrepareThreads
  bool force = false;                  // rebuild even when up to date
  bool progress = true;                // progress bar / lines on stderr
  std::string dump_text;               // also write the documents' text here (joined by <|endoftext|>)
};

struct PrepareReport {
  bool up_to_date = false;  // nothing was done
  int64_t input_files = 0, input_bytes = 0;
  int64_t documents = 0, val_documents = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> train_shards, val_shards;  // full paths
  int32_t shard_version = 0;                          // of every shard written
  double seconds = 0;
};

PrepareReport prepare_shards(const PrepareOptions& options);

// The document-index rule above.
bool is_val_document(int64_t index, double val_fraction);

}  // namespace zt::data
