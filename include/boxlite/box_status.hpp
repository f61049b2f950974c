// BoxStatus: a box's lifecycle status, and the state machine that governs it.
//
//   create()  -> Configured   (persisted, nothing running)
//   start()   -> Running      (engine up, guest agent answering)
//   stop()    -> Stopping -> Stopped   (rootfs kept; start() again runs it)
//   crash     -> Stopped      (seen on the next look: a dead shim is never Running)
//   Unknown   -> anything     (recovery after an error we could not classify)
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace boxlite {

enum class BoxStatus : std::uint8_t { Unknown, Configured, Running, Stopping, Stopped };

/// Running: the engine process exists and the agent answers.
constexpr bool is_active(BoxStatus s) noexcept { return s == BoxStatus::Running; }
constexpr bool is_running(BoxStatus s) noexcept { return s == BoxStatus::Running; }
constexpr bool is_configured(BoxStatus s) noexcept { return s == BoxStatus::Configured; }
constexpr bool is_stopped(BoxStatus s) noexcept { return s == BoxStatus::Stopped; }
/// A state the box passes through on its way elsewhere.
constexpr bool is_transient(BoxStatus s) noexcept { return s == BoxStatus::Stopping; }
/// Configured boxes start for the first time; Stopped boxes restart.
constexpr bool can_start(BoxStatus s) noexcept { return s == BoxStatus::Configured || s == BoxStatus::Stopped; }
constexpr bool can_stop(BoxStatus s) noexcept { return s == BoxStatus::Running; }
/// remove() without force: anything that is not running.
constexpr bool can_remove(BoxStatus s) noexcept {
    return s == BoxStatus::Configured || s == BoxStatus::Stopped || s == BoxStatus::Unknown;
}
/// exec on Configured/Stopped starts the box implicitly.
constexpr bool can_exec(BoxStatus s) noexcept {
    return s == BoxStatus::Configured || s == BoxStatus::Running || s == BoxStatus::Stopped;
}

constexpr bool can_transition(BoxStatus from, BoxStatus to) noexcept {
    using enum BoxStatus;
    switch (from) {
        case Unknown: return true;
        case Configured: return to == Running || to == Stopped || to == Unknown;
        case Running: return to == Stopping || to == Stopped || to == Unknown;
        case Stopping: return to == Stopped || to == Unknown;
        case Stopped: return to == Running || to == Unknown;
    }
    return false;
}

constexpr std::string_view to_string(BoxStatus s) noexcept {
    switch (s) {
        case BoxStatus::Unknown: return "unknown";
        case BoxStatus::Configured: return "configured";
        case BoxStatus::Running: return "running";
        case BoxStatus::Stopping: return "stopping";
        case BoxStatus::Stopped: return "stopped";
    }
    return "unknown";
}

constexpr std::optional<BoxStatus> parse_box_status(std::string_view text) noexcept {
    for (auto s :
         {BoxStatus::Unknown, BoxStatus::Configured, BoxStatus::Running, BoxStatus::Stopping, BoxStatus::Stopped}) {
        if (to_string(s) == text) return s;
    }
    return std::nullopt;
}

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::BoxStatus> : fmt::formatter<std::string_view> {
    auto format(boxlite::BoxStatus s, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(boxlite::to_string(s), ctx);
    }
};
