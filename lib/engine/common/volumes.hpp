// What an engine says about volumes it cannot mount yet: one wording for every VM engine, so the
// caller learns the same thing whichever engine refuses (docs/volumes.md).
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/error.hpp>

#include <string_view>

namespace boxlite::engine {

/// Unsupported, naming the engine, the box and the first volume, when `box` has volumes; success
/// otherwise. For engines whose guest reaches host folders through virtiofs, not yet built.
[[nodiscard]] inline BoxliteResult<void> refuse_volumes_without_virtiofs(std::string_view kind, const BoxConfig& box) {
    const auto& volumes = box.options.volumes;
    if (volumes.empty()) return {};
    return fail(ErrorKind::Unsupported,
                "box {}: volumes need virtiofs, not built for the {} engine yet; {} volume(s) asked for, the first "
                "-v {} — remove them or use the namespace engine (--engine namespace)",
                box.id, kind, volumes.size(), volumes.front());
}

}  // namespace boxlite::engine
