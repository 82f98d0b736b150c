#include "trainers/data/prepare_shards.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

#include "framework/error.h"
#include "tests/trainers/data/data_test_util.h"
#include "trainers/data/brown_corpus.h"
#include "trainers/data/data_loader.h"
#include "trainers/data/token_shard.h"
#include "trainers/data/tokenizer.h"
#include "tests/support/check.h"

namespace zt::data {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

using ::zt::test::error_of;

std::vector<int32_t> as_ids(const std::vector<uint32_t>& v) { return {v.begin(), v.end()}; }

// A scratch tree: a synthetic vocabulary and some text documents.
struct Workspace {
  TempDir dir;
  test::SyntheticVocab vocab;
  std::vector<std::string> docs;
  Workspace() {
    vocab.write(dir / "vocab");
    for (int i = 0; i < 25; ++i)
      docs.push_back("hello world number " + std::to_string(i) + "\nsecond line, é " + std::string(i % 4, ' '));
  }
  PrepareOptions options() const {
    PrepareOptions o;
    o.inputs = {dir / "in"};
    o.out_dir = dir / "out";
    o.vocab_dir = dir / "vocab";
    o.progress = false;
    o.threads = 2;
    return o;
  }
  fs::file_time_type mtime(const std::string& name) const { return fs::last_write_time(dir / ("out/" + name)); }
};

TEST(PrepareShards, ValRuleIsExactAndEvenlySpread) {
  for (double f : {0.0, 0.1, 0.25, 0.29, 0.5, 0.999}) {
    for (int64_t n : {1, 7, 100, 1000}) {
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i) count += is_val_document(i, f);
      EXPECT_EQ(count, static_cast<int64_t>(n * static_cast<int64_t>(std::llround(f * 1e6)) / 1'000'000))
          << "f=" << f << " n=" << n;
    }
  }
  for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(is_val_document(i, 0.1), i % 10 == 9) << i;
}

