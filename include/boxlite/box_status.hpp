// BoxStatus: a box's lifecycle status, and the state machine that governs it.
//
//   create()  -> Configured   (persisted, nothing running)
//   start()   -> Running      (engine up, guest agent answering)
//   stop()    -> Stopping -> Stopped   (rootfs kept; start() again runs it)
//   crash     -> Stopped      (seen on the next look: a dead shim is never Running)
//   remove()  -> Removing -> (row deleted)   processes, folder and image pins go first, the row
//                              last, so a remove killed half-way is finished by the next process
//                              that sees the box (or opens the home)
//   Unknown   -> anything     (recovery after an error we could not classify)
//
// Stopping and Removing are only ever seen by someone else while their owner holds the box's
// lock; whoever takes the lock and still finds them knows the owner died, and finishes the job.
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace boxlite {

enum class BoxStatus : std::uint8_t { Unknown, Configured, Running, Stopping, Stopped, Removing };

/// Running: the engine process exists and the agent answers.
constexpr bool is_active(BoxStatus s) noexcept { return s == BoxStatus::Running; }
constexpr bool is_running(BoxStatus s) noexcept { return s == BoxStatus::Running; }
constexpr bool is_configured(BoxStatus s) noexcept { return s == BoxStatus::Configured; }
constexpr bool is_stopped(BoxStatus s) noexcept { return s == BoxStatus::Stopped; }
/// A state the box passes through on its way elsewhere.
constexpr bool is_transient(BoxStatus s) noexcept { return s == BoxStatus::Stopping || s == BoxStatus::Removing; }
/// Being removed: what is left of it goes on the next look, and the name stays taken until then.
constexpr bool is_removing(BoxStatus s) noexcept { return s == BoxStatus::Removing; }
/// Configured boxes start for the first time; Stopped boxes restart.
constexpr bool can_start(BoxStatus s) noexcept { return s == BoxStatus::Configured || s == BoxStatus::Stopped; }
constexpr bool can_stop(BoxStatus s) noexcept { return s == BoxStatus::Running; }
/// remove() without force: anything that is not running.
constexpr bool can_remove(BoxStatus s) noexcept {
    return s == BoxStatus::Configured || s == BoxStatus::Stopped || s == BoxStatus::Unknown || s == BoxStatus::Removing;
}
/// exec on Configured/Stopped starts the box implicitly.
constexpr bool can_exec(BoxStatus s) noexcept {
    return s == BoxStatus::Configured || s == BoxStatus::Running || s == BoxStatus::Stopped;
}

constexpr bool can_transition(BoxStatus from, BoxStatus to) noexcept {
    using enum BoxStatus;
    switch (from) {
        case Unknown: return true;
        case Configured: return to == Running || to == Stopped || to == Unknown || to == Removing;
        case Running: return to == Stopping || to == Stopped || to == Unknown || to == Removing;
        case Stopping: return to == Stopped || to == Unknown || to == Removing;
        case Stopped: return to == Running || to == Unknown || to == Removing;
        case Removing: return to == Removing;  // only the row's deletion ends it
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
        case BoxStatus::Removing: return "removing";
    }
    return "unknown";
}

constexpr std::optional<BoxStatus> parse_box_status(std::string_view text) noexcept {
    for (auto s : {BoxStatus::Unknown, BoxStatus::Configured, BoxStatus::Running, BoxStatus::Stopping,
                   BoxStatus::Stopped, BoxStatus::Removing}) {
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
