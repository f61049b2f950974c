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
