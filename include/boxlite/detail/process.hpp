// Process identity on Linux: a pid plus its start time (field 22 of /proc/<pid>/stat, clock
// ticks since boot) names one process for good, even after the pid is reused.
#pragma once

#include <sys/types.h>

#include <cstdint>
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

}  // namespace boxlite::detail
