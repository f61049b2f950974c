// BoxMetrics: one box's counters (kept by the runtime in this process), its resource usage
// (from the engine while it runs) and how long each stage of getting it running took — the
// reference's `box.metrics()` fields.
//
// Stage timings are measured where each stage happens and stored with the box's state
// (BoxStageTimings), so a box created or started by another process reports them too; in
// milliseconds; nullopt = that stage was not measured:
//
//   at create (image boxes only; a rootfs directory is neither pulled nor built)
//     stage_image_prepare_ms    resolving the reference and fetching what the store lacked
//     stage_guest_rootfs_ms     building the tree (unpack) or ext4 disk the engine boots from;
//                               nullopt when the store had it cached. A start that has to build
//                               it again (the cache was collected) replaces it.
//   at every start (the last one)
//     stage_filesystem_setup_ms the box folder
//     stage_box_config_ms       the launch: the pinned image's rootfs located, its defaults
//                               merged with BoxOptions
//     stage_box_spawn_ms        Engine::start(), from spawning the engine process (shim) until
//                               it reports the guest agent accepting — guest boot included
//     total_create_duration_ms  the whole start() call, until the agent accepts
//   reported by the engine (EngineLaunch::timings), parts of stage_box_spawn_ms
//     guest_boot_duration_ms    the guest's own start-up until its agent accepts
//     stage_container_init_ms   the container set-up inside the guest
//     stage_guest_assets_ms     VM engines: the guest kernel and initramfs found, or made the
//                               first time (docs/guest.md)
//     stage_box_disk_ms         VM engines: the box's disk overlay created or grown
//     The kvm engine reports guest boot (VM started until the agent answers), assets and disk;
//     the qemu engine reports guest boot in the guest's own clock (CLOCK_BOOTTIME when the agent
//     listens, from its console line; the host's time from the shim's spawn if that is missing),
//     container init (the guest init's first line until the agent listens), assets and disk;
//     an engine leaves what it does not measure nullopt, and the runtime never guesses it.
//
// The create-time stages stay when a later start does not redo them.
#pragma once

#include <cstdint>
#include <optional>

#include <fmt/format.h>

namespace boxlite {

struct BoxMetrics {
    // Counters since this process opened the box. The byte counters grow when an agent
    // connection closes, so a long-running execution shows up only once it ends.
    std::uint64_t commands_executed_total = 0;
    std::uint64_t exec_errors_total = 0;
    std::uint64_t bytes_sent_total = 0;      ///< stdin and files sent to the box
    std::uint64_t bytes_received_total = 0;  ///< stdout/stderr and files received

    // Resource usage, while Running (nullopt otherwise).
    std::optional<double> cpu_percent;
    std::optional<std::uint64_t> memory_bytes;
    std::optional<std::uint64_t> cpu_time_ns;
    std::optional<std::uint32_t> process_count;
    std::optional<std::uint64_t> network_bytes_sent;
    std::optional<std::uint64_t> network_bytes_received;
    std::optional<std::uint64_t> network_tcp_connections;
    std::optional<std::uint64_t> network_tcp_errors;

    // Stage timings, milliseconds (see the table above; nullopt: not measured).
    std::optional<std::uint64_t> total_create_duration_ms;   ///< the last start() call, to agent ready
    std::optional<std::uint64_t> guest_boot_duration_ms;     ///< engine-reported: guest start-up to agent ready
    std::optional<std::uint64_t> stage_filesystem_setup_ms;  ///< start: the box folder
    std::optional<std::uint64_t> stage_image_prepare_ms;     ///< create: image resolve + pull
    std::optional<std::uint64_t> stage_guest_rootfs_ms;      ///< create (or a rebuilding start): unpack / ext4 build
    std::optional<std::uint64_t> stage_box_config_ms;        ///< start: launch description
    std::optional<std::uint64_t> stage_box_spawn_ms;         ///< start: Engine::start(), spawn to agent ready
    std::optional<std::uint64_t> stage_container_init_ms;    ///< engine-reported: container set-up in the guest
    std::optional<std::uint64_t> stage_guest_assets_ms;      ///< engine-reported: guest kernel + initramfs
    std::optional<std::uint64_t> stage_box_disk_ms;          ///< engine-reported: the box's disk overlay

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
                        m.commands_executed_total, m.exec_errors_total, m.bytes_sent_total, m.bytes_received_total,
                        opt(m.memory_bytes), opt(m.cpu_time_ns), opt(m.total_create_duration_ms),
                        opt(m.guest_boot_duration_ms)),
            ctx);
    }
};
