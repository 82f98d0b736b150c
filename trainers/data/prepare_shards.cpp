#include "trainers/data/prepare_shards.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/io/input_file.h"
#include "trainers/data/brown_corpus.h"
#include "trainers/data/progress_bar.h"
#include "trainers/data/token_shard.h"
#include "trainers/data/tokenizer.h"

namespace zt::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Bump when the meaning of the outputs changes (stripping rules, document separators, ...):
// manifests of older pipelines then no longer match and the shards are rebuilt.
constexpr int kPipelineVersion = 1;
constexpr size_t kBatchTextBytes = 4u << 20;  // text tokenized per parallel batch (bounds memory)
// What separates documents in a text input (and in --dump-text), whatever the tokenizer.
constexpr const char* kDocumentSeparatorText = "<|endoftext|>";

struct InputFile {
  std::string path;
  int64_t bytes = 0;
  int64_t mtime_ns = 0;
};

InputFile stat_file(const std::string& path) {
  struct stat st {};
  ZT_CHECK(::stat(path.c_str(), &st) == 0, "cannot stat '", path, "'");
  return {path, static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::vector<InputFile> list_inputs(const PrepareOptions& o) {
  ZT_CHECK(!o.inputs.empty(), "prepare_data: no --input given");
  // --out may lie inside an --input directory: its shards, manifest and temp files are this
  // program's output, never documents (a second run would otherwise tokenize them).
  // weakly_canonical keeps a trailing '/' ("out/" -> "/abs/out/"); compare without it.
  const auto canonical = [](const fs::path& p) {
    fs::path c = fs::weakly_canonical(p);
    return c.has_filename() ? c : c.parent_path();
  };
  const fs::path out_dir = canonical(o.out_dir);
  std::vector<InputFile> files;
  for (const std::string& input : o.inputs) {
    std::error_code ec;
    const fs::file_status status = fs::status(input, ec);
    ZT_CHECK(!ec && fs::exists(status), "input '", input, "' does not exist");
    const std::string root = canonical(input).string();
    ZT_CHECK(fs::path(root) != out_dir, "--out '", o.out_dir, "' is also the --input '", input,
             "': its shards would be read as documents; write to another directory (one inside the input is fine: it "
             "is skipped)");
    if (fs::is_regular_file(status)) {
      files.push_back(stat_file(root));
      continue;
    }
    ZT_CHECK(fs::is_directory(status), "input '", input, "' is neither a file nor a directory");
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink);
         it != fs::recursive_directory_iterator(); ++it) {
      if (hidden(it->path()) || (it->is_directory() && canonical(it->path()) == out_dir)) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file()) continue;
      if (o.format == TextFormat::brown && !is_brown_document_name(it->path().filename().string())) continue;
      found.push_back(it->path().string());
    }
    ZT_CHECK(!found.empty(), "input directory '", input, "' holds no ",
             o.format == TextFormat::brown ? "Brown corpus documents (files ca01 .. cr09)" : "files");
    std::sort(found.begin(), found.end());
    for (const std::string& f : found) files.push_back(stat_file(f));
  }
  return files;
}

json file_json(const InputFile& f) { return {{"path", f.path}, {"bytes", f.bytes}, {"mtime_ns", f.mtime_ns}}; }

// Everything that changes the outputs besides the inputs' contents.
json settings_json(const PrepareOptions& o, const std::vector<std::string>& vocab_files) {
  json vocab = json::array();
  for (const std::string& f : vocab_files) vocab.push_back(file_json(stat_file(fs::weakly_canonical(f).string())));
  return {{"pipeline_version", kPipelineVersion},
          {"format", text_format_name(o.format)},
          {"val_fraction", o.val_fraction},
          {"shard_tokens", o.shard_tokens},
          {"tokenizer", o.tokenizer},
          {"vocab", vocab}};
}

// Writes one split (train or val) as a sequence of shard files of at most shard_tokens tokens.
class ShardSequence {
 public:
  ShardSequence(std::string dir, std::string prefix, int64_t shard_tokens, int32_t version)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), shard_tokens_(shard_tokens), version_(version) {}

  void append(const std::vector<int32_t>& ids) {
    size_t pos = 0;
    while (pos < ids.size()) {
      if (!writer_) {
        char name[64];
        std::snprintf(name, sizeof(name), "%s_%03zu.bin", prefix_.c_str(), files_.size());
        files_.push_back({dir_ + "/" + name, 0});
        writer_ = std::make_unique<TokenShardWriter>(files_.back().first, version_);
      }
      const size_t take = std::min<size_t>(ids.size() - pos, static_cast<size_t>(shard_tokens_ - writer_->size()));
      writer_->append(ids.data() + pos, take);
      pos += take;
      total_ += static_cast<int64_t>(take);
      if (writer_->size() == shard_tokens_) close();
    }
  }

  void finish() { close(); }
  int64_t tokens() const { return total_; }
  const std::vector<std::pair<std::string, int64_t>>& files() const { return files_; }

 private:
  void close() {
    if (!writer_) return;
    files_.back().second = writer_->size();
    writer_->finish();
    writer_.reset();
  }
  std::string dir_, prefix_;
  int64_t shard_tokens_;
  int32_t version_;
  std::unique_ptr<TokenShardWriter> writer_;
  std::vector<std::pair<std::string, int64_t>> files_;  // path, tokens
  int64_t total_ = 0;
};

