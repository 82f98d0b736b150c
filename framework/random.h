#pragma once
// Seeded random numbers, identical on every platform (no std:: distributions, whose output
// differs between standard libraries): xoshiro256** seeded by splitmix64, Box-Muller normals.
#include <cstdint>

namespace zt {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64();
  double uniform();                 // [0, 1)
  double normal();                  // mean 0, std 1
  uint64_t below(uint64_t n);       // uniform integer in [0, n)

  // Full state, for checkpoints (resume must continue the same stream).
  struct State {
    uint64_t s[4];
    double spare;
    bool has_spare;
  };
  State state() const { return {{s_[0], s_[1], s_[2], s_[3]}, spare_, has_spare_}; }
  void set_state(const State& st);

 private:
  uint64_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace zt
