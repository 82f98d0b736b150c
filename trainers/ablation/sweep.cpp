#include "trainers/ablation/sweep.h"

#include <cmath>
#include <cstdlib>
#include <optional>

#include "framework/error.h"

namespace zt::ablation {
namespace {

std::string trim(const std::string& s) {
  const char* space = " \t\r\n";
  size_t begin = s.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  size_t end = s.find_last_not_of(space);
  return s.substr(begin, end - begin + 1);
}

// The value as a number when the whole text is one (so "1e-3" and "0.001" compare equal).
std::optional<double> as_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return v;
}

bool valid_key_part(const std::string& part) {
  if (part.empty()) return false;
  for (char c : part) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> split_top_level_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::string current;
  int depth = 0;
  for (char c : text) {
    if (c == '[' || c == '{') ++depth;
    if (c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      parts.push_back(trim(current));
      current.clear();
    } else {
      current += c;
    }
  }
  parts.push_back(trim(current));
  return parts;
}

Sweep parse_sweep(const std::string& argument) {
  const std::string where = "--sweep '" + argument + "'";
  size_t eq = argument.find('=');
  ZT_CHECK(eq != std::string::npos, where, ": expected section.key=v1,v2,... (no '=')");
  Sweep sweep;
  sweep.key = trim(argument.substr(0, eq));
  size_t dot = sweep.key.find('.');
  ZT_CHECK(dot != std::string::npos && sweep.key.find('.', dot + 1) == std::string::npos &&
               valid_key_part(sweep.key.substr(0, dot)) && valid_key_part(sweep.key.substr(dot + 1)),
           where, ": the key '", sweep.key, "' is not of the form section.key (e.g. loss.z_loss_weight)");

  const std::string list = argument.substr(eq + 1);
  int depth = 0;
  for (char c : list) {
    if (c == '[' || c == '{') ++depth;
    if (c == ']' || c == '}') --depth;
    ZT_CHECK(depth >= 0, where, ": unbalanced brackets in the value list");
  }
  ZT_CHECK(depth == 0, where, ": unbalanced brackets in the value list");
  ZT_CHECK(!trim(list).empty(), where, ": no values after '=' for ", sweep.key);

  sweep.values = split_top_level_commas(list);
  for (size_t i = 0; i < sweep.values.size(); ++i) {
    const std::string& v = sweep.values[i];
    ZT_CHECK(!v.empty(), where, ": value ", i + 1, " of ", sweep.values.size(),
             " is empty (doubled or trailing comma?)");
    for (size_t j = 0; j < i; ++j) {
      const std::string& w = sweep.values[j];
      auto nv = as_number(v), nw = as_number(w);
      bool same = v == w || (nv && nw && *nv == *nw);
      ZT_CHECK(!same, where, ": the value '", v, "' repeats '", w, "'");
    }
  }
  return sweep;
}

}  // namespace zt::ablation
