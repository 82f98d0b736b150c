#pragma once
// Every reader of a file a user names (shards, configs, checkpoints, .npy, tokenizer input,
// vocabulary files) checks it here first. open() on a FIFO blocks until a writer appears,
// a directory opens fine and reads as empty, a device may never end: all are refused
// before opening, with a message naming the path and what it is.
#include <string>

namespace zt::io {

// A zt::Error unless `path` names (through symlinks) an existing regular file.
// `what` says which input it is ("config file", "token shard", ...).
void require_regular_file(const std::string& path, const std::string& what);

// The whole file, after require_regular_file.
std::string read_regular_file(const std::string& path, const std::string& what);

}  // namespace zt::io
