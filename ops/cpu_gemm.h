#pragma once
// The one matrix product every CPU kernel uses (internal to ops/): Eigen's GEMM on
// row-major views of raw buffers, so no operand is copied or transposed in memory.
#include <Eigen/Core>
#include <cstdint>

namespace zt::ops::cpu {

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMatrixView = Eigen::Map<const RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using MatrixView = Eigen::Map<RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// C[M, N] = alpha op(A) op(B) + beta C on row-major buffers with row strides lda, ldb, ldc.
// op(A) is A stored [M, K], or A^T with A stored [K, M] when trans_a; likewise B ([K, N] or
// [N, K]). beta == 0 never reads C, so C may hold anything (NaN poison included).
// Eigen threads the product with OpenMP, except inside a parallel region, where it runs on
// the calling thread (batched callers parallelise over the batch instead).
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  MatrixView<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (beta == T(0)) c.setZero();
    else c *= beta;
    return;
  }
  ConstMatrixView<T> a(A, trans_a ? K : M, trans_a ? M : K, Eigen::OuterStride<>(lda));
  ConstMatrixView<T> b(B, trans_b ? N : K, trans_b ? K : N, Eigen::OuterStride<>(ldb));
  auto product = [&](const auto& op_a, const auto& op_b) {
    if (beta == T(0)) {
      c.noalias() = alpha * op_a * op_b;
    } else {
      if (beta != T(1)) c *= beta;
      c.noalias() += alpha * op_a * op_b;
    }
  };
  if (!trans_a && !trans_b) product(a, b);
  else if (trans_a && !trans_b) product(a.transpose(), b);
  else if (!trans_a && trans_b) product(a, b.transpose());
  else product(a.transpose(), b.transpose());
}

}  // namespace zt::ops::cpu
