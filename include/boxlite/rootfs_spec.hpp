// RootfsSpec: where a box's root filesystem comes from — an OCI image reference
// ("alpine:latest", "ghcr.io/org/app@sha256:...") or an existing directory on the host.
#pragma once

#include <filesystem>
#include <string>
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

}  // namespace boxlite