bool outputs_up_to_date(const fs::path& manifest_path, const json& settings, const json& inputs,
                        int64_t newest_input_ns, PrepareReport& report) {
  std::ifstream in(manifest_path);
  if (!in) return false;
  json m;
  try {
    m = json::parse(in);
    if (m.at("settings") != settings || m.at("inputs") != inputs) return false;
    const auto version = m.at("shard_version").get<int32_t>();
    if (version != kShardVersionU16 && version != kShardVersionU32) return false;
    report.shard_version = version;
    const fs::path dir = manifest_path.parent_path();
    for (const char* split : {"train", "val"}) {
      for (const json& out : m.at("outputs").at(split)) {
        const std::string path = (dir / out.at("file").get<std::string>()).string();
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) return false;
        const int64_t tokens = out.at("tokens").get<int64_t>();
        if (st.st_size != kShardHeaderBytes + shard_token_bytes(version) * tokens) return false;
        if (stat_file(path).mtime_ns < newest_input_ns) return false;
        (std::string(split) == "train" ? report.train_shards : report.val_shards).push_back(path);
      }
    }
    report.documents = m.at("documents").at("total").get<int64_t>();
    report.val_documents = m.at("documents").at("val").get<int64_t>();
    report.train_tokens = m.at("tokens").at("train").get<int64_t>();
    report.val_tokens = m.at("tokens").at("val").get<int64_t>();
  } catch (const json::exception&) {
    return false;  // unreadable or foreign manifest: rebuild
  }
  return true;
}

// One unit of parallel work: a document's text (or tagged Brown text) in, its tokens out.
struct DocumentTask {
  std::string text;
  std::vector<int32_t> ids;
};

void tokenize_parallel(std::vector<DocumentTask>& tasks, const Tokenizer& tok, TextFormat format,
                       bool keep_text, int threads) {
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::atomic<bool> failed{false};
  const auto work = [&] {
    try {
      for (size_t i; !failed && (i = next.fetch_add(1)) < tasks.size();) {
        DocumentTask& t = tasks[i];
        if (format == TextFormat::brown) t.text = brown_to_text(t.text);
        t.ids.clear();
        t.ids.reserve(t.text.size() / 4 + 1);
        t.ids.push_back(tok.document_separator());  // llm.c's convention: every document starts with it
        tok.encode_append(t.text, t.ids, SpecialTokens::as_text);
        if (!keep_text) std::string().swap(t.text);
      }
    } catch (...) {
      if (!failed.exchange(true)) failure = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < threads; ++k) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    ZT_CHECK(out, "cannot write '", tmp.string(), "'");
    out << text;
    ZT_CHECK(out.good(), "cannot write '", tmp.string(), "'");
  }
  fs::rename(tmp, path);
}

std::string mb(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

}  // namespace

TextFormat parse_text_format(const std::string& name) {
  if (name == "text") return TextFormat::text;
  if (name == "brown") return TextFormat::brown;
  ZT_FAIL("unknown input format '", name, "' (expected text or brown)");
}

const char* text_format_name(TextFormat format) { return format == TextFormat::brown ? "brown" : "text"; }

bool is_val_document(int64_t index, double val_fraction) {
  // Exact integer arithmetic on the fraction in millionths: no rounding drift between machines.
  const auto f = static_cast<int64_t>(std::llround(val_fraction * 1e6));
  return (index + 1) * f / 1'000'000 > index * f / 1'000'000;
}

