#include "tests/support/tool_run.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace zt::test {

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

bool tool_built(const std::string& name) { return fs::exists(std::string(ZTRAIN_BIN_DIR) + "/" + name); }

ToolResult run_tool(const std::string& name, const std::string& args) {
  static int serial = 0;
  const fs::path base = fs::temp_directory_path() /
                        ("ztrain_tool_" + std::to_string(::getpid()) + "_" + std::to_string(serial++));
  const std::string out = base.string() + ".out", err = base.string() + ".err";
  const std::string cmd =
      std::string(ZTRAIN_BIN_DIR) + "/" + name + " " + args + " > " + out + " 2> " + err + " < /dev/null";
  const int rc = std::system(cmd.c_str());
  ToolResult r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out), slurp(err)};
  fs::remove(out);
  fs::remove(err);
  return r;
}

}  // namespace zt::test
