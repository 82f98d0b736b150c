#include "tests/support/input_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <stdexcept>

#include "tests/support/check.h"

namespace zt::test {

std::string error_of_reading_fifo(const std::string& path, const std::function<void(const std::string&)>& read) {
  if (::mkfifo(path.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + path + " failed");
  auto result = std::async(std::launch::async, [&] { return error_of([&] { read(path); }); });
  if (result.wait_for(std::chrono::seconds(5)) == std::future_status::ready) return result.get();
  // The reader is stuck in open(): a writer that opens and closes at once lets it go on
  // (it then reads end-of-file).
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);  // fails (never blocks) if no reader waits
  if (fd >= 0) ::close(fd);
  result.wait();
  return "(blocked on the FIFO)";
}

}  // namespace zt::test
