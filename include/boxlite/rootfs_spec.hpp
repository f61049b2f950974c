// RootfsSpec: where a box's root filesystem comes from — an OCI image reference
// ("alpine:latest", "ghcr.io/org/app@sha256:...") or an existing directory on the host.
#pragma once

#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace boxlite {

struct RootfsSpec {
    struct Image {
        std::string reference;
        friend bool operator==(const Image&, const Image&) = default;
    };
    struct RootfsPath {
        std::filesystem::path path;
        friend bool operator==(const RootfsPath&, const RootfsPath&) = default;
    };

    std::variant<Image, RootfsPath> source = Image{"alpine:latest"};

    [[nodiscard]] static RootfsSpec image(std::string reference) { return {Image{std::move(reference)}}; }
    [[nodiscard]] static RootfsSpec path(std::filesystem::path dir) { return {RootfsPath{std::move(dir)}}; }

    [[nodiscard]] bool is_image() const noexcept { return std::holds_alternative<Image>(source); }
    [[nodiscard]] const Image* as_image() const noexcept { return std::get_if<Image>(&source); }
    [[nodiscard]] const RootfsPath* as_path() const noexcept { return std::get_if<RootfsPath>(&source); }

    friend bool operator==(const RootfsSpec&, const RootfsSpec&) = default;
};

/// Image: a non-empty reference without whitespace or control characters (the image component
/// parses it fully when it pulls). RootfsPath: an existing directory.
[[nodiscard]] inline BoxliteResult<void> validate(const RootfsSpec& spec) {
    if (const auto* image = spec.as_image()) {
        if (image->reference.empty()) return fail(ErrorKind::Config, "image reference must not be empty");
        for (char c : image->reference) {
            if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
                return fail(ErrorKind::Config, "image reference '{}' contains whitespace or control characters",
                            image->reference);
            }
        }
        return {};
    }
    const auto* path_spec = spec.as_path();
    if (path_spec == nullptr) return {};  // unreachable; spelled out so -O3 sees no null dereference
    const auto& dir = path_spec->path;
    std::error_code ec;
    if (dir.empty() || !std::filesystem::is_directory(dir, ec)) {
        return fail(ErrorKind::Config, "rootfs path {} is not an existing directory", dir.string());
    }
    return {};
}

}  // namespace boxlite

/// "image alpine:latest" or "path /srv/rootfs".
template <>
struct fmt::formatter<boxlite::RootfsSpec> : fmt::formatter<std::string_view> {
    auto format(const boxlite::RootfsSpec& r, format_context& ctx) const {
        const auto text = r.as_image() != nullptr ? fmt::format("image {}", r.as_image()->reference)
                                                  : fmt::format("path {}", r.as_path()->path.string());
        return fmt::formatter<std::string_view>::format(text, ctx);
    }
};
