#include "trainers/data/pretokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <string>

#include "framework/error.h"
#include "trainers/data/utf8.h"

namespace zt::data {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf));
}

// Per-thread match scratch. The JIT stack is sized for pathological inputs (megabytes of one
// character class); ordinary text needs a few kilobytes.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    ZT_CHECK(data && context && jit_stack, "tokenizer: out of memory creating PCRE2 match scratch");
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& thread_scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

struct Pretokenizer::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

Pretokenizer::Pretokenizer(const char* pattern) : compiled_(std::make_unique<Compiled>()) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  ZT_CHECK(compiled_->code, "tokenizer: PCRE2 cannot compile the pre-tokenizer pattern at offset ", err_offset, ": ",
           pcre2_message(err), " (pattern ", pattern, ")");
  // JIT is an optimisation only: without it (library built without JIT) the interpreter runs.
  compiled_->jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

Pretokenizer::~Pretokenizer() = default;
Pretokenizer::Pretokenizer(Pretokenizer&&) noexcept = default;
Pretokenizer& Pretokenizer::operator=(Pretokenizer&&) noexcept = default;

bool Pretokenizer::uses_jit() const { return compiled_->jit; }

void Pretokenizer::split_valid(std::string_view text, std::vector<std::string_view>& out) const {
  MatchScratch& s = thread_scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    // The text was validated once by the caller; PCRE2's own check would rescan the
    // remaining subject on every call (quadratic on long documents).
    const int rc = pcre2_match(compiled_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) {  // cannot happen with this pattern; keep the bytes anyway
      out.push_back(text.substr(pos));
      return;
    }
    ZT_CHECK(rc >= 0, "tokenizer: PCRE2 match failed at byte ", pos, ": ", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    const size_t begin = ov[0], end = ov[1];
    if (begin > pos) out.push_back(text.substr(pos, begin - pos));  // a gap: also impossible here
    if (end == begin) {  // an empty match would loop forever; step over one character
      const size_t step = std::max<size_t>(1, utf8_sequence_length(text, begin));
      out.push_back(text.substr(begin, step));
      pos = begin + step;
      continue;
    }
    out.push_back(text.substr(begin, end - begin));
    pos = end;
  }
}

void Pretokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t valid = utf8_valid_prefix(text, pos);
    if (valid > 0) {
      split_valid(text.substr(pos, valid), out);
      pos += valid;
    }
    size_t bad = pos;
    while (bad < text.size() && utf8_sequence_length(text, bad) == 0) ++bad;
    if (bad > pos) {
      out.push_back(text.substr(pos, bad - pos));
      pos = bad;
    }
  }
}

std::vector<std::string_view> Pretokenizer::split(std::string_view text) const {
  std::vector<std::string_view> out;
  split(text, out);
  return out;
}

}  // namespace zt::data
