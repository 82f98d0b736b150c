// The NCCL process group: collectives with one rank (any GPU host) and two ranks (two GPUs,
// one thread per rank, the unique id passed through a FileStore), and vocab-parallel
// cross-entropy over two GPUs against the one-rank op. Skips where the GPUs are missing;
// compiles without CUDA or NCCL.
#include <gtest/gtest.h>

#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "framework/autograd/variable.h"
#include "framework/device.h"
#include "framework/distributed/process_group.h"
#include "framework/distributed/process_group_nccl.h"
#include "framework/distributed/store.h"
#include "ops/cross_entropy.h"
#include "tests/support/check.h"

namespace zt {
namespace {

#ifndef ZTRAIN_WITH_NCCL

TEST(Nccl, SkippedWithoutNccl) { GTEST_SKIP() << "built without CUDA and NCCL"; }

#else

// Runs body(rank) on `ranks` threads, each with its own FileStore on one fresh directory;
// an exception in any rank fails the test.
void run_ranks(int ranks, const std::function<void(int, std::shared_ptr<Store>)>& body) {
  char dir_template[] = "/tmp/zt_nccl_test_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r, make_file_store(dir, std::chrono::seconds(60)));
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::filesystem::remove_all(dir);
  for (int r = 0; r < ranks; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
}

TEST(Nccl, OneRankGroupRunsEveryCollective) {
  if (cuda_device_count() < 1) GTEST_SKIP() << "no CUDA GPU";
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  auto pg = make_nccl_process_group(RankInfo{0, 1, 0}, nullptr, Device::cuda(0));
  EXPECT_EQ(pg->backend(), "nccl");
  EXPECT_EQ(pg->size(), 1);
  for (DType dtype : {DType::f32, DType::bf16, DType::f64, DType::i64}) {
    const Tensor host = Tensor::randn({3, 5}, DType::f64, test::test_generator(), 0, 10).to(dtype);
    Tensor t = host.to(Device::cuda(0));
    pg->all_reduce(t, ReduceOp::sum);
    EXPECT_TRUE(test::close_rel(t, host, 0)) << dtype_name(dtype);
    Tensor g = Tensor::empty({1, 3, 5}, dtype, Device::cuda(0));
    test::poison(g);
    pg->all_gather(t, g);
    EXPECT_TRUE(test::close_rel(g.view({3, 5}), host, 0));
    pg->broadcast(t, 0);
    EXPECT_TRUE(test::close_rel(t, host, 0));
  }
  pg->barrier();
  Tensor cpu = Tensor::zeros({2}, DType::f32);
  EXPECT_THROW(pg->all_reduce(cpu, ReduceOp::sum), Error);
}

TEST(Nccl, TwoRanksAllReduceGatherBroadcast) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, found " << cuda_device_count();
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  run_ranks(2, [](int r, std::shared_ptr<Store> store) {
    const Device dev = Device::cuda(r);
    auto pg = make_process_group("nccl", RankInfo{r, 2, r}, store, dev);
    ZT_CHECK(pg->backend() == "nccl" && pg->rank() == r, "rank ", r, ": wrong group");
    Tensor t = Tensor::full({4, 3}, r + 1.0, DType::f32, dev);
    pg->all_reduce(t, ReduceOp::sum);
    for (double v : t.to_vector<double>()) ZT_CHECK(v == 3.0, "rank ", r, ": all_reduce sum gave ", v);
    Tensor m = Tensor::full({7}, 10.0 * r - 3, DType::f64, dev);
    pg->all_reduce(m, ReduceOp::max);
    for (double v : m.to_vector<double>()) ZT_CHECK(v == 7.0, "rank ", r, ": all_reduce max gave ", v);
    Tensor in = Tensor::full({2, 4}, 100.0 + r, DType::bf16, dev);
    Tensor out = Tensor::empty({2, 2, 4}, DType::bf16, dev);
    test::poison(out);
    pg->all_gather(in, out);
    const std::vector<double> g = out.to_vector<double>();
    for (size_t i = 0; i < g.size(); ++i)
      ZT_CHECK(g[i] == (i < 8 ? 100.0 : 101.0), "rank ", r, ": all_gather element ", i, " is ", g[i]);
    Tensor b = Tensor::full({5}, r == 1 ? 42.0 : -1.0, DType::i64, dev);
    pg->broadcast(b, 1);
    for (double v : b.to_vector<double>()) ZT_CHECK(v == 42.0, "rank ", r, ": broadcast gave ", v);
    pg->barrier();
  });
}

// Vocab-parallel cross-entropy over two GPUs (local stats, an NCCL all_gather, finish)
// equals the one-rank op on the whole vocabulary: loss, per-row terms and each gradient shard.
TEST(Nccl, VocabParallelCrossEntropyOnTwoGpusEqualsOneRank) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, found " << cuda_device_count();
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  for (DType dtype : {DType::f32, DType::bf16})
    for (ops::Reduction red : {ops::Reduction::mean, ops::Reduction::sum}) {
      const int64_t rows = 37, local = 25152, vocab = 2 * local;
      const Tensor logits = Tensor::randn({rows, vocab}, DType::f64, test::test_generator(), 0, 3).to(dtype);
      std::vector<int64_t> tv(rows);
      for (int64_t i = 0; i < rows; ++i)
        tv[i] = i % 5 == 3 ? -100 : static_cast<int64_t>(test::test_generator().below(vocab));
      tv[0] = 7;               // owned by rank 0
      tv[1] = local + 11;      // owned by rank 1
      const Tensor targets = Tensor::from_vector(tv, {rows});
      ops::CrossEntropyOptions opt;
      opt.label_smoothing = 0.1;
      opt.z_loss_weight = 1e-3;
      opt.reduction = red;

      Variable x1(logits.to(Device::cuda(0)), true);
      ops::CrossEntropyResult one = ops::cross_entropy(x1, targets.to(Device::cuda(0)), opt);
      one.loss.backward();
      const Tensor grad1 = x1.grad().to(Device::cpu());
      const double tol = dtype == DType::bf16 ? 6e-3 : 2e-5;

      run_ranks(2, [&](int r, std::shared_ptr<Store> store) {
        const Device dev = Device::cuda(r);
        ops::CrossEntropyOptions o = opt;
        o.group = make_process_group("nccl", RankInfo{r, 2, r}, store, dev);
        Variable x(logits.slice(1, r * local, (r + 1) * local).contiguous().to(dev), true);
        ops::CrossEntropyResult tp = ops::cross_entropy(x, targets.to(dev), o);
        tp.loss.backward();
        tp.check();
        const std::string who = std::string(dtype_name(dtype)) + " rank " + std::to_string(r);
        ZT_CHECK(test::close_rel(tp.loss.tensor(), one.loss.tensor(), 2e-5), who, ": loss ",
                 tp.loss.tensor().item(), " vs ", one.loss.tensor().item());
        ZT_CHECK(test::close_rel(tp.lse, one.lse, 2e-5), who, ": lse differs");
        ZT_CHECK(test::close_rel(tp.z_loss, one.z_loss, 2e-5), who, ": z_loss differs");
        ZT_CHECK(test::close_rel(tp.ce_sum, one.ce_sum, 2e-5), who, ": ce_sum differs");
        ZT_CHECK(tp.count.item() == one.count.item(), who, ": count differs");
        const auto grad_ok = test::close_rel(x.grad(), grad1.slice(1, r * local, (r + 1) * local).contiguous(), tol);
        ZT_CHECK(grad_ok, who, ": gradient shard differs: ", grad_ok.message());
      });
    }
}

// Subgroups named per group (one each here: {0} and {1} alone, then the pair), async
// all-reduces fenced by events (wait() orders the current stream, no host wait), and
// reduce_scatter over the NCCL kernel.
TEST(Nccl, SubgroupsAsyncAllReduceAndReduceScatter) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, found " << cuda_device_count();
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  run_ranks(2, [](int r, std::shared_ptr<Store> store) {
    const Device dev = Device::cuda(r);
    auto alone = make_subgroup("nccl", r, {r}, "alone" + std::to_string(r), store, dev);
    auto pair = make_subgroup("nccl", r, {0, 1}, "pair", store, dev);
    ZT_CHECK(alone->size() == 1 && pair->size() == 2 && pair->rank() == r, "rank ", r, ": wrong subgroups");
    std::vector<Tensor> ts;
    std::vector<std::shared_ptr<Work>> works;
    for (int i = 0; i < 4; ++i) {
      ts.push_back(Tensor::full({1 << 20}, r + i, DType::f32, dev));
      works.push_back(pair->all_reduce_async(ts.back(), ReduceOp::sum));
    }
    for (int i = 0; i < 4; ++i) {
      works[i]->wait();
      for (double v : ts[i].slice(0, 0, 8).to_vector<double>())
        ZT_CHECK(v == 1.0 + 2 * i, "rank ", r, ": async all_reduce ", i, " gave ", v);
    }
    Tensor in = Tensor::from_vector(std::vector<double>{1.0 + r, 2.0 + r, 3.0 + r, 4.0 + r}, {4}).to(dev);
    Tensor out = Tensor::empty({2}, DType::f64, dev);
    test::poison(out);
    pair->reduce_scatter(in, out, ReduceOp::sum);
    const std::vector<double> got = out.to_vector<double>();
    ZT_CHECK(got == (r == 0 ? std::vector<double>{3, 5} : std::vector<double>{7, 9}), "rank ", r,
             ": reduce_scatter gave ", got[0], ", ", got[1]);
  });
}

#endif  // ZTRAIN_WITH_NCCL

}  // namespace
}  // namespace zt
