// BoxMetrics: one box's counters (kept by the runtime in this process), its resource usage
// (from the engine while it runs) and how long each stage of its last start took — the
// reference's `box.metrics()` fields.
#pragma once

#include <cstdint>
#include <optional>

#include <fmt/format.h>

namespace boxlite {

struct BoxMetrics {
    // Counters since this process opened the box.
    std::uint64_t commands_executed_total = 0;
    std::uint64_t exec_errors_total = 0;
    std::uint64_t bytes_sent_total = 0;       ///< stdin and files sent to the box
    std::uint64_t bytes_received_total = 0;   ///< stdout/stderr and files received

    // Resource usage, while Running (nullopt otherwise).
    std::optional<double> cpu_percent;
    std::optional<std::uint64_t> memory_bytes;
    std::optional<std::uint64_t> cpu_time_ns;
    std::optional<std::uint32_t> process_count;
    std::optional<std::uint64_t> network_bytes_sent;
    std::optional<std::uint64_t> network_bytes_received;
    std::optional<std::uint64_t> network_tcp_connections;
    std::optional<std::uint64_t> network_tcp_errors;

    // Timings of the last start in this process, milliseconds (nullopt: not measured).
    std::optional<std::uint64_t> total_create_duration_ms;  ///< start() call to agent ready
    std::optional<std::uint64_t> guest_boot_duration_ms;    ///< engine start to agent ready
    std::optional<std::uint64_t> stage_filesystem_setup_ms; ///< box directory
    std::optional<std::uint64_t> stage_image_prepare_ms;    ///< image pull / rootfs lookup
    std::optional<std::uint64_t> stage_guest_rootfs_ms;     ///< guest rootfs (disk, overlay)
    std::optional<std::uint64_t> stage_box_config_ms;       ///< launch description
    std::optional<std::uint64_t> stage_box_spawn_ms;        ///< engine process spawn
    std::optional<std::uint64_t> stage_container_init_ms;   ///< container set-up in the guest

    friend bool operator==(const BoxMetrics&, const BoxMetrics&) = default;
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::BoxMetrics> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxMetrics& m, format_context& ctx) const {
        auto opt = [](const auto& v) { return v ? fmt::format("{}", *v) : std::string("-"); };
        return fmt::formatter<std::string_view>::format(
            fmt::format("commands_executed_total={} exec_errors_total={} bytes_sent_total={} "
                        "bytes_received_total={} memory_bytes={} cpu_time_ns={} total_create_duration_ms={} "
                        "guest_boot_duration_ms={}",
                        m.commands_executed_total, m.exec_errors_total, m.bytes_sent_total,
                        m.bytes_received_total, opt(m.memory_bytes), opt(m.cpu_time_ns),
                        opt(m.total_create_duration_ms), opt(m.guest_boot_duration_ms)),
            ctx);
    }
};
