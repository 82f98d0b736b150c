#pragma once
// Runs one of the built programs (build/bin/<name>) the way a user would, for tests of the
// command-line behaviour: exit status, stdout, stderr.
#include <string>

namespace zt::test {

struct ToolResult {
  int status = -1;  // exit status; -1 when killed by a signal
  std::string out, err;
};

// `args` is appended to the program's path as shell words (quote them as a shell would).
ToolResult run_tool(const std::string& name, const std::string& args);

// Whether build/bin/<name> exists (tests skip otherwise).
bool tool_built(const std::string& name);

}  // namespace zt::test
