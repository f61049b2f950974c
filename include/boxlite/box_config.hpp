// BoxConfig: a box's immutable record — written once at create, never changed.
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/box_options.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace boxlite {

struct BoxConfig {
    BoxID id = BoxID::generate();
    std::optional<std::string> name;
    BoxOptions options;
    std::chrono::system_clock::time_point created_at = std::chrono::system_clock::now();
    /// The engine kind that runs this box ("namespace", "kvm", "qemu", "mock").
    std::string engine;

    friend bool operator==(const BoxConfig&, const BoxConfig&) = default;
};

}  // namespace boxlite

/// "01JJNH8QW3ZKABCDEFGHJKMNPQ (web) on mock: image alpine:latest, 1 cpu, ...".
template <>
struct fmt::formatter<boxlite::BoxConfig> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxConfig& c, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("{}{} on {}: {}", c.id,
                                                                    c.name ? fmt::format(" ({})", *c.name)
                                                                           : std::string(),
                                                                    c.engine.empty() ? "?" : c.engine, c.options),
                                                        ctx);
    }
};
