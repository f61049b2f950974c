// RuntimeMetrics: counters over everything one runtime (this process) has done, as the
// reference's `runtime.metrics()`. Counters only grow; num_running_boxes is a gauge read from
// storage, so it counts boxes started by other processes too.
#pragma once

#include <cstdint>

#include <fmt/format.h>

namespace boxlite {

struct RuntimeMetrics {
    std::uint64_t boxes_created_total = 0;
    std::uint64_t boxes_failed_total = 0;  ///< creates or starts that failed
    std::uint64_t num_running_boxes = 0;
    std::uint64_t total_commands_executed = 0;
    std::uint64_t total_exec_errors = 0;

    friend bool operator==(const RuntimeMetrics&, const RuntimeMetrics&) = default;
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::RuntimeMetrics> : fmt::formatter<std::string_view> {
    auto format(const boxlite::RuntimeMetrics& m, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(
            fmt::format("boxes_created_total={} boxes_failed_total={} num_running_boxes={} "
                        "total_commands_executed={} total_exec_errors={}",
                        m.boxes_created_total, m.boxes_failed_total, m.num_running_boxes, m.total_commands_executed,
                        m.total_exec_errors),
            ctx);
    }
};
