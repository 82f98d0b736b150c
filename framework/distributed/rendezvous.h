#pragma once
// The roll call that opens a multi-rank job, before any backend connects: every rank writes
// who it is (the rank variables it was started with, host, pid) under "rollcall/<rank>" and
// waits, for a bounded time, until every rank of the world has. It turns the ways a job's
// start goes wrong into one clear error on every rank, within the timeout:
//   - ranks that never arrive: named (with the store's directory), instead of a hang or
//     Gloo's "Connection refused" on a peer's stale address;
//   - ranks started with different world sizes: both variables named, instead of a Gloo
//     enforce message;
//   - two processes started as the same rank.
#include <chrono>
#include <string>

#include "framework/distributed/process_group.h"
#include "framework/distributed/store.h"

namespace zt {

void roll_call(Store& store, const RankInfo& info, std::chrono::milliseconds timeout);

// The job's identity, for a store subfolder of its own: $ZTRAIN_JOB_ID (build/bin/launch sets
// a fresh one per job), else Slurm's job and step id, else OpenMPI's job id; "" when none is
// known. Only [A-Za-z0-9_.-] are kept.
std::string job_id_from_env();

}  // namespace zt
