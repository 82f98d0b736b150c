#pragma once
// Helpers for tests of readers of user-named files (shards, configs, checkpoints, .npy, ...).
#include <functional>
#include <string>

namespace zt::test {

// Makes a FIFO at `path` and runs read(path) on a thread. A reader that opens the FIFO
// would block forever; after a few seconds this opens the FIFO's other end to release it
// and returns "(blocked on the FIFO)". Otherwise the zt::Error text, or "(no error)".
std::string error_of_reading_fifo(const std::string& path, const std::function<void(const std::string&)>& read);

}  // namespace zt::test
