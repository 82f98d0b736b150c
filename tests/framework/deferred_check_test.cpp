// framework/cuda/deferred_check.h: a flag raised on the device is reported by the next host
// read (once), unraised flags stay silent and are recycled, and checks belong to the thread
// that committed them. The flag is raised by a device-side copy queued on the stream, as a
// kernel would. Skips without a GPU (and in builds without CUDA).
#include <gtest/gtest.h>

#include <thread>

#include "framework/device.h"
#include "framework/tensor.h"
#include "tests/support/check.h"
#ifdef ZTRAIN_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/deferred_check.h"
#include "framework/cuda/stream.h"
#endif

namespace zt {
namespace {

#ifdef ZTRAIN_WITH_CUDA

const Device kGpu = Device::cuda(0);

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU"

// Queues a check whose flag the device sets to `raise` (0 or 1) behind the work already queued.
void queue_check(int raise, const std::string& message) {
  const Tensor value = Tensor::full({}, raise, DType::i32, kGpu);
  cuda::DeferredCheck check;
  ZT_CUDA_CHECK(cudaMemcpyAsync(check.device_flag(), value.raw_data(), sizeof(int), cudaMemcpyDefault,
                                cuda::current_stream()));
  check.commit([message] { ZT_FAIL(message); });
}

TEST(DeferredCheck, RaisedFlagThrowsAtTheNextHostReadOnce) {
  REQUIRE_GPU();
  const Tensor t = Tensor::full({3}, 2.0, DType::f32, kGpu);
  queue_check(0, "first (not raised)");
  queue_check(1, "second (raised)");
  queue_check(1, "third (raised, not reported: the first raised check wins)");
  EXPECT_EQ(test::error_of([&] { (void)t.to_vector<float>(); }), "second (raised)");
  EXPECT_EQ(test::error_of([&] { (void)t.to_vector<float>(); }), "(no error)");
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{2, 2, 2}));
}

TEST(DeferredCheck, UnraisedFlagsAreSilentAndReused) {
  REQUIRE_GPU();
  const Tensor t = Tensor::full({1}, 5.0, DType::f32, kGpu);
  // More checks than there are flags, without a host read in between: the oldest are
  // waited for and their flags recycled, each starting at 0 again.
  for (int i = 0; i < 2500; ++i) queue_check(0, "never raised");
  EXPECT_EQ(test::error_of([&] { (void)t.item(); }), "(no error)");
  queue_check(1, "raised on a recycled flag");
  EXPECT_EQ(test::error_of([&] { (void)t.item(); }), "raised on a recycled flag");
}

TEST(DeferredCheck, WaitingForAFreeFlagReportsARaisedCheck) {
  REQUIRE_GPU();
  queue_check(1, "raised");
  std::string error = "(no error)";
  for (int i = 0; i < 2500 && error == "(no error)"; ++i) error = test::error_of([] { queue_check(0, "never"); });
  EXPECT_EQ(error, "raised");
  cuda::wait_deferred_checks();  // leaves nothing pending for the next test
}

TEST(DeferredCheck, ChecksBelongToTheThreadThatCommittedThem) {
  REQUIRE_GPU();
  auto read = [] { (void)Tensor::full({1}, 1.0, DType::f32, kGpu).item(); };
  std::string worker_error;
  std::thread worker([&] {
    cuda::set_device(0);
    queue_check(1, "worker's check");
    worker_error = test::error_of(read);
  });
  worker.join();
  EXPECT_EQ(worker_error, "worker's check");
  // A thread that exits without reading takes its pending checks with it: never reported
  // to another thread.
  std::thread quitter([] {
    cuda::set_device(0);
    queue_check(1, "quitter's check, never read");
  });
  quitter.join();
  EXPECT_EQ(test::error_of(read), "(no error)");
}

#else

TEST(DeferredCheck, NeedsCuda) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
}  // namespace zt
