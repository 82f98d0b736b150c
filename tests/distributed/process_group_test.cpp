// Store, rank info, process groups (single rank and Gloo on 2-4 ranks over loopback).
#include "framework/distributed/process_group.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/distributed/store.h"
#include "tests/support/check.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

using ::zt::test::error_of;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- FileStore -----------------------------------------------------------------------------

TEST(FileStore, SetThenGetAnyKey) {
  test::TempDir dir;
  auto store = make_file_store(dir.path());
  const std::vector<char> a = {'x', '\0', 'y'}, b(100000, 'q');
  store->set("gloo/group0/rank_1", a);
  store->set("plain", b);
  store->set("", {});  // odd but legal
  EXPECT_EQ(store->get("gloo/group0/rank_1"), a);
  EXPECT_EQ(store->get("plain"), b);
  EXPECT_TRUE(store->get("").empty());
  store->set("plain", a);  // overwrite
  EXPECT_EQ(store->get("plain"), a);
  // A second store object on the same directory sees the same keys (another rank).
  EXPECT_EQ(make_file_store(dir.path())->get("gloo/group0/rank_1"), a);
  // Only finished files are visible: no temp files are left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_NE(entry.path().filename().string().rfind(".tmp", 0), 0u) << entry.path();
}

TEST(FileStore, GetWaitsForALaterSet) {
  test::TempDir dir;
  auto store = make_file_store(dir.path());
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    make_file_store(dir.path())->set("late", {'o', 'k'});
  });
  EXPECT_EQ(store->get("late"), (std::vector<char>{'o', 'k'}));
  writer.join();
}

TEST(FileStore, TimeoutNamesTheKey) {
  test::TempDir dir;
  auto store = make_file_store(dir.path(), std::chrono::milliseconds(50));
  const std::string msg = error_of([&] { store->get("rank_3"); });
  EXPECT_TRUE(contains(msg, "timed out")) << msg;
  EXPECT_TRUE(contains(msg, "'rank_3'")) << msg;
  EXPECT_TRUE(contains(msg, dir.path())) << msg;
}

TEST(FileStore, UnusableDirectoryIsAnError) {
  test::TempDir dir;
  const std::string file = dir.path() + "/a_file";
  std::ofstream(file) << "x";
  EXPECT_TRUE(contains(error_of([&] { make_file_store(file); }), "cannot create or open directory"));
}

TEST(FileStore, FromEnvironment) {
  test::TempDir dir;
  ::setenv("ZTRAIN_STORE_DIR", dir.path().c_str(), 1);
  make_store_from_env()->set("k", {'1'});
  EXPECT_EQ(make_file_store(dir.path())->get("k"), std::vector<char>{'1'});
  ::unsetenv("ZTRAIN_STORE_DIR");
  EXPECT_TRUE(contains(error_of([] { make_store_from_env(); }), "ZTRAIN_STORE_DIR is not set"));
}

// ---- rank info -----------------------------------------------------------------------------

TEST(RankInfo, FromEnvironment) {
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("LOCAL_RANK");
  RankInfo d = rank_info_from_env();
  EXPECT_EQ(d.rank, 0);
  EXPECT_EQ(d.world_size, 1);
  EXPECT_EQ(d.local_rank, 0);
  ::setenv("RANK", "2", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  RankInfo r = rank_info_from_env();
  EXPECT_EQ(r.rank, 2);
  EXPECT_EQ(r.world_size, 4);
  EXPECT_EQ(r.local_rank, 1);
  ::setenv("RANK", "4", 1);
  EXPECT_TRUE(contains(error_of([] { rank_info_from_env(); }), "RANK=4 is outside WORLD_SIZE=4"));
  ::setenv("RANK", "two", 1);
  EXPECT_TRUE(contains(error_of([] { rank_info_from_env(); }), "RANK='two' is not a non-negative integer"));
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("LOCAL_RANK");
}

// mpirun (OpenMPI) and srun (Slurm) name the layout in their own variables.
TEST(RankInfo, FromMpirunAndSrun) {
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                        "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"})
    ::unsetenv(v);
  EXPECT_EQ(rank_info_from_env().launcher, "none");
  ::setenv("SLURM_PROCID", "5", 1);
  ::setenv("SLURM_NTASKS", "8", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  RankInfo s = rank_info_from_env();
  EXPECT_EQ(s.launcher, "srun");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 8);
  EXPECT_EQ(s.local_rank, 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);  // mpirun's variables win over Slurm's (mpirun inside an allocation)
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  RankInfo m = rank_info_from_env();
  EXPECT_EQ(m.launcher, "mpirun");
  EXPECT_EQ(m.rank, 3);
  EXPECT_EQ(m.world_size, 4);
  EXPECT_EQ(m.local_rank, 3);
  EXPECT_EQ(m.variables, "OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_RANK=3");
  ::setenv("OMPI_COMM_WORLD_RANK", "4", 1);
  EXPECT_TRUE(contains(error_of([] { rank_info_from_env(); }), "OMPI_COMM_WORLD_RANK=4 is outside OMPI_COMM_WORLD_SIZE=4"));
  // One of the pair missing was read as rank 0 (or a world of one) without a word.
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  EXPECT_TRUE(contains(error_of([] { rank_info_from_env(); }),
                       "OMPI_COMM_WORLD_RANK is not set but OMPI_COMM_WORLD_SIZE is set to '4'"));
  ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  EXPECT_TRUE(contains(error_of([] { rank_info_from_env(); }),
                       "OMPI_COMM_WORLD_RANK is set to '1' but OMPI_COMM_WORLD_SIZE is not set"));
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID",
                        "SLURM_NTASKS", "SLURM_LOCALID"})
    ::unsetenv(v);
}

