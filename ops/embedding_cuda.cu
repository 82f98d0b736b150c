// CUDA kernels behind ops/embedding.h: a row gather forward, and a sort-based backward,
// deterministic, no atomics: the ids sorted by row (CUB's radix sort), then one writer per
// gradient row, which sums its gradient rows in f32 (f64 for f64) in a fixed order and writes
// the row once in the table's dtype (no f32 [vocab, C] table for bf16).
// The gather validates the ids itself and reports a bad one through a deferred check
// (framework/cuda/deferred_check.h): no host synchronisation per lookup.
#include <cub/device/device_radix_sort.cuh>

#include <bit>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "framework/cuda/deferred_check.h"
#include "ops/cuda_compute.cuh"
#include "ops/embedding_kernels.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

using namespace gpu;

template <class W>
__device__ __forceinline__ W all_bits_set() {
  W w;
  memset(&w, 0xff, sizeof(W));
  return w;
}

// Copies rows of `words` machine words (W = 2, 4, 8 or 16 bytes): one block per id. An id
// outside [0, id_limit) raises *bad_id and gets a row of all-ones bits, a NaN in every float
// dtype, so a result used before the check runs is visibly wrong, never another row. A valid
// id outside this table's rows [offset, offset + rows) (another vocab-parallel shard's) gets
// a zero row.
template <class W, class I>
__global__ void gather_rows_kernel(const W* weight, const I* ids, W* out, int64_t words, int64_t offset, int64_t rows,
                                   int64_t id_limit, int* bad_id) {
  const int64_t id = static_cast<int64_t>(ids[blockIdx.x]);
  W* dst = out + blockIdx.x * words;
  if (id < 0 || id >= id_limit) {
    if (threadIdx.x == 0) *bad_id = 1;
    for (int64_t j = threadIdx.x; j < words; j += blockDim.x) dst[j] = all_bits_set<W>();
    return;
  }
  const int64_t row = id - offset;
  if (row < 0 || row >= rows) {
    for (int64_t j = threadIdx.x; j < words; j += blockDim.x) dst[j] = W{};
    return;
  }
  const W* src = weight + row * words;
  for (int64_t j = threadIdx.x; j < words; j += blockDim.x) dst[j] = src[j];
}

// ---- backward: sort the ids, then one writer per gradient row ----
// Keys are the table rows, ids - offset; an id outside this table's rows [0, vocab) (another
// vocab-parallel shard's, or a bad one, which the forward's check reports) gets the key
// `vocab`, which sorts last and is skipped. The radix sort is stable, so each row's gradient
// rows stay in position order; sums run in a fixed order and each row of dw has one writer:
// no atomics, the same bits on every run.
constexpr int kChunk = 32;  // sorted positions per block of the segment sums
constexpr int kAhead = 8;   // gradient rows a thread loads before adding them
constexpr uint32_t kNoKey = 0xffffffffu;  // before the first / after the last position

// keys[i] = ids[i] - offset or vocab; pos[i] = i; touched[row] = 1 for every row an id hits
// (every writer stores the same 1: no race on the value).
template <class I>
__global__ void sort_keys_kernel(const I* ids, int64_t n, int64_t offset, int64_t vocab, uint32_t* keys,
                                 int32_t* pos, uint8_t* touched) {
  ZT_GRID_STRIDE(i, n) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    const bool mine = id >= offset && id - offset < vocab;  // id >= offset first: no overflow
    keys[i] = static_cast<uint32_t>(mine ? id - offset : vocab);
    pos[i] = static_cast<int32_t>(i);
    if (mine) touched[id - offset] = 1;
  }
}

// Rows no id touches are zero (zero bits are 0.0 in every float dtype): one warp per row,
// words W of the row; touched rows are left to the sums below.
template <class W>
__global__ void zero_untouched_rows_kernel(W* dw, const uint8_t* touched, int64_t rows, int64_t words) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
  for (int64_t r = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
    if (touched[r]) continue;
    W* row = dw + r * words;
    for (int64_t j = lane; j < words; j += 32) row[j] = W{};
  }
}

// N consecutive elements of a gradient row, read as one access: a 16-byte pack, or one element.
template <class T>
struct One {
  T v[1];
};
template <class T, int N>
using RowPiece = std::conditional_t<N == 1, One<T>, Pack<T>>;

template <class D, class A, int N>
__device__ __forceinline__ void store_row_piece(D* p, const A (&acc)[N]) {
  if constexpr (N > 1 && N == Pack<D>::kN) {
    Pack<D> out;
#pragma unroll
    for (int j = 0; j < N; ++j) store(out.v, j, acc[j]);
    *reinterpret_cast<Pack<D>*>(p) = out;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) store(p, j, acc[j]);
  }
}

