// libFuzzer target: TokenShard::open and reads of every token on arbitrary bytes (either
// shard version; the seeds hold both).
#include "tests/fuzz/fuzz_input.h"
#include "trainers/data/token_shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = zt::fuzz::input_file(data, size);
  zt::fuzz::expect_clean_refusal([&] {
    const zt::data::TokenShard shard = zt::data::TokenShard::open(path);
    (void)shard.max_token();
    const std::vector<uint32_t> all = zt::data::read_token_shard(path);
    if (static_cast<int64_t>(all.size()) != shard.size()) __builtin_trap();
  });
  return 0;
}
