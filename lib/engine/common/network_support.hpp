// What a VM engine says about network options it cannot honour yet: one wording for every VM
// engine (docs/networking.md). A VM box with the default network still starts: it has no network
// device, so loopback only.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/error.hpp>

#include <string_view>

namespace boxlite::engine {

/// Unsupported, naming the engine, the box and the first published port or allow_net entry, when
/// `box` asks for either; success otherwise.
[[nodiscard]] inline BoxliteResult<void> refuse_network_without_device(std::string_view kind, const BoxConfig& box) {
    const auto& o = box.options;
    if (!o.ports.empty())
        return fail(ErrorKind::Unsupported,
                    "box {}: the {} engine cannot publish ports yet (its VM has no network device); {} port "
                    "mapping(s) asked for — remove -p or use the namespace engine (--engine namespace)",
                    box.id, kind, o.ports.size());
    if (!o.network.allow_net.empty())
        return fail(ErrorKind::Unsupported,
                    "box {}: the {} engine has no network device yet, so --allow-net ('{}') cannot be enforced; "
                    "remove --allow-net or use the namespace engine (--engine namespace)",
                    box.id, kind, o.network.allow_net.front());
    return {};
}

}  // namespace boxlite::engine