// ---- make_process_group --------------------------------------------------------------------

TEST(ProcessGroup, SingleRankNeedsNoStoreOrLibrary) {
  for (const char* backend : {"gloo", "nccl", "auto"}) {
    auto g = make_process_group(backend, RankInfo{}, nullptr, Device::cpu());
    EXPECT_EQ(g->size(), 1);
    EXPECT_EQ(g->rank(), 0);
    Tensor t = Tensor::randn({3}, DType::f32, test::test_generator());
    const Tensor before = t.clone();
    g->all_reduce(t, ReduceOp::sum);
    EXPECT_TRUE(test::close_rel(t, before, 0));
    Tensor out = Tensor::empty({1, 3}, DType::f32);
    g->all_gather(t, out);
    EXPECT_TRUE(test::close_rel(out.view({3}), before, 0));
    g->broadcast(t, 0);
    g->barrier();
  }
}

TEST(ProcessGroup, BackendErrors) {
  EXPECT_TRUE(contains(error_of([] { make_process_group("mpi", RankInfo{}, nullptr, Device::cpu()); }),
                       "unknown backend 'mpi'"));
  EXPECT_TRUE(contains(error_of([] { make_process_group("gloo", RankInfo{0, 2, 0}, nullptr, Device::cpu()); }),
                       "need a rendezvous store"));
  test::TempDir dir;
  auto store = make_file_store(dir.path());
#ifndef ZTRAIN_WITH_NCCL
  EXPECT_TRUE(contains(error_of([&] { make_process_group("nccl", RankInfo{0, 2, 0}, store, Device::cuda(0)); }),
                       "built without NCCL"));
#endif
  EXPECT_TRUE(contains(error_of([&] { make_process_group("gloo", RankInfo{0, 2, 0}, store, Device::cuda(0)); }),
                       "gloo backend works on CPU tensors"));
}

// ---- Gloo collectives on 2, 3 and 4 ranks ----------------------------------------------------

#ifdef ZTRAIN_WITH_GLOO

class GlooCollectives : public ::testing::TestWithParam<int> {};

// Rank r's contribution: a deterministic pattern that differs per rank and element.
double value_of(int rank, int64_t i) { return (rank + 1) * 1.5 + static_cast<double>(i % 7) - 3 * (rank % 2); }

TEST_P(GlooCollectives, AllReduceSumAndMaxEveryDtype) {
  const int world = GetParam();
  test::run_on_ranks(world, [&](ProcessGroup& g) {
    EXPECT_EQ(g.backend(), "gloo");
    EXPECT_EQ(g.size(), world);
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
        SCOPED_TRACE(detail::cat(dtype_name(dt), op == ReduceOp::sum ? " sum" : " max", " rank ", g.rank()));
        const int64_t n = 1000;
        std::vector<double> mine(n), expected(n);
        for (int64_t i = 0; i < n; ++i) {
          mine[i] = std::floor(value_of(g.rank(), i));
          double acc = op == ReduceOp::sum ? 0 : -1e300;
          for (int r = 0; r < world; ++r) {
            const double v = std::floor(value_of(r, i));
            acc = op == ReduceOp::sum ? acc + v : std::max(acc, v);
          }
          expected[i] = acc;
        }
        Tensor t = Tensor::from_vector(mine, {n}).to(dt);
        g.all_reduce(t, op);
        EXPECT_TRUE(test::close_rel(t, Tensor::from_vector(expected, {n}), 0));
      }
  });
}

