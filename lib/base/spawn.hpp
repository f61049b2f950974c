// Process spawning: fork + exec with chosen descriptors handed on at chosen numbers, safe to
// call from a multi-threaded process (the child makes async-signal-safe calls only). The child
// shares the caller's memory until its exec (clone with CLONE_VM | CLONE_VFORK, as posix_spawn
// does), so the caller's page tables are never copied; sanitizer builds use fork().
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace boxlite::base {

struct SpawnOptions {
    /// argv[0] is the program's path (no PATH lookup).
    std::vector<std::string> argv;
    /// fds[i] becomes the child's descriptor i (-1: left closed); every other descriptor is
    /// closed. The caller keeps its own copies (they are not closed here).
    std::vector<int> fds;
    /// The child starts a session of its own, so signals to the caller's process group do not
    /// reach it; its signal mask is cleared.
    bool new_session = true;
    /// Two generations: the program is not a child of the caller (nobody has to reap it) and 0 is
    /// returned instead of its pid (the program reports its own pid if the caller needs it).
    bool detach = false;
    /// The child is sent SIGKILL when the calling thread's process dies (PR_SET_PDEATHSIG): a
    /// helper that must not outlive its parent (QEMU under the qemu shim). Not with `detach`.
    bool kill_with_parent = false;
    /// When exec fails, this line is written to the child's descriptor `exec_failure_fd`
    /// (-1: nowhere) and the child exits with 127.
    std::string exec_failure_line;
    int exec_failure_fd = -1;
};

/// Starts the program; returns its pid (a child of the caller), or 0 with `detach`.
[[nodiscard]] BoxliteResult<std::int32_t> spawn(const SpawnOptions& options);

}  // namespace boxlite::base