// Pass 1. Block (x, y) sums the gradient rows of sorted positions [x kChunk, (x + 1) kChunk)
// for columns [y blockDim.x N, (y + 1) blockDim.x N), thread t owning N of them. Each run of
// one key inside the chunk (a piece) is summed in position order. A piece that is its key's
// whole run is written to dw; a run that crosses a chunk border leaves its pieces for pass 2:
// the chunk's first piece, continuing a run from before, in head[x]; its last piece, starting
// a run that goes on, in tail[x] (at most one of each per chunk).
template <class T, class D, int N>
__global__ void __launch_bounds__(256)
    segment_sums_kernel(const T* __restrict__ grad, const uint32_t* __restrict__ keys,
                        const int32_t* __restrict__ pos, int64_t n, int64_t C, uint32_t vocab, D* __restrict__ dw,
                        acc_t<T>* __restrict__ head, acc_t<T>* __restrict__ tail) {
  static_assert(N == 1 || N == Pack<T>::kN);
  using A = acc_t<T>;
  __shared__ uint32_t key[kChunk + 1];  // key[len]: the next chunk's first key (or kNoKey)
  __shared__ int32_t row_of[kChunk];
  const int64_t base = int64_t{blockIdx.x} * kChunk;
  const int len = static_cast<int>(min(int64_t{kChunk}, n - base));
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    key[i] = keys[base + i];
    row_of[i] = pos[base + i];
  }
  if (threadIdx.x == 0) key[len] = base + len < n ? keys[base + len] : kNoKey;
  __syncthreads();
  const uint32_t before = base > 0 ? keys[base - 1] : kNoKey;
  const int64_t col = (int64_t{blockIdx.y} * blockDim.x + threadIdx.x) * N;
  if (col >= C) return;
  A acc[N];
#pragma unroll
  for (int j = 0; j < N; ++j) acc[j] = A(0);
  int start = 0;  // first position of the current piece
  for (int i0 = 0; i0 < len && key[i0] < vocab; i0 += kAhead) {
    RowPiece<T, N> g[kAhead];
#pragma unroll
    for (int u = 0; u < kAhead; ++u)
      if (i0 + u < len) g[u] = *reinterpret_cast<const RowPiece<T, N>*>(grad + int64_t{row_of[i0 + u]} * C + col);
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int i = i0 + u;
      if (i >= len) break;
      const uint32_t k = key[i];
      if (k >= vocab) break;  // not this table's rows; every later key is too
#pragma unroll
      for (int j = 0; j < N; ++j) acc[j] += load<A>(g[u].v, j);
      if (i + 1 < len && key[i + 1] == k) continue;  // the piece goes on
      const bool begins = start > 0 || before != k, ends = key[i + 1] != k;
      if (begins && ends) {
        store_row_piece<D, A, N>(dw + int64_t{k} * C + col, acc);
      } else {
        A* partial = (begins ? tail : head) + int64_t{blockIdx.x} * C + col;
#pragma unroll
        for (int j = 0; j < N; ++j) partial[j] = acc[j];
      }
#pragma unroll
      for (int j = 0; j < N; ++j) acc[j] = A(0);
      start = i + 1;
    }
  }
}

// Pass 2: block x owns the run that starts in chunk x and goes on past its end (if any):
// dw row = tail[x] + head[x + 1] + ... + head[x + m], in that order, where chunks x + 1 ..
// x + m are those the run reaches (their first key is the run's; they are consecutive since
// the keys are sorted). A long run (a frequent token) is kChunk-row pieces summed in parallel
// by pass 1, then m partial rows here.
template <class T, class D, int N>
__global__ void __launch_bounds__(256)
    run_sums_kernel(const uint32_t* __restrict__ keys, int64_t n, int64_t C, uint32_t vocab, D* __restrict__ dw,
                    const acc_t<T>* __restrict__ head, const acc_t<T>* __restrict__ tail) {
  using A = acc_t<T>;
  const int64_t x = blockIdx.x, end = (x + 1) * kChunk;  // end: the next chunk's first position
  if (end >= n) return;
  const uint32_t k = keys[end - 1];
  if (k >= vocab || keys[end] != k) return;        // no run goes on past this chunk
  if (x > 0 && keys[x * kChunk - 1] == k) return;  // the run began in an earlier chunk, its owner
  int64_t m = 0;  // block-wide count of the chunks after x that start with k
  for (int64_t first = x + 1;; first += blockDim.x) {
    const int64_t j = first + threadIdx.x;
    const int hits = __syncthreads_count(j * kChunk < n && keys[j * kChunk] == k);
    m += hits;
    if (hits < static_cast<int>(blockDim.x)) break;
  }
  const int64_t col = (int64_t{blockIdx.y} * blockDim.x + threadIdx.x) * N;
  if (col >= C) return;
  A acc[N];
#pragma unroll
  for (int j = 0; j < N; ++j) acc[j] = tail[x * C + col + j];
#pragma unroll 4
  for (int64_t c = x + 1; c <= x + m; ++c)
#pragma unroll
    for (int j = 0; j < N; ++j) acc[j] += head[c * C + col + j];
  store_row_piece<D, A, N>(dw + int64_t{k} * C + col, acc);
}

