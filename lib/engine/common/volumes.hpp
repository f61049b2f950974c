// What an engine says about volumes it cannot mount yet: one wording for every VM engine, so the
// caller learns the same thing whichever engine refuses (docs/volumes.md).
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/error.hpp>

#include <string_view>

namespace boxlite::engine {

/// Unsupported, naming the engine, the box and the first volume, when `box` has volumes; success
/// otherwise. For the kvm engine, whose VMM has no vhost-user frontend for virtiofsd yet (the qemu
/// engine serves volumes through virtiofsd: lib/shim/qemu_mode.cpp).
[[nodiscard]] inline BoxliteResult<void> refuse_volumes_without_virtiofs(std::string_view kind, const BoxConfig& box) {
    const auto& volumes = box.options.volumes;
    if (volumes.empty()) return {};
    return fail(ErrorKind::Unsupported,
                "box {}: volumes need virtiofs, not built for the {} engine yet; {} volume(s) asked for, the first "
                "-v {} — remove them or use the qemu or namespace engine (--engine qemu|namespace)",
                box.id, kind, volumes.size(), volumes.front());
}

}  // namespace boxlite::engine
