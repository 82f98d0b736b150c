#pragma once
// Child processes of ablate: started with fork/exec, each tied to its parent's life (a child
// gets SIGKILL when ablate dies, even by kill -9: Linux's PR_SET_PDEATHSIG), and waited for
// with waitpid.
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace zt::ablation {

// Starts argv[0] (a path) with argv; stdout and stderr appended to log_file, or inherited
// when log_file is empty. Throws zt::Error naming the program when it cannot be started (no
// such file, not executable, the log cannot be opened): the child reports exec's errno back
// through a close-on-exec pipe before the call returns.
pid_t spawn_program(const std::vector<std::string>& argv, const std::filesystem::path& log_file);

// The exit code of a waitpid status: the exit status, or 128 + signal when a signal ended it.
int exit_code_of(int wait_status);

// Waits for the child: its exit code as exit_code_of. Retries on EINTR.
int wait_program(pid_t pid);

// Non-blocking: true and *exit_code when the child has ended, false while it runs.
bool poll_program(pid_t pid, int* exit_code);

}  // namespace zt::ablation
