#pragma once
// What every program in tools/ shares: how it parses its command line and how it ends.
//
//   exit 0  success, and --help
//   exit 2  usage error: an unknown or missing option, a value CLI11 cannot convert or that
//           fails its check, or a zt::tool::UsageError the tool throws for a bad combination
//   exit 1  runtime error: any other exception (a bad file, config, checkpoint, ...)
//
// Either error is one line on stderr, "<tool>: <message>", never an abort or a CLI11 exit
// code (CLI11's own codes are 100 and up).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "framework/error.h"

namespace zt::tool {

constexpr int kRuntimeError = 1;
constexpr int kUsageError = 2;

// An error in how the tool was called, found after parsing (exit 2).
class UsageError : public Error {
 public:
  using Error::Error;
};

template <class... Args>
void usage_check(bool ok, const Args&... message) {
  if (!ok) throw UsageError(detail::cat(message...));
}

// The items of a comma-separated option value, in order ("a,,b" gives "a", "", "b"; a
// trailing comma adds nothing): the tool judges each item and names a bad one.
inline std::vector<std::string> split_list(const std::string& list, char separator = ',') {
  std::vector<std::string> items;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, separator);) items.push_back(item);
  return items;
}

// Parses argv[0..argc) into `app`, then returns body()'s exit code; errors end as above.
template <class Body>
int run_tool(const char* name, CLI::App& app, int argc, char** argv, Body&& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << name << ": " << e.what() << " (see --help)\n";
    return kUsageError;
  }
  try {
    return body();
  } catch (const UsageError& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return kUsageError;
  } catch (const std::exception& e) {
    std::fflush(stdout);  // what was printed so far comes before the error
    std::cout.flush();
    std::cerr << name << ": " << e.what() << "\n";
    return kRuntimeError;
  }
}

}  // namespace zt::tool