TEST(PrepareShards, TextDocumentsGoToTrainAndValPrecededByEndOfText) {
  Workspace w;
  // Documents 0..9 in one file separated by <|endoftext|>, the rest one file each (sorted).
  std::string joined;
  for (int i = 0; i < 10; ++i) joined += (i ? "<|endoftext|>" : "") + w.docs[i];
  test::write_file(w.dir / "in/a_joined.txt", joined + "<|endoftext|>");
  for (int i = 10; i < 25; ++i) test::write_file(w.dir / ("in/b_" + std::to_string(i) + ".txt"), w.docs[i]);
  test::write_file(w.dir / "in/.hidden", "never read");

  const PrepareReport r = prepare_shards(w.options());
  EXPECT_FALSE(r.up_to_date);
  EXPECT_EQ(r.input_files, 16);
  EXPECT_EQ(r.documents, 25);
  EXPECT_EQ(r.val_documents, 2);  // documents 9 and 19

  const auto tok = make_tokenizer("gpt2", w.dir / "vocab");
  std::vector<int32_t> train, val;
  for (int i = 0; i < 25; ++i) {
    auto& split = (i == 9 || i == 19) ? val : train;
    split.push_back(tok->document_separator());
    const auto ids = tok->encode(w.docs[i]);
    split.insert(split.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(as_ids(read_token_shard(w.dir / "out/train_000.bin")), train);
  EXPECT_EQ(as_ids(read_token_shard(w.dir / "out/val_000.bin")), val);
  EXPECT_EQ(r.train_tokens, static_cast<int64_t>(train.size()));
  EXPECT_EQ(r.val_tokens, static_cast<int64_t>(val.size()));
  EXPECT_TRUE(fs::exists(w.dir / "out/manifest.json"));
}

TEST(PrepareShards, SkipsWhenUpToDateAndRebuildsWhenSomethingChanged) {
  Workspace w;
  for (int i = 0; i < 25; ++i) test::write_file(w.dir / ("in/" + std::to_string(100 + i) + ".txt"), w.docs[i]);
  auto o = w.options();
  ASSERT_FALSE(prepare_shards(o).up_to_date);
  const auto t0 = w.mtime("train_000.bin");

  PrepareReport again = prepare_shards(o);
  EXPECT_TRUE(again.up_to_date);
  EXPECT_EQ(again.documents, 25);
  EXPECT_EQ(again.train_shards.size(), 1u);
  EXPECT_EQ(w.mtime("train_000.bin"), t0) << "an up-to-date run must not rewrite shards";

  o.val_fraction = 0.2;  // other settings
  EXPECT_FALSE(prepare_shards(o).up_to_date);
  EXPECT_TRUE(prepare_shards(o).up_to_date);

  // A newer input (same size: only the mtime tells).
  const std::string in = w.dir / "in/105.txt";
  fs::last_write_time(in, fs::last_write_time(in) + std::chrono::seconds(5));
  EXPECT_FALSE(prepare_shards(o).up_to_date);

  fs::remove(w.dir / "out/val_000.bin");  // a missing output
  EXPECT_FALSE(prepare_shards(o).up_to_date);

  test::write_file(w.dir / "in/200.txt", "hello again");  // one more input
  const PrepareReport more = prepare_shards(o);
  EXPECT_FALSE(more.up_to_date);
  EXPECT_EQ(more.documents, 26);

  o.force = true;
  EXPECT_FALSE(prepare_shards(o).up_to_date);
}

// Regression: with --out inside an --input directory, a second run read the first run's
// shards and manifest as documents (and was never up to date).
TEST(PrepareShards, AnOutputDirectoryInsideAnInputDirectoryIsNotRead) {
  Workspace w;
  for (int i = 0; i < 5; ++i) test::write_file(w.dir / ("in/" + std::to_string(i) + ".txt"), w.docs[i]);
  auto o = w.options();
  o.out_dir = w.dir / "in/shards";
  const PrepareReport first = prepare_shards(o);
  EXPECT_EQ(first.input_files, 5);
  const PrepareReport again = prepare_shards(o);
  EXPECT_TRUE(again.up_to_date) << "the outputs must not count as new inputs";
  o.force = true;
  const PrepareReport forced = prepare_shards(o);
  EXPECT_EQ(forced.input_files, 5);
  EXPECT_EQ(forced.documents, 5);
  EXPECT_EQ(forced.train_tokens, first.train_tokens);
  // The same directory named through a relative path with "..".
  o.out_dir = w.dir / "in/../in/shards";
  EXPECT_EQ(prepare_shards(o).input_files, 5);
}

// `--out DIR --input DIR`: a second run found no manifest (the first one's shards were new
// inputs) and --force tokenized its own .bin shards as documents. Refused, naming both.
TEST(PrepareShards, AnOutputDirectoryThatIsAnInputIsRefused) {
  Workspace w;
  for (int i = 0; i < 3; ++i) test::write_file(w.dir / ("in/" + std::to_string(i) + ".txt"), w.docs[i]);
  auto o = w.options();
  o.out_dir = w.dir / "in";
  EXPECT_NE(error_of([&] { prepare_shards(o); }).find("is also the --input"), std::string::npos);
  o.out_dir = w.dir / "in/../in/";
  EXPECT_NE(error_of([&] { prepare_shards(o); }).find("is also the --input"), std::string::npos);
  EXPECT_FALSE(fs::exists(w.dir / "in/manifest.json"));
}

// --threads: 0 is every core; a negative count or one past 1024 is refused (100000 aborted).
TEST(PrepareShards, ThreadCountIsBounded) {
  Workspace w;
  test::write_file(w.dir / "in/a.txt", w.docs[0]);
  auto o = w.options();
  for (int t : {-1, 100000}) {
    o.threads = t;
    EXPECT_NE(error_of([&] { prepare_shards(o); }).find("--threads must be in [0, 1024]"), std::string::npos);
  }
}

TEST(PrepareShards, SplitsIntoShardsAndRemovesStaleOnes) {
  Workspace w;
  for (int i = 0; i < 25; ++i) test::write_file(w.dir / ("in/" + std::to_string(100 + i) + ".txt"), w.docs[i]);
  auto o = w.options();
  o.shard_tokens = 50;
  const PrepareReport small = prepare_shards(o);
  ASSERT_GT(small.train_shards.size(), 3u);
  int64_t total = 0;
  std::vector<int32_t> joined;
  for (size_t k = 0; k < small.train_shards.size(); ++k) {
    const auto ids = read_token_shard(small.train_shards[k]);
    if (k + 1 < small.train_shards.size()) {
      EXPECT_EQ(ids.size(), 50u);
    }
    total += static_cast<int64_t>(ids.size());
    joined.insert(joined.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(total, small.train_tokens);

  o.shard_tokens = 100'000;
  const PrepareReport big = prepare_shards(o);
  ASSERT_EQ(big.train_shards.size(), 1u);
  EXPECT_EQ(as_ids(read_token_shard(big.train_shards[0])), joined) << "sharding must not change the token stream";
  EXPECT_FALSE(fs::exists(w.dir / "out/train_001.bin")) << "stale shard of the earlier run left behind";
}

TEST(PrepareShards, BrownFormatReadsOnlyCorpusFilesAndStripsTags) {
  Workspace w;
  test::write_file(w.dir / "in/ca01", "\n\n\tHello/uh ,/, world/nn ./.\n");
  test::write_file(w.dir / "in/ca02", "\n\n\tThe/at hell/nn ./.\n");
  test::write_file(w.dir / "in/README", "BROWN CORPUS");
  test::write_file(w.dir / "in/cats.txt", "ca01 news");
  auto o = w.options();
  o.format = TextFormat::brown;
  o.val_fraction = 0.5;
  o.dump_text = w.dir / "dump.txt";
  const PrepareReport r = prepare_shards(o);
  EXPECT_EQ(r.input_files, 2);
  EXPECT_EQ(r.documents, 2);
  EXPECT_EQ(r.val_documents, 1);
  EXPECT_EQ(test::read_file(w.dir / "dump.txt"), "Hello, world.<|endoftext|>The hell.");
  const auto tok = make_tokenizer("gpt2", w.dir / "vocab");
  std::vector<int32_t> train = {tok->document_separator()};
  const auto ids = tok->encode("Hello, world.");
  train.insert(train.end(), ids.begin(), ids.end());
  EXPECT_EQ(as_ids(read_token_shard(w.dir / "out/train_000.bin")), train);
}

// A vocabulary above 65,536 ids writes version 2 shards (uint32); the manifest records the
// tokenizer, so switching tokenizers rebuilds instead of keeping the old shards.
TEST(PrepareShards, AnotherTokenizerRebuildsAndWideVocabulariesWriteVersion2) {
  Workspace w;
  for (int i = 0; i < 25; ++i) test::write_file(w.dir / ("in/" + std::to_string(100 + i) + ".txt"), w.docs[i]);
  test::SyntheticRanks ranks;
  ranks.special = R"({"<|endoftext|>": 70000})";  // vocab_size 70001: ids need 17 bits
  ranks.write(w.dir / "ranks", "o200k_base.tiktoken");

  auto o = w.options();
  const PrepareReport gpt2 = prepare_shards(o);
  EXPECT_EQ(gpt2.shard_version, 1);
  EXPECT_EQ(TokenShard::open(w.dir / "out/train_000.bin").version(), 1);

  o.tokenizer = "o200k";
  o.vocab_dir = w.dir / "ranks";
  const PrepareReport wide = prepare_shards(o);
  EXPECT_FALSE(wide.up_to_date) << "a rerun with another tokenizer must rebuild";
  EXPECT_EQ(wide.shard_version, 2);
  const TokenShard shard = TokenShard::open(w.dir / "out/train_000.bin");
  EXPECT_EQ(shard.version(), 2);
  EXPECT_EQ(shard.max_token(), 70000u);
  const auto tok = make_tokenizer("o200k", w.dir / "ranks");
  std::vector<int32_t> first = {70000};
  const auto ids = tok->encode(w.docs[0]);
  first.insert(first.end(), ids.begin(), ids.end());
  const auto all = as_ids(read_token_shard(w.dir / "out/train_000.bin"));
  EXPECT_EQ(std::vector<int32_t>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(first.size())), first);
  const auto manifest = nlohmann::json::parse(test::read_file(w.dir / "out/manifest.json"));
  EXPECT_EQ(manifest.at("settings").at("tokenizer"), "o200k");
  EXPECT_EQ(manifest.at("shard_version"), 2);
  EXPECT_TRUE(prepare_shards(o).up_to_date);

  // The data loader reads version 2 and checks its ids against the model's vocabulary.
  DataLoaderOptions lo;
  lo.shards = {w.dir / "out/train_*.bin"};
  lo.batch_size = 1;
  lo.seq_len = 4;
  lo.shuffle = false;  // the first window starts with the first document's separator
  lo.vocab_size = 70001;
  DataLoader loader(lo);
  EXPECT_EQ(loader.num_tokens(), wide.train_tokens);
  EXPECT_EQ(loader.next().inputs.data<int64_t>()[0], 70000);
  lo.vocab_size = 50257;
  const std::string msg = error_of([&] { DataLoader bad(lo); });
  EXPECT_NE(msg.find("train_000.bin' holds token id 70000"), std::string::npos) << msg;

  o.tokenizer = "gpt2";
  o.vocab_dir = w.dir / "vocab";
  EXPECT_FALSE(prepare_shards(o).up_to_date) << "and back";
  EXPECT_EQ(TokenShard::open(w.dir / "out/train_000.bin").version(), 1);
}

TEST(PrepareShards, ClearErrors) {
  Workspace w;
  test::write_file(w.dir / "in/a.txt", "hello");
  auto o = w.options();
  o.inputs = {w.dir / "nope"};
  std::string msg = error_of([&] { prepare_shards(o); });
  EXPECT_NE(msg.find("nope"), std::string::npos) << msg;

  o = w.options();
  o.vocab_dir = w.dir / "novocab";
  msg = error_of([&] { prepare_shards(o); });
  EXPECT_NE(msg.find("fetch_data.sh"), std::string::npos) << msg;

  o = w.options();
  o.tokenizer = "bert";
  msg = error_of([&] { prepare_shards(o); });
  EXPECT_NE(msg.find("unknown tokenizer 'bert'"), std::string::npos) << msg;

  o = w.options();
  o.val_fraction = 1.0;
  msg = error_of([&] { prepare_shards(o); });
  EXPECT_NE(msg.find("--val-fraction"), std::string::npos) << msg;

  o = w.options();
  o.format = TextFormat::brown;  // no ca01..cr09 files there
  msg = error_of([&] { prepare_shards(o); });
  EXPECT_NE(msg.find("Brown corpus documents"), std::string::npos) << msg;
  EXPECT_THROW(parse_text_format("pdf"), zt::Error);
}

// The issue's bar: the whole Brown corpus in well under a minute on 2 cores. Runs when
// tools/fetch_data.sh has downloaded it (CI fetches only the vocabulary).
TEST(PrepareShards, BrownCorpusEndToEnd) {
  const std::string raw = test::data_dir() + "/brown/raw";
  if (!test::have_gpt2_vocab() || !fs::exists(raw + "/ca01"))
    GTEST_SKIP() << "needs " << raw << " and the GPT-2 vocabulary (run tools/fetch_data.sh)";
  TempDir out;
  PrepareOptions o;
  o.inputs = {raw};
  o.out_dir = out.path();
  o.vocab_dir = test::gpt2_vocab_dir();
  o.format = TextFormat::brown;
  o.threads = 2;
  o.progress = false;
  const PrepareReport r = prepare_shards(o);
  EXPECT_EQ(r.documents, 500);
  EXPECT_EQ(r.val_documents, 50);
  EXPECT_GT(r.train_tokens, 1'000'000);
  EXPECT_GT(r.val_tokens, 100'000);
  EXPECT_LT(r.seconds, 60.0);
  std::printf("Brown corpus: %lld train + %lld val tokens in %.2f s\n", static_cast<long long>(r.train_tokens),
              static_cast<long long>(r.val_tokens), r.seconds);
}

// ---- the command-line tool (skipped when not built) ----

TEST(PrepareShards, Tool) {
  const std::string bin = std::string(ZTRAIN_BIN_DIR) + "/prepare_data";
  if (!fs::exists(bin)) GTEST_SKIP() << bin << " not built";
  Workspace w;
  for (int i = 0; i < 25; ++i) test::write_file(w.dir / ("in/" + std::to_string(100 + i) + ".txt"), w.docs[i]);
  const std::string cmd = bin + " --input '" + (w.dir / "in") + "' --out '" + (w.dir / "out") + "' --vocab-dir '" +
                          (w.dir / "vocab") + "' > '" + (w.dir / "log") + "' 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << test::read_file(w.dir / "log");
  EXPECT_NE(test::read_file(w.dir / "log").find("25 documents (2 val)"), std::string::npos)
      << test::read_file(w.dir / "log");
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_NE(test::read_file(w.dir / "log").find("up to date"), std::string::npos) << test::read_file(w.dir / "log");
  const std::string bad = bin + " --input /nonexistent-input --out '" + (w.dir / "o2") + "' > '" + (w.dir / "log") +
                          "' 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
  EXPECT_NE(test::read_file(w.dir / "log").find("/nonexistent-input"), std::string::npos);
}

}  // namespace
}  // namespace zt::data
