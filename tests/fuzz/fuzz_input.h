#pragma once
// Shared by the fuzz targets: the readers under test take a path, so each input goes to a
// file first; and the one rule every target checks, that bad input ends as a zt::Error.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "framework/error.h"

namespace zt::fuzz {

// Writes the input to this process's scratch file and returns its path.
inline const std::string& input_file(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/ztrain-fuzz-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

// Runs the reader: a zt::Error is the expected way to refuse input; any other exception
// (std::out_of_range from a bare stoull, a bad_alloc from an unchecked size) is a finding.
template <class F>
void expect_clean_refusal(F&& read) {
  try {
    read();
  } catch (const Error&) {
  }
}

}  // namespace zt::fuzz