PrepareReport prepare_shards(const PrepareOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  ZT_CHECK(!o.out_dir.empty(), "prepare_data: --out is required");
  ZT_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "--val-fraction must be in [0, 1), got ", o.val_fraction);
  ZT_CHECK(o.shard_tokens > 0 && o.shard_tokens <= INT32_MAX, "--shard-tokens must be in [1, 2^31), got ",
           o.shard_tokens);
  ZT_CHECK(o.threads >= 0 && o.threads <= kMaxPrepareThreads, "--threads must be in [0, ", kMaxPrepareThreads,
           "] (0: every core), got ", o.threads);
  const int threads = o.threads > 0 ? o.threads
                                    : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u,
                                                                  static_cast<unsigned>(kMaxPrepareThreads)));

  const std::vector<InputFile> files = list_inputs(o);
  const std::vector<std::string> vocab_files = tokenizer_files(o.tokenizer, o.vocab_dir);  // checks the name
  for (const std::string& f : vocab_files)
    ZT_CHECK(fs::exists(f), o.tokenizer, " vocabulary file '", f, "' is missing (run tools/fetch_data.sh --tokenizers ",
             o.tokenizer, ", or pass --vocab-dir)");
  const json settings = settings_json(o, vocab_files);
  json inputs = json::array();
  int64_t newest_ns = 0, total_bytes = 0;
  for (const InputFile& f : files) {
    inputs.push_back(file_json(f));
    newest_ns = std::max(newest_ns, f.mtime_ns);
    total_bytes += f.bytes;
  }
  for (const json& v : settings["vocab"]) newest_ns = std::max(newest_ns, v["mtime_ns"].get<int64_t>());

  PrepareReport report;
  report.input_files = static_cast<int64_t>(files.size());
  report.input_bytes = total_bytes;
  const fs::path out_dir(o.out_dir);
  const fs::path manifest_path = out_dir / "manifest.json";
  if (!o.force && o.dump_text.empty() && outputs_up_to_date(manifest_path, settings, inputs, newest_ns, report)) {
    report.up_to_date = true;
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }
  report = PrepareReport{};
  report.input_files = static_cast<int64_t>(files.size());
  report.input_bytes = total_bytes;

  fs::create_directories(out_dir);
  fs::remove(manifest_path);  // from here until the end the outputs are not trustworthy
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(o.tokenizer, o.vocab_dir);
  const Tokenizer& tok = *tokenizer;
  report.shard_version = shard_version_for_vocab(tok.vocab_size());
  ShardSequence train(out_dir.string(), "train", o.shard_tokens, report.shard_version),
      val(out_dir.string(), "val", o.shard_tokens, report.shard_version);
  std::unique_ptr<std::ofstream> dump;
  if (!o.dump_text.empty()) {
    dump = std::make_unique<std::ofstream>(o.dump_text, std::ios::binary | std::ios::trunc);
    ZT_CHECK(*dump, "cannot write --dump-text file '", o.dump_text, "'");
  }

  ProgressBar bar("prepare_data", total_bytes, o.progress);
  int64_t done_bytes = 0, doc_index = 0;
  std::vector<DocumentTask> batch;
  size_t batch_bytes = 0;
  int64_t batch_file_bytes = 0;
  const auto flush = [&] {
    tokenize_parallel(batch, tok, o.format, dump != nullptr, threads);
    for (DocumentTask& t : batch) {
      const bool to_val = is_val_document(doc_index++, o.val_fraction);
      (to_val ? val : train).append(t.ids);
      report.val_documents += to_val;
      if (dump) {
        if (report.documents > 0) *dump << kDocumentSeparatorText;
        *dump << t.text;
      }
      ++report.documents;
    }
    batch.clear();
    batch_bytes = 0;
    done_bytes += batch_file_bytes;
    batch_file_bytes = 0;
    bar.update(done_bytes, std::to_string(train.tokens() + val.tokens()) + " tokens");
  };
  for (const InputFile& f : files) {
    std::string content = io::read_regular_file(f.path, "input file");
    batch_file_bytes += f.bytes;
    batch_bytes += content.size();
    if (o.format == TextFormat::brown) {
      batch.push_back({std::move(content), {}});
    } else {
      const std::string_view sep(kDocumentSeparatorText);
      const std::string_view all(content);
      size_t pos = 0;
      while (pos <= all.size()) {
        size_t hit = all.find(sep, pos);
        if (hit == std::string_view::npos) hit = all.size();
        if (hit > pos) batch.push_back({std::string(all.substr(pos, hit - pos)), {}});
        pos = hit + sep.size();
      }
    }
    if (batch_bytes >= kBatchTextBytes) flush();
  }
  flush();
  train.finish();
  val.finish();
  if (dump) {
    dump->close();
    ZT_CHECK(!dump->fail(), "cannot write --dump-text file '", o.dump_text, "'");
  }
  ZT_CHECK(train.tokens() > 0, "prepare_data: the inputs hold no documents for the train split");

  // Remove shards of an earlier, larger run so a glob like train_*.bin sees only this run's.
  json outputs = {{"train", json::array()}, {"val", json::array()}};
  std::vector<std::string> keep;
  for (const auto* seq : {&train, &val}) {
    const bool is_val = seq == &val;
    for (const auto& [path, tokens] : seq->files()) {
      outputs[is_val ? "val" : "train"].push_back({{"file", fs::path(path).filename().string()}, {"tokens", tokens}});
      (is_val ? report.val_shards : report.train_shards).push_back(path);
      keep.push_back(fs::path(path).filename().string());
    }
  }
  const std::regex shard_name(R"((train|val)_[0-9]{3,}\.bin)");
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, shard_name) && std::find(keep.begin(), keep.end(), name) == keep.end())
      fs::remove(entry.path());
  }

  report.train_tokens = train.tokens();
  report.val_tokens = val.tokens();
  const json manifest = {{"tool", "prepare_data"},
                         {"settings", settings},
                         {"inputs", inputs},
                         {"shard_version", report.shard_version},
                         {"outputs", outputs},
                         {"documents", {{"total", report.documents}, {"val", report.val_documents}}},
                         {"tokens", {{"train", report.train_tokens}, {"val", report.val_tokens}}}};
  write_text_atomically(manifest_path, manifest.dump(1) + "\n");
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  bar.finish(std::to_string(report.train_tokens + report.val_tokens) + " tokens from " + mb(total_bytes));
  return report;
}

}  // namespace zt::data
