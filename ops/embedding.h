#pragma once
// Row lookup: out[i, :] = weight[ids[i], :]. Backward sums the gradient rows of each id into
// its row of the weight gradient (on CUDA deterministic, without atomics: the same bits on
// every run).
#include "framework/autograd/variable.h"

namespace zt::ops {

// weight [V, C]; ids i32/i64 of any shape S (no gradient) -> [S..., C].
// An id outside [0, V) is an error naming the position and value:
// - CPU: thrown by this call, before any work.
// - CUDA: the lookup kernel checks every id as it reads it, so a lookup never waits for the
//   device. A bad id raises a flag and gets a row of NaN; the error (the same message as on
//   the CPU) is thrown by the calling thread's first host read of any device data once the
//   kernel has run (Tensor::item / to_vector / to(cpu): the trainer reads the loss every
//   step), through framework/cuda/deferred_check.h. The backward never writes outside the
//   table.
//   Why not check on the host: ids reach the op already on the device, and reading them
//   back cost a host synchronisation per lookup (two per forward).
Variable embedding(const Variable& weight, const Variable& ids);

// Vocab-parallel lookup (Megatron's VocabParallelEmbedding without its all-reduce): `weight`
// [V_shard, C] holds rows [offset, offset + V_shard) of a table of which ids may select
// [0, vocab). Ids in the shard give their row, ids of other shards a zero row (so the sum of
// every shard's output over the tensor-parallel group is the full lookup), and only in-shard
// ids add to the gradient. Ids outside [0, vocab) are errors exactly as in embedding(). With
// offset 0 and vocab <= V_shard it is embedding() of the table's first `vocab` rows (the GPT's
// padded table: an id in the padding is out of range).
Variable embedding_shard(const Variable& weight, const Variable& ids, int64_t offset, int64_t vocab);

}  // namespace zt::ops
