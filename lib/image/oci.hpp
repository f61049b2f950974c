// OCI / Docker distribution documents: descriptors, image manifests, indexes, and the choice of a
// platform in an index. Parsing is strict and bounded: every field the network controls is checked.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/image/platform.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace boxlite::image {

namespace media_type {
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// What we send in Accept when fetching a manifest.
inline constexpr std::string_view kManifestAccept =
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
}  // namespace media_type

/// The most layers an image may have (Docker's overlay driver limit is far below this).
inline constexpr std::size_t kMaxLayers = 512;
/// The most entries an index may list.
inline constexpr std::size_t kMaxIndexEntries = 4096;

struct Descriptor {
    std::string media_type;
    std::string digest;
    std::uint64_t size = 0;
    std::optional<Platform> platform;
    std::map<std::string, std::string> annotations;
};

struct Manifest {
    std::string media_type;
    Descriptor config;
    std::vector<Descriptor> layers;
};

struct Index {
    std::string media_type;
    std::vector<Descriptor> manifests;
};

using ManifestDocument = std::variant<Manifest, Index>;

/// Parses a manifest or an index. `content_type` (HTTP header, may be empty) is used when the body
/// has no mediaType; a conflict between the two is an Image error.
[[nodiscard]] BoxliteResult<ManifestDocument> parse_manifest_document(std::string_view body,
                                                                      std::string_view content_type = {});

/// Picks the entry of `index` for `wanted`: exact variant first, then any matching one. Image
/// error listing the platforms the index offers when none matches.
[[nodiscard]] BoxliteResult<Descriptor> select_platform(const Index& index, const Platform& wanted,
                                                        std::string_view what);

/// Serializes a manifest back to JSON (for images imported from `docker save`).
[[nodiscard]] std::string serialize_manifest(const Manifest& manifest);

[[nodiscard]] bool is_layer_media_type(std::string_view media_type);

}  // namespace boxlite::image
