#pragma once
// One exception type for every error a user can cause (bad shapes, dtypes, configs, files).
// Tools catch it at main() and print the message; nothing in ztrain asserts-and-aborts on
// user input.
#include <sstream>
#include <stdexcept>
#include <string>

namespace zt {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace zt

// ZT_CHECK(cond, "message parts", value, ...): throw zt::Error with the parts concatenated.
#define ZT_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::zt::Error(::zt::detail::cat(__VA_ARGS__)); \
  } while (0)
#define ZT_FAIL(...) throw ::zt::Error(::zt::detail::cat(__VA_ARGS__))
