// libFuzzer target: read_checkpoint on arbitrary bytes (magic, header length, JSON header,
// tensor table, data).
#include "tests/fuzz/fuzz_input.h"
#include "trainers/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = zt::fuzz::input_file(data, size);
  zt::fuzz::expect_clean_refusal([&] {
    const zt::Checkpoint ck = zt::read_checkpoint(path);
    for (const auto& [name, t] : ck.tensors)
      if (t.nbytes() > size) __builtin_trap();  // nothing larger than the file was allocated
  });
  return 0;
}
