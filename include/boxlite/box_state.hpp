// BoxState: a box's mutable record — status, and the handle of its running engine.
#pragma once

#include <boxlite/box_status.hpp>
#include <boxlite/container_id.hpp>
#include <boxlite/engine_handle.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace boxlite {

/// How long each stage of the box's create and last start took, in milliseconds (BoxMetrics'
/// stage fields; box_metrics.hpp says what each one covers). Kept with the state, so every
/// process sees them: `boxlite inspect`, `serve`, an SDK that opened the box later.
/// nullopt = that stage was not measured (or not done: a rootfs directory is not pulled).
struct BoxStageTimings {
    std::optional<std::uint64_t> total_create_ms;  ///< the last start() call, to agent ready
    std::optional<std::uint64_t> guest_boot_ms;    ///< engine-reported: guest start-up to agent ready
    std::optional<std::uint64_t> filesystem_setup_ms;
    std::optional<std::uint64_t> image_prepare_ms;  ///< at create
    std::optional<std::uint64_t> guest_rootfs_ms;   ///< at create, or a start that rebuilt it
    std::optional<std::uint64_t> box_config_ms;
    std::optional<std::uint64_t> box_spawn_ms;
    std::optional<std::uint64_t> container_init_ms;
    std::optional<std::uint64_t> guest_assets_ms;
    std::optional<std::uint64_t> box_disk_ms;

    friend bool operator==(const BoxStageTimings&, const BoxStageTimings&) = default;
};

struct BoxState {
    BoxStatus status = BoxStatus::Configured;
    /// Set while Running (and Stopping); cleared when Stopped.
    std::optional<EngineHandle> handle;
    /// The OCI container id inside the guest, once started.
    std::optional<ContainerID> container_id;
    std::chrono::system_clock::time_point last_updated = std::chrono::system_clock::now();
    std::optional<std::chrono::system_clock::time_point> started_at;
    /// The stages of the create and of the last start (kept across stop).
    BoxStageTimings stages;

    /// Validated transition; InvalidState naming both ends when not allowed.
    [[nodiscard]] BoxliteResult<void> transition_to(BoxStatus target) {
        if (!can_transition(status, target)) {
            return fail(ErrorKind::InvalidState, "cannot transition from {} to {}", status, target);
        }
        status = target;
        last_updated = std::chrono::system_clock::now();
        return {};
    }

    friend bool operator==(const BoxState&, const BoxState&) = default;
};

}  // namespace boxlite

/// "running (pid 1234 at unix:/…)" or "stopped".
template <>
struct fmt::formatter<boxlite::BoxState> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxState& s, format_context& ctx) const {
        const auto text = s.handle ? fmt::format("{} ({})", s.status, *s.handle) : fmt::format("{}", s.status);
        return fmt::formatter<std::string_view>::format(text, ctx);
    }
};
