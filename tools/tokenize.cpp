// tokenize: byte-level BPE from the command line (gpt2, cl100k, o200k, llama3).
//   tokenize --text "Hello world"                     -> 15496 995
//   tokenize --tokenizer cl100k --text "Hello world"  -> 9906 1917
//   tokenize --decode 15496 995                       -> Hello world
//   tokenize --file notes.txt                         -> the ids of a file's bytes
// Special tokens in the text ("<|endoftext|>" -> 50256 for gpt2) become their ids unless
// --no-special is given (then they are encoded as ordinary text).
#include <iostream>

#include "framework/error.h"
#include "framework/io/input_file.h"
#include "tools/tool_main.h"
#include "trainers/data/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"Byte-level BPE tokenizer: text -> ids (--text/--file) or ids -> text (--decode)"};
  std::string text, file, tokenizer = "gpt2", vocab_dir;
  std::vector<int64_t> decode_ids;
  bool no_special = false, show_pieces = false;
  auto* text_opt = app.add_option("--text", text, "text to encode");
  auto* file_opt = app.add_option("--file", file, "file whose bytes to encode");
  auto* decode_opt = app.add_option("--decode", decode_ids, "token ids to decode");
  text_opt->excludes(file_opt)->excludes(decode_opt);
  file_opt->excludes(decode_opt);
  app.add_option("--tokenizer", tokenizer, "gpt2, cl100k, o200k or llama3")->capture_default_str();
  app.add_option("--vocab-dir", vocab_dir, "directory holding the tokenizer's files (default data/TOKENIZER)");
  app.add_flag("--no-special", no_special, "encode special tokens' text (\"<|endoftext|>\") as plain text");
  app.add_flag("--pieces", show_pieces, "with --text/--file: print each id with the bytes it stands for");
  return zt::tool::run_tool("tokenize", app, argc, argv, [&] {
    zt::tool::usage_check(*text_opt || *file_opt || *decode_opt, "give one of --text, --file or --decode (see --help)");
    const auto tok = zt::data::make_tokenizer(tokenizer, vocab_dir);
    if (*decode_opt) {
      std::vector<int32_t> ids;
      for (int64_t id : decode_ids) {
        ZT_CHECK(id >= 0 && id < tok->vocab_size(), "--decode: id ", id, " is outside the vocabulary [0, ",
                 tok->vocab_size(), ") of ", tokenizer);
        ids.push_back(static_cast<int32_t>(id));
      }
      std::cout << tok->decode(ids) << "\n";
      return 0;
    }
    if (*file_opt) text = zt::io::read_regular_file(file, "--file");
    const auto special = no_special ? zt::data::SpecialTokens::as_text : zt::data::SpecialTokens::allowed;
    const std::vector<int32_t> ids = tok->encode(text, special);
    if (show_pieces) {
      for (int32_t id : ids) std::cout << id << "\t" << tok->token_bytes(id) << "\n";
      return 0;
    }
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
    return 0;
  });
}