template <class F>
void with_ids(const Tensor& ids, F&& f) {
  if (ids.dtype() == DType::i32) f(static_cast<const int32_t*>(ids.raw_data()));
  else f(static_cast<const int64_t*>(ids.raw_data()));
}

// Calls f(W{}) with the widest word (16, 8, 4 or 2 bytes) that divides a row of row_bytes and
// aligns every pointer: rows are copied or zeroed in words of W.
template <class F>
void with_row_word(int64_t row_bytes, std::initializer_list<const void*> pointers, F&& f) {
  auto fits = [&](int64_t w) {
    if (row_bytes % w != 0) return false;
    for (const void* p : pointers)
      if (reinterpret_cast<uintptr_t>(p) % w != 0) return false;
    return true;
  };
  if (fits(16)) f(uint4{});
  else if (fits(8)) f(uint64_t{});
  else if (fits(4)) f(uint32_t{});
  else f(uint16_t{});
}

}  // namespace

Tensor embedding_forward_cuda(const Tensor& weight_in, const Tensor& ids_in, int64_t offset, int64_t id_limit) {
  const Tensor weight = weight_in.contiguous(), ids = ids_in.contiguous();
  OpRange range("embedding");
  const int64_t vocab = weight.shape()[0], C = weight.shape()[1], n = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  if (n == 0) return out;
  ZT_CHECK(n < (int64_t{1} << 31), "embedding: too many ids for the CUDA kernel: ", n);
  cudaStream_t s = stream_for(weight);
  cuda::DeferredCheck check;
  const int64_t row_bytes = C * static_cast<int64_t>(dtype_size(weight.dtype()));
  with_row_word(row_bytes, {weight.raw_data(), out.raw_data()}, [&](auto word) {
    using W = decltype(word);
    const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
    const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (words + 31) / 32 * 32)));
    with_ids(ids, [&](const auto* p) {
      gather_rows_kernel<W><<<static_cast<unsigned>(n), threads, 0, s>>>(
          static_cast<const W*>(weight.raw_data()), p, static_cast<W*>(out.raw_data()), words, offset, vocab,
          id_limit, check.device_flag());
    });
  });
  ZT_CUDA_CHECK_LAUNCH();
  // Runs at the next host read after the kernel finished; re-checks the ids on the host to
  // throw check_ids_cpu's message (position and value).
  check.commit([ids, id_limit] {
    check_ids_cpu(ids.to(Device::cpu()), id_limit);
    ZT_FAIL("embedding: an id outside [0, ", id_limit, ") of ids ", shape_str(ids.shape()),
            " (the device saw it; the ids have changed since)");
  });
  return out;
}

