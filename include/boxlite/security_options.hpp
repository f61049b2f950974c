// SecurityOptions: how tightly the box's engine process is confined on the host.
// Presets: development() (off, for debugging), standard() (default), maximum().
// The foundation issue completes the builder; fields follow the reference.
#pragma once

#include <boxlite/resource_limits.hpp>

#include <string>
#include <vector>

namespace boxlite {

struct SecurityOptions {
    bool jailer_enabled = true;
    bool seccomp_enabled = true;
    bool new_pid_ns = true;
    bool new_net_ns = true;
    bool close_fds = true;
    bool sanitize_env = true;
    std::vector<std::string> env_allowlist = {"PATH", "HOME", "LANG", "TERM", "RUST_LOG", "BOXLITE_LOG"};
    ResourceLimits resource_limits;

    [[nodiscard]] static SecurityOptions development();
    [[nodiscard]] static SecurityOptions standard();
    [[nodiscard]] static SecurityOptions maximum();

    friend bool operator==(const SecurityOptions&, const SecurityOptions&) = default;
};

inline SecurityOptions SecurityOptions::development() {
    SecurityOptions o;
    o.jailer_enabled = false;
    o.seccomp_enabled = false;
    o.sanitize_env = false;
    o.close_fds = false;
    return o;
}
inline SecurityOptions SecurityOptions::standard() { return SecurityOptions{}; }
inline SecurityOptions SecurityOptions::maximum() {
    SecurityOptions o;
    o.resource_limits.max_open_files = 1024;
    o.resource_limits.max_processes = 512;
    return o;
}

}  // namespace boxlite