TEST_P(GlooCollectives, AllGatherBroadcastBarrier) {
  const int world = GetParam();
  test::run_on_ranks(world, [&](ProcessGroup& g) {
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
      SCOPED_TRACE(detail::cat(dtype_name(dt), " rank ", g.rank()));
      // all_gather of a [2, 3] tensor: out[r] is rank r's tensor.
      std::vector<double> mine(6), expected;
      for (int64_t i = 0; i < 6; ++i) mine[i] = value_of(g.rank(), i) * (dt == DType::i32 || dt == DType::i64 ? 2 : 1.25);
      for (int r = 0; r < world; ++r)
        for (int64_t i = 0; i < 6; ++i) expected.push_back(value_of(r, i) * (dt == DType::i32 || dt == DType::i64 ? 2 : 1.25));
      Tensor in = Tensor::from_vector(mine, {2, 3}).to(dt);
      Tensor out = Tensor::empty({world, 2, 3}, dt);
      test::poison(out);
      g.all_gather(in, out);
      EXPECT_TRUE(test::close_rel(out, Tensor::from_vector(expected, {world, 2, 3}).to(dt), 0));

      // broadcast from the last rank.
      const int root = world - 1;
      Tensor b = Tensor::full({5}, g.rank() == root ? 42 : g.rank(), dt);
      g.broadcast(b, root);
      EXPECT_TRUE(test::close_rel(b, Tensor::full({5}, 42, dt), 0));
    }
    // bf16 is gathered as its bits (ZeRO's bf16 weight buckets), in place too.
    std::vector<double> mine, expected;
    for (int64_t i = 0; i < 6; ++i) mine.push_back(value_of(g.rank(), i) * 1.25);
    for (int r = 0; r < world; ++r)
      for (int64_t i = 0; i < 6; ++i) expected.push_back(value_of(r, i) * 1.25);
    Tensor out = Tensor::empty({world, 6}, DType::bf16);
    test::poison(out);
    g.all_gather(Tensor::from_vector(mine, {6}).to(DType::bf16), out);
    const Tensor want = Tensor::from_vector(expected, {world * 6}).to(DType::bf16);
    EXPECT_TRUE(test::close_rel(out.view({world * 6}), want, 0));
    Tensor flat = Tensor::zeros({world * 6}, DType::bf16);
    flat.slice(0, g.rank() * 6, g.rank() * 6 + 6).copy_(Tensor::from_vector(mine, {6}));
    g.all_gather_in_place(flat);
    EXPECT_TRUE(test::close_rel(flat, want, 0));
    g.barrier();
  });
}

TEST_P(GlooCollectives, BarrierWaitsForTheSlowestRank) {
  const int world = GetParam();
  std::atomic<int> arrived{0};
  test::run_on_ranks(world, [&](ProcessGroup& g) {
    if (g.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    arrived.fetch_add(1);
    g.barrier();
    EXPECT_EQ(arrived.load(), world) << "rank " << g.rank() << " left the barrier early";
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooCollectives, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return std::to_string(info.param) + "ranks"; });

TEST(Gloo, ErrorsNameTheOp) {
  test::run_on_ranks(2, [&](ProcessGroup& g) {
    Tensor bf = Tensor::zeros({4}, DType::bf16);
    EXPECT_TRUE(contains(error_of([&] { g.all_reduce(bf, ReduceOp::sum); }), "gloo all_reduce: dtype bf16"));
    Tensor strided = Tensor::zeros({4, 4}, DType::f32).transpose(0, 1);
    EXPECT_TRUE(contains(error_of([&] { g.all_reduce(strided, ReduceOp::sum); }), "not contiguous"));
    Tensor in = Tensor::zeros({3}, DType::f32), out = Tensor::zeros({3, 3}, DType::f32);
    EXPECT_TRUE(contains(error_of([&] { g.all_gather(in, out); }), "output shape [3, 3], expected [2, 3]"));
    Tensor t = Tensor::zeros({3}, DType::f32);
    EXPECT_TRUE(contains(error_of([&] { g.broadcast(t, 2); }), "root 2 outside a group of 2"));
    g.barrier();
  });
}

// Each group gets its own key prefix in the store, so two groups made from one store object
// never read each other's addresses.
TEST(Gloo, SeveralGroupsShareOneStore) {
  test::TempDir dir;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto store = make_file_store(dir.path(), std::chrono::seconds(30));
      auto a = make_process_group("gloo", RankInfo{r, 2, r}, store, Device::cpu());
      auto b = make_process_group("gloo", RankInfo{r, 2, r}, store, Device::cpu());
      Tensor ta = Tensor::full({2}, 1, DType::f32), tb = Tensor::full({2}, 10, DType::f32);
      a->all_reduce(ta, ReduceOp::sum);
      b->all_reduce(tb, ReduceOp::sum);
      EXPECT_EQ(ta.to_vector<double>(), (std::vector<double>{2, 2}));
      EXPECT_EQ(tb.to_vector<double>(), (std::vector<double>{20, 20}));
    });
  for (auto& t : threads) t.join();
}

