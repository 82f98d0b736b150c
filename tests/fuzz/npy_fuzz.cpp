// libFuzzer target: io::read_npy on arbitrary bytes.
#include "framework/io/npy.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = zt::fuzz::input_file(data, size);
  zt::fuzz::expect_clean_refusal([&] {
    const zt::Tensor t = zt::io::read_npy(path);
    // What was read must be whole: touch every byte (ASan checks each read).
    uint8_t sum = 0;
    for (size_t i = 0; i < t.nbytes(); ++i) sum = static_cast<uint8_t>(sum + static_cast<const uint8_t*>(t.raw_data())[i]);
    if (t.nbytes() > size) __builtin_trap();  // nothing larger than the file was allocated
    asm volatile("" : : "r"(sum));
  });
  return 0;
}
