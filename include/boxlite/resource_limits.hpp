// ResourceLimits: per-box ceilings applied by the jailer (rlimits) and cgroups.
// An empty optional means "no limit beyond the host's".
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <optional>
#include <utility>

namespace boxlite {

struct ResourceLimits {
    std::optional<std::uint64_t> max_open_files;  ///< RLIMIT_NOFILE
    std::optional<std::uint64_t> max_file_size;   ///< RLIMIT_FSIZE, bytes
    std::optional<std::uint64_t> max_processes;   ///< pids.max / RLIMIT_NPROC
    std::optional<std::uint64_t> max_memory;      ///< bytes (memory.max)
    std::optional<std::uint64_t> max_cpu_time;    ///< RLIMIT_CPU, seconds

    friend bool operator==(const ResourceLimits&, const ResourceLimits&) = default;
};

/// A limit of 0 would make the box unusable (no files, no processes): set means >= 1.
[[nodiscard]] inline BoxliteResult<void> validate(const ResourceLimits& limits) {
    const std::pair<const char*, const std::optional<std::uint64_t>*> fields[] = {
        {"max_open_files", &limits.max_open_files}, {"max_file_size", &limits.max_file_size},
        {"max_processes", &limits.max_processes},   {"max_memory", &limits.max_memory},
        {"max_cpu_time", &limits.max_cpu_time},
    };
    for (const auto& [name, value] : fields) {
        if (value->has_value() && **value == 0) {
            return fail(ErrorKind::Config, "resource limit {} must be at least 1 (leave it unset for no limit)", name);
        }
    }
    return {};
}

}  // namespace boxlite
