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
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdint>
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

// Writes `line` to file descriptor `fd` with as few write(2) calls as the kernel allows (one
// for a line under PIPE_BUF bytes): ranks that share a terminal or a log never interleave
// mid-line ("train rank 1train rank 0: : ...").
inline void write_line(int fd, const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere left to report to
    done += static_cast<size_t>(n);
  }
}

// CLI11 reads integers with strtoll(base 0): "010" is octal, "0x10" hex, and a value past the
// type's range silently becomes its limit (99999999999999999999 -> 2^63-1, and -1 -> 2^64-1
// for an unsigned option). This check, put on every integer option by run_tool, takes
// decimal digits only (a '-' only for signed options) and names a value out of range.
inline std::string check_decimal_integer(const std::string& text, bool is_signed) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (first != last && *first == '+') ++first;
  const bool negative = first != last && *first == '-';
  if (negative && !is_signed) return "'" + text + "' is negative; this option takes a non-negative integer";
  const char* digits = first + (negative ? 1 : 0);
  bool decimal = digits != last;
  for (const char* c = digits; c != last; ++c) decimal = decimal && *c >= '0' && *c <= '9';
  if (!decimal) return "'" + text + "' is not a decimal integer";
  std::errc ec;
  if (is_signed) {
    int64_t v = 0;
    ec = std::from_chars(first, last, v).ec;
  } else {
    uint64_t v = 0;
    ec = std::from_chars(first, last, v).ec;
  }
  if (ec == std::errc::result_out_of_range)
    return "'" + text + "' is out of range (" + (is_signed ? "-2^63 .. 2^63-1" : "0 .. 2^64-1") + ")";
  return "";
}

inline void check_integer_options(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    const std::string type = opt->get_type_name();
    const bool is_unsigned = type.rfind("UINT", 0) == 0, is_signed = type.rfind("INT", 0) == 0;
    if (!is_unsigned && !is_signed) continue;
    opt->check(CLI::Validator([is_signed](std::string& v) { return check_decimal_integer(v, is_signed); }, "", ""));
  }
}

// Parses argv[0..argc) into `app`, then returns body()'s exit code; errors end as above.
template <class Body>
int run_tool(const char* name, CLI::App& app, int argc, char** argv, Body&& body) {
  // A closed stdout (`train ... | head -1`) must not kill the tool: writes then fail with
  // EPIPE, which the writers handle (progress stops, training and its files go on).
  std::signal(SIGPIPE, SIG_IGN);
  check_integer_options(app);
  const std::string prefix = std::string(name) + ": ";
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    write_line(STDERR_FILENO, prefix + e.what() + " (see --help)\n");
    return kUsageError;
  }
  try {
    return body();
  } catch (const UsageError& e) {
    write_line(STDERR_FILENO, prefix + e.what() + "\n");
    return kUsageError;
  } catch (const std::exception& e) {
    std::fflush(stdout);  // what was printed so far comes before the error
    std::cout.flush();
    std::cerr.flush();
    write_line(STDERR_FILENO, prefix + e.what() + "\n");
    return kRuntimeError;
  }
}

}  // namespace zt::tool
