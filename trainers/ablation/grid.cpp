#include "trainers/ablation/grid.h"

#include <map>

#include "framework/error.h"

namespace zt::ablation {
namespace {

std::string last_part(const std::string& key) { return key.substr(key.rfind('.') + 1); }

// Names longer than this would approach the 255-byte limit of common filesystems.
constexpr size_t kMaxNameLength = 200;

}  // namespace

std::string filesystem_safe(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '+' || c == '=' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

std::string short_key(const std::vector<Sweep>& sweeps, size_t index) {
  const std::string shortened = last_part(sweeps[index].key);
  for (size_t j = 0; j < sweeps.size(); ++j) {
    if (j != index && last_part(sweeps[j].key) == shortened) return sweeps[index].key;
  }
  return shortened;
}

std::vector<RunSpec> expand_grid(const std::vector<Sweep>& sweeps, int64_t seeds) {
  ZT_CHECK(seeds >= 1, "--seeds must be >= 1, got ", seeds);
  for (size_t i = 0; i < sweeps.size(); ++i) {
    const std::string& key = sweeps[i].key;
    ZT_CHECK(!sweeps[i].values.empty(), "--sweep ", key, ": no values");
    ZT_CHECK(key != "train.seed", "--sweep train.seed: use --seeds N (runs seeds 0..N-1)");
    ZT_CHECK(key != "log.out_dir", "--sweep log.out_dir: ablate sets each run's directory itself");
    for (size_t j = 0; j < i; ++j) ZT_CHECK(sweeps[j].key != key, "--sweep ", key, " is given twice");
  }

  // Bounded before anything is built: a grid of 10^8 runs is a typo, not a plan, and
  // expanding it would exhaust memory before a word is printed.
  size_t settings = 1;
  std::string sizes;
  for (const Sweep& sweep : sweeps) {
    sizes += std::to_string(sweep.values.size()) + " x ";
    ZT_CHECK(settings <= kMaxGridRuns / sweep.values.size(), "the grid (", sizes, "...) has more than ", kMaxGridRuns,
             " runs; sweep fewer values");
    settings *= sweep.values.size();
  }
  ZT_CHECK(static_cast<uint64_t>(seeds) <= kMaxGridRuns / settings, "the grid has ", settings, " setting(s) x --seeds ",
           seeds, " runs, more than ", kMaxGridRuns, "; sweep fewer values or run fewer seeds");

  std::vector<RunSpec> runs;
  for (size_t setting = 0; setting < settings; ++setting) {
    // Mixed-radix digits of `setting`: the last sweep varies fastest.
    std::vector<size_t> index(sweeps.size());
    size_t rest = setting;
    for (size_t s = sweeps.size(); s-- > 0;) {
      index[s] = rest % sweeps[s].values.size();
      rest /= sweeps[s].values.size();
    }
    for (int64_t seed = 0; seed < seeds; ++seed) {
      RunSpec run;
      run.seed = seed;
      for (size_t s = 0; s < sweeps.size(); ++s) {
        const std::string& value = sweeps[s].values[index[s]];
        run.values.emplace_back(sweeps[s].key, value);
        const std::string part = short_key(sweeps, s) + "=" + value;
        run.name += filesystem_safe(part) + "_";
        run.label += part + " ";
      }
      run.name += "seed=" + std::to_string(seed);
      run.label += "seed=" + std::to_string(seed);
      ZT_CHECK(run.name.size() <= kMaxNameLength, "the run name '", run.name, "' is longer than ",
               kMaxNameLength, " characters; use shorter sweep values");
      runs.push_back(std::move(run));
    }
  }

  std::map<std::string, std::string> seen;  // name -> label, to catch sanitizing collisions
  for (const RunSpec& run : runs) {
    auto [it, inserted] = seen.emplace(run.name, run.label);
    ZT_CHECK(inserted, "runs '", it->second, "' and '", run.label, "' would share the directory name '",
             run.name, "'; change one of the values");
  }
  return runs;
}

}  // namespace zt::ablation
