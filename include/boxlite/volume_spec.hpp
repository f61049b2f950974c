// VolumeSpec: a host directory shared into the box (virtiofs in VMs, a bind mount in namespaces).
#pragma once

#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <string>
#include <system_error>

namespace boxlite {

struct VolumeSpec {
    std::string host_path;   ///< must exist on the host
    std::string guest_path;  ///< absolute path inside the box
    bool read_only = false;

    friend bool operator==(const VolumeSpec&, const VolumeSpec&) = default;
};

/// host_path must exist now (a missing one is a typo far more often than a wish to create it);
/// guest_path must be absolute, must not be "/" and must not climb with "..".
[[nodiscard]] inline BoxliteResult<void> validate(const VolumeSpec& spec) {
    if (spec.host_path.empty() || detail::has_nul(spec.host_path)) {
        return fail(ErrorKind::Config, "volume host path must not be empty");
    }
    std::error_code ec;
    if (!std::filesystem::exists(spec.host_path, ec)) {
        return fail(ErrorKind::Config, "volume host path {} does not exist", spec.host_path);
    }
    const std::filesystem::path guest(spec.guest_path);
    if (spec.guest_path.empty() || detail::has_nul(spec.guest_path) || !guest.is_absolute()) {
        return fail(ErrorKind::Config, "volume guest path '{}' must be an absolute path", spec.guest_path);
    }
    if (guest.relative_path().empty()) {
        return fail(ErrorKind::Config, "volume guest path must not be '/' (mount below it)");
    }
    for (const auto& part : guest) {
        if (part == "..") {
            return fail(ErrorKind::Config, "volume guest path '{}' must not contain '..'", spec.guest_path);
        }
    }
    return {};
}

}  // namespace boxlite

/// docker's notation: "/host:/guest" or "/host:/guest:ro".
template <>
struct fmt::formatter<boxlite::VolumeSpec> : fmt::formatter<std::string_view> {
    auto format(const boxlite::VolumeSpec& v, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("{}:{}{}", v.host_path, v.guest_path,
                                                                    v.read_only ? ":ro" : ""),
                                                        ctx);
    }
};
