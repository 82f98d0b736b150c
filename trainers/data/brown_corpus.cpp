#include "trainers/data/brown_corpus.h"

#include <vector>

namespace zt::data {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::vector<std::string_view> split_tokens(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    size_t j = i;
    while (j < line.size() && !is_space(line[j])) ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

bool attaches_left(std::string_view w) {  // closing punctuation: no space before it
  return w == "," || w == "." || w == ";" || w == ":" || w == "?" || w == "!" || w == ")" || w == "]" ||
         w == "''" || w == "'";
}

bool attaches_right(std::string_view w) { return w == "(" || w == "[" || w == "``"; }  // opening

// One sentence line: strip the tags ("word/tag" -> word, splitting at the LAST slash since
// words such as 1-1/2 hold slashes) and join the words.
std::string detokenize_line(std::string_view line, bool& headline) {
  std::string out;
  bool glue_next = true;  // no space before the first word
  headline = true;
  for (std::string_view token : split_tokens(line)) {
    const size_t slash = token.rfind('/');
    std::string_view word = slash == std::string_view::npos || slash == 0 ? token : token.substr(0, slash);
    const std::string_view tag = slash == std::string_view::npos ? std::string_view() : token.substr(slash + 1);
    if (tag.size() < 3 || tag.substr(tag.size() - 3) != "-hl") headline = false;
    if (!glue_next && !attaches_left(word)) out.push_back(' ');
    glue_next = attaches_right(word);
    if (word == "``" || word == "''")
      out.push_back('"');
    else
      out.append(word);
  }
  return out;
}

}  // namespace

std::string brown_to_text(std::string_view tagged) {
  std::string text;
  std::string paragraph;
  const auto end_paragraph = [&] {
    if (paragraph.empty()) return;
    while (!paragraph.empty() && (paragraph.back() == ' ' || paragraph.back() == '\n')) paragraph.pop_back();
    if (!text.empty()) text += "\n\n";
    text += paragraph;
    paragraph.clear();
  };
  size_t pos = 0;
  while (pos <= tagged.size()) {
    size_t eol = tagged.find('\n', pos);
    if (eol == std::string_view::npos) eol = tagged.size();
    const std::string_view line = tagged.substr(pos, eol - pos);
    pos = eol + 1;
    bool headline = false;
    const std::string sentence = detokenize_line(line, headline);
    if (sentence.empty()) {  // blank line: paragraph boundary
      end_paragraph();
      continue;
    }
    if (!line.empty() && line[0] == '\t') end_paragraph();  // a tab opens a new paragraph
    if (!paragraph.empty() && paragraph.back() != '\n') paragraph.push_back(' ');
    paragraph += sentence;
    if (headline) paragraph.push_back('\n');
  }
  end_paragraph();
  return text;
}

bool is_brown_document_name(std::string_view n) {
  return n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && n[2] >= '0' && n[2] <= '9' && n[3] >= '0' &&
         n[3] <= '9';
}

}  // namespace zt::data
