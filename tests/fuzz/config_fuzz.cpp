// libFuzzer target: the YAML config loader and validator on arbitrary text. Text after the
// first NUL byte, if any, is one --set override.
#include <string_view>

#include "tests/fuzz/fuzz_input.h"
#include "trainers/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string text(all.substr(0, nul));
  std::vector<std::string> overrides;
  if (nul != std::string_view::npos) overrides.emplace_back(all.substr(nul + 1));
  zt::fuzz::expect_clean_refusal([&] {
    const zt::Config c = zt::parse_config(text, "fuzz.yaml", overrides);
    // A valid config must survive its own resolved form.
    (void)zt::parse_config(zt::config_to_yaml(c), "resolved.yaml");
  });
  return 0;
}