Tensor embedding_backward_cuda(const Tensor& grad_in, const Tensor& ids_in, int64_t vocab, DType dtype, int64_t offset) {
  const Tensor grad = grad_in.contiguous(), ids = ids_in.contiguous();
  OpRange range("embedding");
  const int64_t C = grad.shape().back(), n = ids.numel();
  if (n == 0 || C == 0) return Tensor::zeros({vocab, C}, dtype, grad.device());
  ZT_CHECK(n < (int64_t{1} << 31), "embedding: too many ids for the CUDA kernel: ", n);
  ZT_CHECK(vocab < (int64_t{1} << 31), "embedding: too many rows for the CUDA kernel: ", vocab);
  // Written in the requested dtype when the gradient has it (the model's case); otherwise in
  // the accumulation dtype, converted at the end like the CPU path.
  const DType out_dtype = dtype == grad.dtype() ? dtype : acc_dtype(grad.dtype());
  Tensor dw = Tensor::empty({vocab, C}, out_dtype, grad.device());
  cudaStream_t s = stream_for(grad);
  const int device = grad.device().index;
  const int64_t chunks = cuda::ceil_div(n, kChunk);

  // Scratch, one allocation: keys and positions (in, sorted), the touched-row flags, the
  // sort's temporary storage (CUB's size query first; it reads no data).
  const int end_bit = std::bit_width(static_cast<uint64_t>(vocab));  // keys 0 .. vocab
  size_t sort_bytes = 0;
  ZT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr),
                                                static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<int>(n), 0, end_bit, s));
  auto round256 = [](int64_t b) { return (b + 255) / 256 * 256; };
  const int64_t array_bytes = round256(n * 4), flag_bytes = round256(vocab);
  Tensor scratch = Tensor::empty({cuda::ceil_div(4 * array_bytes + flag_bytes + static_cast<int64_t>(sort_bytes), 8)},
                                 DType::i64, grad.device());
  char* base = static_cast<char*>(scratch.raw_data());
  auto* keys_in = reinterpret_cast<uint32_t*>(base);
  auto* keys = reinterpret_cast<uint32_t*>(base + array_bytes);
  auto* pos_in = reinterpret_cast<int32_t*>(base + 2 * array_bytes);
  auto* pos = reinterpret_cast<int32_t*>(base + 3 * array_bytes);
  auto* touched = reinterpret_cast<uint8_t*>(base + 4 * array_bytes);
  void* sort_storage = base + 4 * array_bytes + flag_bytes;

  ZT_CUDA_CHECK(cudaMemsetAsync(touched, 0, static_cast<size_t>(vocab), s));
  with_ids(ids, [&](const auto* p) {
    sort_keys_kernel<<<grid_for(n, device), kThreads, 0, s>>>(p, n, offset, vocab, keys_in, pos_in, touched);
  });
  ZT_CUDA_CHECK_LAUNCH();
  ZT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_storage, sort_bytes, keys_in, keys, pos_in, pos,
                                                static_cast<int>(n), 0, end_bit, s));
  with_row_word(C * static_cast<int64_t>(dtype_size(out_dtype)), {dw.raw_data()}, [&](auto word) {
    using W = decltype(word);
    const int64_t words = C * static_cast<int64_t>(dtype_size(out_dtype)) / static_cast<int64_t>(sizeof(W));
    zero_untouched_rows_kernel<W><<<grid_for(vocab * 32, device), kThreads, 0, s>>>(static_cast<W*>(dw.raw_data()),
                                                                                    touched, vocab, words);
  });
  ZT_CUDA_CHECK_LAUNCH();

  // Partial sums of runs that cross chunk borders: head [chunks, C], then tail [chunks, C].
  Tensor partials = Tensor::empty({2, chunks, C}, acc_dtype(grad.dtype()), grad.device());
  dispatch_device_float(grad.dtype(), "embedding", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    auto run = [&](auto out_tag, auto width) {
      using D = decltype(out_tag);
      constexpr int N = decltype(width)::value;
      const int64_t col_threads = cuda::ceil_div(C, N);
      const int threads = static_cast<int>(std::min<int64_t>(256, cuda::ceil_div(col_threads, 32) * 32));
      const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(cuda::ceil_div(col_threads, threads)));
      const T* g = static_cast<const T*>(grad.raw_data());
      D* out = static_cast<D*>(dw.raw_data());
      A* head = static_cast<A*>(partials.raw_data());
      A* tail = head + chunks * C;
      const auto rows = static_cast<uint32_t>(vocab);
      segment_sums_kernel<T, D, N><<<grid, threads, 0, s>>>(g, keys, pos, n, C, rows, out, head, tail);
      ZT_CUDA_CHECK_LAUNCH();
      if (chunks > 1) {
        run_sums_kernel<T, D, N><<<grid, threads, 0, s>>>(keys, n, C, rows, out, head, tail);
        ZT_CUDA_CHECK_LAUNCH();
      }
    };
    // 16-byte loads when the rows are whole packs; one element per load otherwise.
    constexpr int kPack = Pack<T>::kN;
    const bool packed = C % kPack == 0 && aligned16(grad.raw_data()) && aligned16(dw.raw_data());
    auto run_width = [&](auto out_tag) {
      if (packed) run(out_tag, std::integral_constant<int, kPack>{});
      else run(out_tag, std::integral_constant<int, 1>{});
    };
    if (out_dtype == grad.dtype()) run_width(T{});
    else run_width(A{});
  });
  return out_dtype == dtype ? dw : dw.to(dtype);
}

}  // namespace zt::ops
