// The NCCL backend: one communicator per group, set up with the unique id that rank 0 puts
// in the Store; collectives on contiguous CUDA tensors of this group's device.
//
// Ordering: a collective runs on the group's own stream, fenced by events against the
// caller's current stream (cuda::current_stream(), the legacy default stream unless a
// StreamGuard says otherwise): it starts after the work already issued there and the work
// issued there afterwards starts after it. Nothing here waits on the host except barrier().
// all_reduce_async leaves out the second fence: the caller's stream goes on (the backward
// keeps computing) and Work::wait() makes the then-current stream wait on the collective.
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"
#include "framework/distributed/process_group_nccl.h"

#define ZT_NCCL_CHECK(expr)                                                                                   \
  do {                                                                                                        \
    ncclResult_t zt_res_ = (expr);                                                                            \
    if (zt_res_ != ncclSuccess)                                                                               \
      ZT_FAIL("NCCL error ", ncclGetErrorString(zt_res_), " in ", #expr, " at ", __FILE__, ":", __LINE__); \
  } while (0)

namespace zt {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::bf16: return ncclBfloat16;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
  }
  ZT_FAIL("nccl: unknown dtype");
}

// An all_reduce issued on the group's stream; wait() fences the caller's current stream
// after it (no host wait). The event is the group's, recycled once waited on.
class NcclWork : public Work {
 public:
  NcclWork(cudaEvent_t done, int device, std::function<void(cudaEvent_t)> recycle)
      : done_(done), device_(device), recycle_(std::move(recycle)) {}
  ~NcclWork() override {
    if (done_) recycle_(done_);
  }
  void wait() override {
    if (!done_) return;
    cuda::set_device(device_);
    ZT_CUDA_CHECK(cudaStreamWaitEvent(cuda::current_stream(), done_, 0));
  }

 private:
  cudaEvent_t done_;
  int device_;
  std::function<void(cudaEvent_t)> recycle_;
};

