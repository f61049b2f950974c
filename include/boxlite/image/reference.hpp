// ImageReference: a parsed `[registry/]repository[:tag][@digest]`, normalized the way Docker does.
//
//   "alpine"                      -> docker.io/library/alpine:latest
//   "index.docker.io/foo/bar:1"   -> docker.io/foo/bar:1
//   "localhost:5000/app"          -> localhost:5000/app:latest   (a host:port or a dotted name,
//                                    or `localhost`, before the first '/' is a registry)
//   "ghcr.io/org/app@sha256:<64>" -> pinned by digest; a tag next to a digest is kept for display
//
// Unqualified references ("alpine", "team/app") are looked up in BoxliteOptions::image_registries,
// in order, with docker.io tried last; `candidate_references` spells out that search order.
#pragma once

#include <boxlite/error.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::image {

inline constexpr std::string_view kDockerHub = "docker.io";
inline constexpr std::string_view kDefaultTag = "latest";
/// Docker's limit on the length of a repository name with its registry.
inline constexpr std::size_t kMaxNameLength = 255;
inline constexpr std::size_t kMaxTagLength = 128;

struct ImageReference {
    std::string registry;               ///< "docker.io", "ghcr.io", "localhost:5000", "[::1]:5000"
    std::string repository;             ///< "library/alpine" (lower case)
    std::optional<std::string> tag;     ///< "latest"; absent only when a digest pins the image
    std::optional<std::string> digest;  ///< "sha256:<64 hex>"
    /// The text named a registry itself; otherwise the registry came from the search list.
    bool registry_explicit = false;

    /// Canonical form: "docker.io/library/alpine:latest", "host/repo@sha256:...".
    [[nodiscard]] std::string to_string() const;
    /// "registry/repository" without tag or digest.
    [[nodiscard]] std::string name() const { return registry + "/" + repository; }
    /// What goes after /manifests/: the digest when pinned, else the tag.
    [[nodiscard]] std::string manifest_reference() const {
        if (digest) return *digest;
        return tag ? *tag : std::string(kDefaultTag);
    }

    friend bool operator==(const ImageReference&, const ImageReference&) = default;
};

/// Parses and normalizes one reference. InvalidArgument (naming the offending part and the
/// grammar that is allowed) when it is malformed; `default_registry` fills an unqualified name.
[[nodiscard]] BoxliteResult<ImageReference> parse_reference(std::string_view text,
                                                            std::string_view default_registry = kDockerHub);

/// The references to try, in order, for `text`: just one when it names a registry; otherwise one
/// per entry of `registries` followed by docker.io (unless already listed). Duplicates dropped.
[[nodiscard]] BoxliteResult<std::vector<ImageReference>> candidate_references(std::string_view text,
                                                                              std::span<const std::string> registries);

/// A registry as a reference names it: host[:port] or [ipv6][:port], no scheme or path.
[[nodiscard]] bool is_valid_registry_host(std::string_view registry);

/// True for registries reached over plain HTTP by default, as Docker does: localhost, 127.0.0.0/8, ::1.
[[nodiscard]] bool is_loopback_registry(std::string_view registry);

/// A digest "algorithm:hex" that we can verify: sha256 with 64 lower-case hex digits.
[[nodiscard]] bool is_valid_sha256_digest(std::string_view digest);

}  // namespace boxlite::image
