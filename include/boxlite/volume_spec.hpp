// VolumeSpec: a host directory (or file) shared into the box (virtiofs in VMs, a bind mount in
// namespaces), or an anonymous volume: a folder of the box's own, removed with the box.
#pragma once

#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace boxlite {

struct VolumeSpec {
    /// An absolute path that exists on the host; empty for an anonymous volume (a folder under
    /// the box's directory, `<box dir>/volumes/<index>`, created at the first start and removed
    /// with the box).
    std::string host_path;
    std::string guest_path;  ///< absolute path inside the box, not "/", no "..", not under /proc, /sys or /dev
    bool read_only = false;

    [[nodiscard]] bool anonymous() const noexcept { return host_path.empty(); }

    friend bool operator==(const VolumeSpec&, const VolumeSpec&) = default;
};

namespace detail {

/// The components of an absolute guest path ("//a/./b/" gives {"a", "b"}); nullopt when one of
/// them is "..".
[[nodiscard]] inline std::optional<std::vector<std::string>> guest_path_components(std::string_view path) {
    std::vector<std::string> parts;
    for (std::size_t pos = 0; pos <= path.size();) {
        auto end = path.find('/', pos);
        if (end == std::string_view::npos) end = path.size();
        const auto part = path.substr(pos, end - pos);
        if (part == "..") return std::nullopt;
        if (!part.empty() && part != ".") parts.emplace_back(part);
        pos = end + 1;
    }
    return parts;
}

}  // namespace detail

/// The guest path in one spelling ("/data/" and "//data/." are "/data"), as volumes are compared.
[[nodiscard]] inline std::string normalized_guest_path(std::string_view path) {
    std::string out;
    if (auto parts = detail::guest_path_components(path)) {
        for (const auto& part : *parts) out += "/" + part;
    }
    return out.empty() ? std::string("/") : out;
}

/// Where the anonymous volume `index` (its position in BoxOptions::volumes) of the box whose
/// directory is `box_dir` lives on the host.
[[nodiscard]] inline std::filesystem::path anonymous_volume_path(const std::filesystem::path& box_dir,
                                                                 std::size_t index) {
    return box_dir / "volumes" / std::to_string(index);
}

/// The checks every surface shares (C++ API, CLI, C API, SDKs), made at create before anything is
/// written: host_path empty (anonymous) or absolute and existing now (a missing one is a typo far
/// more often than a wish to create it); guest_path absolute, not "/", without "..", and not on
/// /proc, /sys or /dev (the kernel's interfaces the box's confinement masks and guards).
[[nodiscard]] inline BoxliteResult<void> validate(const VolumeSpec& spec) {
    if (detail::has_nul(spec.host_path)) {
        return fail(ErrorKind::Config, "volume host path must not contain NUL");
    }
    if (!spec.host_path.empty()) {
        if (spec.host_path.front() != '/') {
            return fail(ErrorKind::Config,
                        "volume host path '{}' is relative; it must be an absolute path (or empty for an "
                        "anonymous volume)",
                        spec.host_path);
        }
        std::error_code ec;
        if (!std::filesystem::exists(spec.host_path, ec)) {
            return fail(ErrorKind::Config,
                        "volume host path {} does not exist; create it first, or leave the host path empty for an "
                        "anonymous volume",
                        spec.host_path);
        }
    }
    if (spec.guest_path.empty() || detail::has_nul(spec.guest_path) || spec.guest_path.front() != '/') {
        return fail(ErrorKind::Config, "volume guest path '{}' must be an absolute path in the box", spec.guest_path);
    }
    const auto parts = detail::guest_path_components(spec.guest_path);
    if (!parts) {
        return fail(ErrorKind::Config, "volume guest path '{}' must not contain '..'", spec.guest_path);
    }
    if (parts->empty()) {
        return fail(ErrorKind::Config, "volume guest path must not be '/' (mount below it, e.g. /data)");
    }
    for (const char* reserved : {"proc", "sys", "dev"}) {
        if (parts->front() == reserved) {
            return fail(ErrorKind::Config,
                        "volume guest path '{}' is on /{}, which the box's kernel interfaces own; mount "
                        "elsewhere (not /proc, /sys or /dev)",
                        spec.guest_path, reserved);
        }
    }
    return {};
}

}  // namespace boxlite

/// docker's notation: "/host:/guest", "/host:/guest:ro", "/guest" (anonymous).
template <>
struct fmt::formatter<boxlite::VolumeSpec> : fmt::formatter<std::string_view> {
    auto format(const boxlite::VolumeSpec& v, format_context& ctx) const {
        const auto text = v.anonymous() ? fmt::format("{}{}", v.guest_path, v.read_only ? ":ro" : "")
                                        : fmt::format("{}:{}{}", v.host_path, v.guest_path, v.read_only ? ":ro" : "");
        return fmt::formatter<std::string_view>::format(text, ctx);
    }
};