class NcclProcessGroup : public ProcessGroup, public std::enable_shared_from_this<NcclProcessGroup> {
 public:
  NcclProcessGroup(const RankInfo& info, const std::shared_ptr<Store>& store, Device device)
      : rank_(info.rank), size_(info.world_size), device_(device) {
    ZT_CHECK(device.is_cuda(), "nccl process group on ", device.str());
    // NVLink multicast (NVLS) stays off: on shared multi-GPU hosts it can take the GPUs down.
    // An explicit setting by the user wins.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    cuda::set_device(device.index);

    ncclUniqueId id;
    if (rank_ == 0) {
      ZT_NCCL_CHECK(ncclGetUniqueId(&id));
      if (size_ > 1) store->set("nccl_unique_id", std::vector<char>(id.internal, id.internal + sizeof(id.internal)));
    } else {
      const std::vector<char> blob = store->get("nccl_unique_id");
      ZT_CHECK(blob.size() == sizeof(id.internal), "nccl: the unique id in the store has ", blob.size(),
               " bytes, expected ", sizeof(id.internal));
      std::memcpy(id.internal, blob.data(), blob.size());
    }
    ZT_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&before_, cudaEventDisableTiming));
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&after_, cudaEventDisableTiming));
    ZT_CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(int)));
    ZT_CUDA_CHECK(cudaMemset(barrier_word_, 0, sizeof(int)));
  }

  ~NcclProcessGroup() override {
    // No throwing from here: a failed teardown only leaks.
    cudaSetDevice(device_.index);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (barrier_word_) cudaFree(barrier_word_);
    if (before_) cudaEventDestroy(before_);
    if (after_) cudaEventDestroy(after_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    check(t, "all_reduce");
    run([&](cudaStream_t s) {
      ZT_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                  op == ReduceOp::sum ? ncclSum : ncclMax, comm_, s));
    });
  }

  std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    check(t, "all_reduce");
    cuda::set_device(device_.index);
    ZT_CUDA_CHECK(cudaEventRecord(before_, cuda::current_stream()));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(stream_, before_, 0));
    ZT_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                op == ReduceOp::sum ? ncclSum : ncclMax, comm_, stream_));
    return record_async();
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    check(in, "reduce_scatter input");
    check(out, "reduce_scatter output");
    ZT_CHECK(in.numel() == out.numel() * size_ && in.dtype() == out.dtype(), "reduce_scatter: input of ", in.numel(),
             " elements for ", size_, " ranks x ", out.numel());
    run([&](cudaStream_t s) {
      ZT_NCCL_CHECK(ncclReduceScatter(in.raw_data(), out.raw_data(), static_cast<size_t>(out.numel()),
                                      nccl_type(in.dtype()), op == ReduceOp::sum ? ncclSum : ncclMax, comm_, s));
    });
  }

  // In place, as NCCL allows: rank r's output chunk is the input at offset r * n.
  std::shared_ptr<Work> reduce_scatter_in_place_async(Tensor flat, ReduceOp op) override {
    check(flat, "reduce_scatter_in_place");
    ZT_CHECK(flat.dim() == 1 && flat.numel() % size_ == 0, "nccl reduce_scatter_in_place: ", flat.numel(),
             " elements do not split into ", size_, " chunks");
    const size_t n = static_cast<size_t>(flat.numel() / size_);
    cuda::set_device(device_.index);
    ZT_CUDA_CHECK(cudaEventRecord(before_, cuda::current_stream()));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(stream_, before_, 0));
    char* base = static_cast<char*>(flat.raw_data());
    ZT_NCCL_CHECK(ncclReduceScatter(base, base + static_cast<size_t>(rank_) * n * dtype_size(flat.dtype()), n,
                                    nccl_type(flat.dtype()), op == ReduceOp::sum ? ncclSum : ncclMax, comm_, stream_));
    return record_async();
  }

  void all_gather_in_place(Tensor& flat) override {
    check(flat, "all_gather_in_place");
    ZT_CHECK(flat.dim() == 1 && flat.numel() % size_ == 0, "nccl all_gather_in_place: ", flat.numel(),
             " elements do not split into ", size_, " chunks");
    const size_t n = static_cast<size_t>(flat.numel() / size_);
    char* base = static_cast<char*>(flat.raw_data());
    run([&](cudaStream_t s) {
      ZT_NCCL_CHECK(ncclAllGather(base + static_cast<size_t>(rank_) * n * dtype_size(flat.dtype()), base, n,
                                  nccl_type(flat.dtype()), comm_, s));
    });
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check(in, "all_gather input");
    check(out, "all_gather output");
    Shape expected{size_};
    expected.insert(expected.end(), in.shape().begin(), in.shape().end());
    ZT_CHECK(out.shape() == expected && out.dtype() == in.dtype(), "all_gather: output ", shape_str(out.shape()), " ",
             dtype_name(out.dtype()), ", expected ", shape_str(expected), " ", dtype_name(in.dtype()));
    run([&](cudaStream_t s) {
      ZT_NCCL_CHECK(ncclAllGather(in.raw_data(), out.raw_data(), static_cast<size_t>(in.numel()),
                                  nccl_type(in.dtype()), comm_, s));
    });
  }

  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast");
    ZT_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " outside a group of ", size_, " ranks");
    run([&](cudaStream_t s) {
      ZT_NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                  root, comm_, s));
    });
  }

  void barrier() override {
    cuda::set_device(device_.index);
    run([&](cudaStream_t s) {
      ZT_NCCL_CHECK(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, s));
    });
    ZT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  void check(const Tensor& t, const char* what) const {
    ZT_CHECK(t.defined(), "nccl ", what, ": undefined tensor");
    ZT_CHECK(t.device() == device_, "nccl ", what, ": tensor on ", t.device().str(), " but the group works on ",
             device_.str());
    ZT_CHECK(t.is_contiguous(), "nccl ", what, ": tensor of shape ", shape_str(t.shape()), " is not contiguous");
  }

  // Issues `collective` on the group's stream between the caller's earlier and later work.
  template <class F>
  void run(F&& collective) {
    cuda::set_device(device_.index);
    const cudaStream_t caller = cuda::current_stream();
    ZT_CUDA_CHECK(cudaEventRecord(before_, caller));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(stream_, before_, 0));
    collective(stream_);
    ZT_CUDA_CHECK(cudaEventRecord(after_, stream_));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(caller, after_, 0));
  }

  // The Work of a collective just issued on stream_: its completion event.
  std::shared_ptr<Work> record_async() {
    cudaEvent_t done = take_event();
    ZT_CUDA_CHECK(cudaEventRecord(done, stream_));
    std::weak_ptr<NcclProcessGroup> self = weak_from_this();
    return std::make_shared<NcclWork>(done, device_.index, [self](cudaEvent_t e) {
      if (auto g = self.lock()) g->free_events_.push_back(e);
      else cudaEventDestroy(e);
    });
  }

  cudaEvent_t take_event() {
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    cudaEvent_t e;
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  int rank_, size_;
  Device device_;
  std::vector<cudaEvent_t> free_events_;  // completion events of waited-on async collectives
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t before_ = nullptr, after_ = nullptr;
  int* barrier_word_ = nullptr;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_nccl_process_group(const RankInfo& info, std::shared_ptr<Store> store,
                                                      Device device) {
  ZT_CHECK(info.world_size == 1 || store, "nccl: ", info.world_size, " ranks need a rendezvous store");
  return std::make_shared<NcclProcessGroup>(info, store, device);
}

}  // namespace zt
