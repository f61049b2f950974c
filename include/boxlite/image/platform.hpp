// Platform: which variant of a multi-architecture image to pull ("linux/amd64", "linux/arm64/v8").
//
// Matching follows containerd's normalization: "aarch64" is "arm64", "x86_64" is "amd64", an arm64
// entry without a variant is "v8", and an "arm" entry without a variant is "v7".
#pragma once

#include <boxlite/error.hpp>

#include <string>
#include <string_view>

namespace boxlite::image {

struct Platform {
    std::string os = "linux";
    std::string architecture = "amd64";
    std::string variant;  ///< "" when the architecture has none

    /// "linux/amd64", "linux/arm64/v8".
    [[nodiscard]] std::string to_string() const {
        return variant.empty() ? os + "/" + architecture : os + "/" + architecture + "/" + variant;
    }
    friend bool operator==(const Platform&, const Platform&) = default;
};

/// The platform of this build of BoxLite (what a box can run).
[[nodiscard]] Platform host_platform();

/// "os/arch[/variant]"; InvalidArgument when it has fewer than 2 or more than 3 parts.
[[nodiscard]] BoxliteResult<Platform> parse_platform(std::string_view text);

/// The platform with aliases resolved and the default variant filled in.
[[nodiscard]] Platform normalize_platform(Platform platform);

/// Whether an index entry for `candidate` satisfies a request for `wanted`. A request without a
/// variant accepts any variant (the best one is chosen by the caller); with one, it must match.
[[nodiscard]] bool platform_matches(const Platform& wanted, const Platform& candidate);

}  // namespace boxlite::image
