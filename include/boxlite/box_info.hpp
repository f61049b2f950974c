// BoxInfo: what `list_info()` / `get_info()` / `box.info()` report about a box — a read-only
// snapshot taken from its stored config and state; taking it never touches the engine.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/box_id.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/box_status.hpp>
#include <boxlite/container_id.hpp>
#include <boxlite/detail/time.hpp>
#include <boxlite/network_spec.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace boxlite {

struct BoxInfo {
    BoxID id = BoxID::generate();
    std::optional<std::string> name;
    BoxStatus status = BoxStatus::Unknown;
    std::chrono::system_clock::time_point created_at{};
    std::chrono::system_clock::time_point last_updated{};
    std::optional<std::chrono::system_clock::time_point> started_at;
    /// The engine process (shim) while Running, else nullopt.
    std::optional<std::int32_t> pid;
    /// "alpine:latest", or the rootfs directory for RootfsPath boxes.
    std::string image;
    std::uint32_t cpus = 0;
    std::uint32_t memory_mib = 0;
    std::string engine;
    std::optional<ContainerID> container_id;
    std::map<std::string, std::string> labels;
    /// The box's volumes as created (Docker's "Mounts"); an anonymous one has an empty host_path
    /// and lives at anonymous_volume_path(<box dir>, its index).
    std::vector<VolumeSpec> volumes;
    /// The published ports: as bound while the box runs (a picked host port filled in), as asked
    /// (BoxOptions::ports) otherwise.
    std::vector<PortSpec> ports;
    /// The network as created (BoxOptions::network): mode and allow_net.
    NetworkSpec network;
    /// How long the create and the last start took, stage by stage (kept across processes).
    BoxStageTimings stages;

    /// The reference's `state.running`.
    [[nodiscard]] bool running() const noexcept { return is_running(status); }

    [[nodiscard]] static BoxInfo from(const BoxConfig& config, const BoxState& state) {
        BoxInfo info;
        info.id = config.id;
        info.name = config.name;
        info.status = state.status;
        info.created_at = config.created_at;
        info.last_updated = state.last_updated;
        info.started_at = state.started_at;
        if (state.handle && (is_running(state.status) || is_transient(state.status))) info.pid = state.handle->pid;
        if (const auto* image = config.options.rootfs.as_image()) info.image = image->reference;
        else if (const auto* dir = config.options.rootfs.as_path()) info.image = dir->path.string();
        info.cpus = config.options.cpus;
        info.memory_mib = config.options.memory_mib;
        info.engine = config.engine;
        info.container_id = state.container_id;
        info.labels = config.options.labels;
        info.volumes = config.options.volumes;
        info.network = config.options.network;
        info.stages = state.stages;
        info.ports = info.pid && !state.handle->ports.empty() ? state.handle->ports : config.options.ports;
        return info;
    }

    friend bool operator==(const BoxInfo&, const BoxInfo&) = default;
};

}  // namespace boxlite

/// One line, as `boxlite ls` would print it: "01JJNH8QW3ZK my-box running alpine:latest 1cpu 512MiB".
template <>
struct fmt::formatter<boxlite::BoxInfo> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxInfo& info, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("{} {} {} {} {}cpu {}MiB", info.id.short_id(),
                                                                    info.name.value_or("-"), info.status, info.image,
                                                                    info.cpus, info.memory_mib),
                                                        ctx);
    }
};
