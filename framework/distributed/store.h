#pragma once
// Rendezvous key-value store: ranks publish and wait for small blobs (Gloo addresses, the
// NCCL unique id). FileStore works on one machine or a shared filesystem.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace zt {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  // Blocks until key exists or the timeout passes (then throws zt::Error naming the key).
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual std::chrono::milliseconds timeout() const = 0;
};

// One file per key in `dir`, written atomically (temp file + rename).
std::shared_ptr<Store> make_file_store(const std::string& dir,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace zt