// Megatron's layout on 4 ranks: tensor-parallel groups {0,1} {2,3}, data-parallel {0,2} {1,3},
// all four made from one store under their own names. Disjoint groups ("tp0", "tp1") are
// created at the same moment on their own members and must never read each other's keys.
TEST(Gloo, SubgroupsOfOneWorld) {
  test::TempDir dir;
  std::vector<std::thread> threads;
  std::vector<std::vector<double>> tp_sums(4), dp_sums(4);
  for (int r = 0; r < 4; ++r)
    threads.emplace_back([&, r] {
      auto store = make_file_store(dir.path(), std::chrono::seconds(30));
      auto tp = make_subgroup("gloo", r, {r / 2 * 2, r / 2 * 2 + 1}, "tp" + std::to_string(r / 2), store, Device::cpu());
      auto dp = make_subgroup("gloo", r, {r % 2, r % 2 + 2}, "dp" + std::to_string(r % 2), store, Device::cpu());
      EXPECT_EQ(tp->rank(), r % 2);
      EXPECT_EQ(dp->rank(), r / 2);
      Tensor a = Tensor::full({1}, 1 << r, DType::f64), b = Tensor::full({1}, 1 << r, DType::f64);
      tp->all_reduce(a, ReduceOp::sum);
      dp->all_reduce(b, ReduceOp::sum);
      tp_sums[r] = a.to_vector<double>();
      dp_sums[r] = b.to_vector<double>();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(tp_sums, (std::vector<std::vector<double>>{{3}, {3}, {12}, {12}}));
  EXPECT_EQ(dp_sums, (std::vector<std::vector<double>>{{5}, {10}, {5}, {10}}));
  EXPECT_TRUE(contains(error_of([&] { make_subgroup("gloo", 2, {0, 1}, "x", nullptr, Device::cpu()); }),
                       "world rank 2 is not one of its members"));
}

// all_reduce_async returns before the reduction ran; collectives keep their issue order, and
// wait() hands back the result (or the error).
TEST(Gloo, AsyncAllReduceAndReduceScatter) {
  test::run_on_ranks(3, [](ProcessGroup& g) {
    const double r = g.rank();
    std::vector<Tensor> ts;
    std::vector<std::shared_ptr<Work>> works;
    for (int i = 0; i < 5; ++i) {
      ts.push_back(Tensor::full({1000}, r + i, DType::f32));
      works.push_back(g.all_reduce_async(ts.back(), i % 2 ? ReduceOp::max : ReduceOp::sum));
    }
    Tensor sync = Tensor::full({2}, 1, DType::i64);
    g.all_reduce(sync, ReduceOp::sum);  // queued behind the async ones
    EXPECT_EQ(sync.to_vector<int64_t>(), (std::vector<int64_t>{3, 3}));
    for (int i = 0; i < 5; ++i) {
      works[i]->wait();
      const double want = i % 2 ? 2.0 + i : 3.0 * i + 3.0;
      EXPECT_EQ(ts[i].to_vector<double>(), std::vector<double>(1000, want)) << i;
    }
    Tensor in = Tensor::from_vector(std::vector<double>{r, 10 + r, 20 + r, 30 + r, 40 + r, 50 + r}, {6});
    Tensor out = Tensor::empty({2}, DType::f64);
    g.reduce_scatter(in, out, ReduceOp::sum);
    // Summed over ranks 0..2: [3, 33, 63, 93, 123, 153]; rank r receives elements 2r, 2r + 1.
    EXPECT_EQ(out.to_vector<double>(), (std::vector<double>{3 + 60.0 * r, 33 + 60.0 * r}));
  });
}

#endif  // ZTRAIN_WITH_GLOO

}  // namespace
}  // namespace zt
