// The Gloo backend: full-mesh TCP connections set up through our Store, then Gloo's
// collectives on contiguous CPU tensors of f32/f64/i32/i64.
//
// Every collective of a group runs on the group's own worker thread, in the order issued:
// all_reduce_async returns at once (data-parallel gradient buckets overlap the backward's
// compute this way), the blocking calls queue and wait. One thread per group keeps Gloo's
// context single-threaded and the order identical on every rank.
#include "framework/distributed/process_group_gloo.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include "framework/error.h"

namespace zt {

namespace {

// Gloo's rendezvous reads and writes through its own Store interface; this forwards to ours
// (whose get already blocks until the key exists or the timeout passes).
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  explicit GlooStoreAdapter(std::shared_ptr<zt::Store> store) : store_(std::move(store)) {}
  void set(const std::string& key, const std::vector<char>& data) override { store_->set(key, data); }
  std::vector<char> get(const std::string& key) override { return store_->get(key); }
  void wait(const std::vector<std::string>& keys) override {
    for (const auto& k : keys) store_->get(k);
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override { wait(keys); }

 private:
  std::shared_ptr<zt::Store> store_;
};

template <class T>
void reduce_sum(void* c, const void* a, const void* b, size_t n) {
  T* out = static_cast<T*>(c);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
}

template <class T>
void reduce_max(void* c, const void* a, const void* b, size_t n) {
  T* out = static_cast<T*>(c);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = std::max(x[i], y[i]);
}

// Calls f(T{}) for the dtypes Gloo carries here; bf16 has no reduction in Gloo.
template <class F>
void dispatch_gloo(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::i32: f(int32_t{}); return;
    case DType::i64: f(int64_t{}); return;
    default: ZT_FAIL("gloo ", op, ": dtype ", dtype_name(t), " is not supported (f32, f64, i32, i64)");
  }
}

// The same for collectives that only move elements (all_gather): bf16 travels as its 16 bits.
template <class F>
void dispatch_gloo_move(DType t, const char* op, F&& f) {
  if (t == DType::bf16) return f(uint16_t{});
  dispatch_gloo(t, op, std::forward<F>(f));
}

// A collective queued on the worker thread; wait() blocks until it ran and rethrows its error.
class GlooWork : public Work {
 public:
  explicit GlooWork(std::shared_future<void> done) : done_(std::move(done)) {}
  void wait() override { done_.get(); }

 private:
  std::shared_future<void> done_;
};

class GlooProcessGroup : public ProcessGroup {
 public:
  GlooProcessGroup(const RankInfo& info, std::shared_ptr<Store> store) : rank_(info.rank), size_(info.world_size) {
    gloo::transport::tcp::attr attr;
    const char* host = std::getenv("ZTRAIN_GLOO_HOST");
    attr.hostname = host && *host ? host : "127.0.0.1";
    try {
      auto device = gloo::transport::tcp::CreateDevice(attr);
      auto context = std::make_shared<gloo::rendezvous::Context>(rank_, size_);
      context->setTimeout(store->timeout());
      GlooStoreAdapter adapter(store);
      context->connectFullMesh(adapter, device);
      // connectFullMesh can return on one rank while a peer is still finishing its side of
      // the handshake; a rank that then closed its group at once (a short job, an early
      // error) broke the peer's connect ("Connection closed by peer"). A barrier here means
      // a group exists only once every rank's connections are up.
      gloo::BarrierOptions opts(context);
      opts.setTag(next_tag());
      gloo::barrier(opts);
      context_ = std::move(context);
    } catch (const zt::Error&) {
      throw;
    } catch (const std::exception& e) {
      ZT_FAIL("gloo: rank ", rank_, " of ", size_, " could not connect (host ", attr.hostname, "): ", e.what());
    }
    worker_ = std::thread([this] { work_loop(); });
  }

  ~GlooProcessGroup() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    check_tensor(t, "all_reduce");
    return submit([this, t, op]() mutable { all_reduce_now(t, op); });
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "gloo"; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    check_tensor(t, "all_reduce");
    submit([&] { all_reduce_now(t, op); })->wait();
  }

