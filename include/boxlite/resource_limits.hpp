// ResourceLimits: per-box ceilings applied by the jailer (rlimits) and cgroups.
// An empty optional means "no limit beyond the host's".
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace boxlite {

struct ResourceLimits {
    /// The pids limit of a box whose caller set none (here or in SecurityOptions): a fork bomb
    /// in a box must not take the host's PIDs.
    static constexpr std::uint64_t kDefaultMaxProcesses = 4096;

    std::optional<std::uint64_t> max_open_files;  ///< RLIMIT_NOFILE
    std::optional<std::uint64_t> max_file_size;   ///< RLIMIT_FSIZE, bytes
    std::optional<std::uint64_t> max_processes;   ///< pids.max / RLIMIT_NPROC
    std::optional<std::uint64_t> max_memory;      ///< bytes (memory.max)
    std::optional<std::uint64_t> max_cpu_time;    ///< RLIMIT_CPU, seconds

    friend bool operator==(const ResourceLimits&, const ResourceLimits&) = default;
};

/// The pids limit a box gets: its own, else its SecurityOptions' (`security`), else the default.
[[nodiscard]] inline std::uint64_t effective_max_processes(const ResourceLimits& box,
                                                           const ResourceLimits& security) noexcept {
    return box.max_processes.value_or(security.max_processes.value_or(ResourceLimits::kDefaultMaxProcesses));
}

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

/// "max_open_files=1024 max_processes=512" (only the limits that are set), or "none".
template <>
struct fmt::formatter<boxlite::ResourceLimits> : fmt::formatter<std::string_view> {
    auto format(const boxlite::ResourceLimits& r, format_context& ctx) const {
        std::string out;
        auto add = [&](const char* name, const std::optional<std::uint64_t>& v) {
            if (v) out += fmt::format("{}{}={}", out.empty() ? "" : " ", name, *v);
        };
        add("max_open_files", r.max_open_files);
        add("max_file_size", r.max_file_size);
        add("max_processes", r.max_processes);
        add("max_memory", r.max_memory);
        add("max_cpu_time", r.max_cpu_time);
        return fmt::formatter<std::string_view>::format(out.empty() ? std::string("none") : out, ctx);
    }
};
