#include "framework/io/input_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "framework/error.h"

namespace zt::io {

namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

}  // namespace

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    ZT_CHECK(errno != ENOENT, what, " '", path, "' does not exist");
    ZT_FAIL(what, " '", path, "': cannot open: ", std::strerror(errno));
  }
  ZT_CHECK(S_ISREG(st.st_mode), what, " '", path, "' is ", kind_of(st.st_mode), ", not a regular file");
}

std::string read_regular_file(const std::string& path, const std::string& what) {
  require_regular_file(path, what);
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in, what, " '", path, "': cannot open: ", std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  ZT_CHECK(!in.bad(), what, " '", path, "': read failed");
  return s.str();
}

}  // namespace zt::io