  void all_reduce_now(Tensor& t, ReduceOp op) {
    dispatch_gloo(t.dtype(), "all_reduce", [&](auto tag) {
      using T = decltype(tag);
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(t.data<T>(), static_cast<size_t>(t.numel()));
      opts.setReduceFunction(op == ReduceOp::sum ? &reduce_sum<T> : &reduce_max<T>);
      opts.setTag(next_tag());
      run("all_reduce", [&] { gloo::allreduce(opts); });
    });
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check_tensor(in, "all_gather");
    check_tensor(out, "all_gather");
    Shape expected{size_};
    expected.insert(expected.end(), in.shape().begin(), in.shape().end());
    ZT_CHECK(out.shape() == expected, "gloo all_gather: output shape ", shape_str(out.shape()), ", expected ",
             shape_str(expected));
    ZT_CHECK(out.dtype() == in.dtype(), "gloo all_gather: output dtype ", dtype_name(out.dtype()), " vs input ",
             dtype_name(in.dtype()));
    submit([&] {
      dispatch_gloo_move(in.dtype(), "all_gather", [&](auto tag) {
        using T = decltype(tag);
        gloo::AllgatherOptions opts(context_);
        opts.setInput(static_cast<T*>(in.raw_data()), static_cast<size_t>(in.numel()));
        opts.setOutput(static_cast<T*>(out.raw_data()), static_cast<size_t>(out.numel()));
        opts.setTag(next_tag());
        run("all_gather", [&] { gloo::allgather(opts); });
      });
    })->wait();
  }

  void broadcast(Tensor& t, int root) override {
    check_tensor(t, "broadcast");
    ZT_CHECK(root >= 0 && root < size_, "gloo broadcast: root ", root, " outside a group of ", size_, " ranks");
    submit([&] {
      dispatch_gloo(t.dtype(), "broadcast", [&](auto tag) {
        using T = decltype(tag);
        gloo::BroadcastOptions opts(context_);
        opts.setOutput(t.data<T>(), static_cast<size_t>(t.numel()));
        opts.setRoot(root);
        opts.setTag(next_tag());
        run("broadcast", [&] { gloo::broadcast(opts); });
      });
    })->wait();
  }

  void barrier() override {
    submit([&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(next_tag());
      run("barrier", [&] { gloo::barrier(opts); });
    })->wait();
  }

 private:
  void check_tensor(const Tensor& t, const char* op) const {
    ZT_CHECK(t.defined(), "gloo ", op, ": undefined tensor");
    ZT_CHECK(t.device().is_cpu(), "gloo ", op, ": tensor on ", t.device().str(),
             "; the gloo backend takes CPU tensors (use nccl for CUDA)");
    ZT_CHECK(t.is_contiguous(), "gloo ", op, ": tensor of shape ", shape_str(t.shape()), " is not contiguous");
  }

  // Gloo reports a dead peer or a timeout as its own exception types; ours name the op and rank.
  template <class F>
  void run(const char* op, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      ZT_FAIL("gloo ", op, " failed on rank ", rank_, " of ", size_, ": ", e.what());
    }
  }

  uint32_t next_tag() { return tag_++; }

  // Queues `fn` for the worker thread; the returned Work completes when it has run.
  std::shared_ptr<Work> submit(std::function<void()> fn) {
    auto task = std::make_shared<std::packaged_task<void()>>(std::move(fn));
    std::shared_future<void> done = task->get_future().share();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back([task] { (*task)(); });
    }
    cv_.notify_one();
    return std::make_shared<GlooWork>(std::move(done));
  }

  void work_loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();  // a packaged_task: its exception goes to the waiter
    }
  }

  int rank_, size_;
  uint32_t tag_ = 0;  // used by the worker thread only (and the constructor, before it starts)
  std::shared_ptr<gloo::Context> context_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_gloo_process_group(const RankInfo& info, std::shared_ptr<Store> store) {
  return std::make_shared<GlooProcessGroup>(info, std::move(store));
}

}  // namespace zt
