// BoxState: a box's mutable record — status, and the handle of its running engine.
#pragma once

#include <boxlite/box_status.hpp>
#include <boxlite/container_id.hpp>
#include <boxlite/engine_handle.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace boxlite {

struct BoxState {
    BoxStatus status = BoxStatus::Configured;
    /// Set while Running (and Stopping); cleared when Stopped.
    std::optional<EngineHandle> handle;
    /// The OCI container id inside the guest, once started.
    std::optional<ContainerID> container_id;
    std::chrono::system_clock::time_point last_updated = std::chrono::system_clock::now();
    std::optional<std::chrono::system_clock::time_point> started_at;

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
