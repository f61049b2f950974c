// Process identity on Linux: a pid plus its start time (field 22 of /proc/<pid>/stat, clock
// ticks since boot) names one process for good, even after the pid is reused.
#pragma once

#include <poll.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <algorithm>
#include <cstdint>
#include <thread>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace boxlite::detail {

/// Start time of `pid`, or nullopt when there is no such process (or it is a zombie).
[[nodiscard]] inline std::optional<std::uint64_t> process_start_time(std::int32_t pid) {
    if (pid <= 0) return std::nullopt;
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) return std::nullopt;
    // The command name (field 2) is in parentheses and may contain spaces or ')': skip past
    // the last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(line.substr(close + 1));
    std::string field;
    // After ')': field 3 (state) is the first token; the start time is field 22.
    for (int index = 3; index <= 22; ++index) {
        if (!(rest >> field)) return std::nullopt;
        if (index == 3 && (field == "Z" || field == "X")) return std::nullopt;
    }
    try {
        return static_cast<std::uint64_t>(std::stoull(field));
    } catch (...) {
        return std::nullopt;
    }
}

/// True when `pid` exists and — if `start_time` is known (non-zero) — is the same process.
[[nodiscard]] inline bool process_alive(std::int32_t pid, std::uint64_t start_time) {
    const auto actual = process_start_time(pid);
    if (!actual) return false;
    return start_time == 0 || *actual == start_time;
}

/// Waits until the process (`pid` + `start_time`) has exited, or `deadline`; true when it is
/// gone. Wakes the moment it exits (a pidfd polls readable on exit, child or not), so a stop
/// costs what the box takes to shut down, not that plus a polling interval. Without pidfd
/// support (Linux < 5.3) it polls every 2 ms.
[[nodiscard]] inline bool wait_for_exit(std::int32_t pid, std::uint64_t start_time,
                                        std::chrono::steady_clock::time_point deadline) {
    using Clock = std::chrono::steady_clock;
    if (pid <= 0) return true;
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    // Identity is checked after the pidfd is open: if the pid had been reused before, the start
    // time differs and the (wrong) process is never waited for.
    if (!process_alive(pid, start_time)) {
        if (fd >= 0) ::close(fd);
        return true;
    }
    if (fd >= 0) {
        while (Clock::now() < deadline) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            pollfd p{fd, POLLIN, 0};
            const int r = ::poll(&p, 1, static_cast<int>(std::clamp<long long>(left, 1, 60'000)));
            if (r > 0 || (r < 0 && errno != EINTR)) break;
        }
        ::close(fd);
    }
    // Exited but not yet reaped counts as gone (a zombie has no start time above).
    while (process_alive(pid, start_time)) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(fd >= 0 ? 1 : 2));
    }
    return true;
}

}  // namespace boxlite::detail
