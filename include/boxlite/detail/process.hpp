// Process identity on Linux: a pid plus its start time (field 22 of /proc/<pid>/stat, clock
// ticks since boot) names one process for good, even after the pid is reused. Compiled in the
// library (lib/core/process.cpp).
#pragma once

#include <boxlite/error.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace boxlite::detail {

/// This process's id (getpid).
[[nodiscard]] std::int32_t current_process_id() noexcept;

/// Start time of `pid`, or nullopt when there is no such process (or it is a zombie).
[[nodiscard]] std::optional<std::uint64_t> process_start_time(std::int32_t pid);

/// True when `pid` exists and — if `start_time` is known (non-zero) — is the same process.
[[nodiscard]] bool process_alive(std::int32_t pid, std::uint64_t start_time);

/// Waits until the process (`pid` + `start_time`) has exited, or `deadline`; true when it is
/// gone. Wakes the moment it exits (a pidfd polls readable on exit, child or not), so a stop
/// costs what the box takes to shut down, not that plus a polling interval. Without pidfd
/// support (Linux < 5.3) it polls every 2 ms.
[[nodiscard]] bool wait_for_exit(std::int32_t pid, std::uint64_t start_time,
                                 std::chrono::steady_clock::time_point deadline);

/// SIGKILL to the process (`pid` + `start_time`) when it is still that process; nothing when
/// it is gone. An Engine error naming the pid when the signal cannot be sent.
BoxliteResult<void> kill_process(std::int32_t pid, std::uint64_t start_time);

}  // namespace boxlite::detail
