// ResourceLimits: per-box ceilings applied by the jailer (rlimits) and cgroups.
// An empty optional means "no limit beyond the host's".
#pragma once

#include <cstdint>
#include <optional>

namespace boxlite {

struct ResourceLimits {
    std::optional<std::uint64_t> max_open_files;  ///< RLIMIT_NOFILE
    std::optional<std::uint64_t> max_file_size;   ///< RLIMIT_FSIZE, bytes
    std::optional<std::uint64_t> max_processes;   ///< pids.max / RLIMIT_NPROC
    std::optional<std::uint64_t> max_memory;      ///< bytes (memory.max)
    std::optional<std::uint64_t> max_cpu_time;    ///< RLIMIT_CPU, seconds

    friend bool operator==(const ResourceLimits&, const ResourceLimits&) = default;
};

}  // namespace boxlite
