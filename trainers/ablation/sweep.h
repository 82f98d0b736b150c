#pragma once
// One --sweep argument of `ablate`: a config key and the values to try, in the user's order.
//
// Grammar: "section.key=v1,v2,..." (spaces around values are trimmed). Values stay strings:
// ablate does not know key types, so "1e-4" keeps its spelling (it names the run directory)
// and a non-numeric value for a numeric key is accepted here and rejected by the trainer's
// config loader (ablate validates every grid point with it before the first run starts).
// Commas inside [...] do not split, so a YAML flow list is one value:
//   --sweep data.train=[a.bin,b.bin],[c.bin]   -> two values.
#include <string>
#include <vector>

namespace zt::ablation {

struct Sweep {
  std::string key;                  // "loss.z_loss_weight"
  std::vector<std::string> values;  // {"0", "1e-4", "1e-3"}
};

// Throws zt::Error naming the argument on: no '=', a key that is not "section.key",
// no values, an empty value ("a,,b", trailing comma), unbalanced brackets, or a value given
// twice (textually, or numerically: "1e-3" and "0.001").
Sweep parse_sweep(const std::string& argument);

// Splits "a,[b,c],d" on commas outside brackets; parts are trimmed, empty parts kept.
std::vector<std::string> split_top_level_commas(const std::string& text);

}  // namespace zt::ablation
