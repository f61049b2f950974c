// SecurityOptions: how tightly the box's engine process is confined on the host.
// Presets: development() (off, for debugging), standard() (default), maximum().
// Fields follow the reference; SecurityOptionsBuilder starts from a preset and adjusts it.
#pragma once

#include <boxlite/bytes.hpp>
#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>
#include <boxlite/resource_limits.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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
    /// uid/gid the jailed engine process drops to; nullopt = an unprivileged id picked per box,
    /// 0 = keep root (not recommended).
    std::optional<std::uint32_t> uid;
    std::optional<std::uint32_t> gid;
    /// The jailer chroots the engine process into <chroot_base>/<box id>.
    bool chroot_enabled = true;
    std::filesystem::path chroot_base = "/srv/boxlite";
    /// Whether the engine process may use the host network at all (the box's own networking
    /// is NetworkSpec's business).
    bool network_enabled = true;

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
    o.chroot_enabled = false;
    o.new_pid_ns = false;
    o.new_net_ns = false;
    return o;
}
inline SecurityOptions SecurityOptions::standard() { return SecurityOptions{}; }
inline SecurityOptions SecurityOptions::maximum() {
    SecurityOptions o;
    o.resource_limits.max_open_files = 1024;
    o.resource_limits.max_processes = 512;
    o.resource_limits.max_file_size = Bytes::from_gib(1).count();
    o.uid = 65534;  // nobody
    o.gid = 65534;  // nogroup
    return o;
}

/// Limits of 0, a chroot base that is not a plain absolute path (while chroot is on) and
/// environment allowlist entries that are not variable names are Config errors.
[[nodiscard]] inline BoxliteResult<void> validate(const SecurityOptions& o) {
    if (auto ok = validate(o.resource_limits); !ok) return fail(ok.error().with_context("security.resource_limits"));
    if (o.chroot_enabled) {
        const auto& base = o.chroot_base;
        bool dotdot = false;
        for (const auto& part : base) dotdot = dotdot || part == "..";
        if (!base.is_absolute() || dotdot || detail::has_nul(base.native())) {
            return fail(ErrorKind::Config, "chroot_base {} must be an absolute path without '..' (or disable chroot)",
                        base.string());
        }
    }
    for (const auto& name : o.env_allowlist) {
        if (!detail::is_env_name(name)) {
            return fail(ErrorKind::Config, "env_allowlist entry '{}' must be a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        name);
        }
    }
    return {};
}

/// SecurityOptionsBuilder: a preset, then adjustments.
///   auto s = SecurityOptionsBuilder::standard().max_open_files(256).max_processes(64).build();
class SecurityOptionsBuilder {
public:
    SecurityOptionsBuilder() = default;
    explicit SecurityOptionsBuilder(SecurityOptions base) : options_(std::move(base)) {}

    [[nodiscard]] static SecurityOptionsBuilder development() {
        return SecurityOptionsBuilder(SecurityOptions::development());
    }
    [[nodiscard]] static SecurityOptionsBuilder standard() {
        return SecurityOptionsBuilder(SecurityOptions::standard());
    }
    [[nodiscard]] static SecurityOptionsBuilder maximum() { return SecurityOptionsBuilder(SecurityOptions::maximum()); }

    SecurityOptionsBuilder& jailer_enabled(bool v) {
        options_.jailer_enabled = v;
        return *this;
    }
    SecurityOptionsBuilder& seccomp_enabled(bool v) {
        options_.seccomp_enabled = v;
        return *this;
    }
    SecurityOptionsBuilder& new_pid_ns(bool v) {
        options_.new_pid_ns = v;
        return *this;
    }
    SecurityOptionsBuilder& new_net_ns(bool v) {
        options_.new_net_ns = v;
        return *this;
    }
    SecurityOptionsBuilder& close_fds(bool v) {
        options_.close_fds = v;
        return *this;
    }
    SecurityOptionsBuilder& sanitize_env(bool v) {
        options_.sanitize_env = v;
        return *this;
    }
    SecurityOptionsBuilder& env_allowlist(std::vector<std::string> names) {
        options_.env_allowlist = std::move(names);
        return *this;
    }
    SecurityOptionsBuilder& allow_env(std::string name) {
        options_.env_allowlist.push_back(std::move(name));
        return *this;
    }
    SecurityOptionsBuilder& uid(std::uint32_t v) {
        options_.uid = v;
        return *this;
    }
    SecurityOptionsBuilder& gid(std::uint32_t v) {
        options_.gid = v;
        return *this;
    }
    SecurityOptionsBuilder& chroot_enabled(bool v) {
        options_.chroot_enabled = v;
        return *this;
    }
    SecurityOptionsBuilder& chroot_base(std::filesystem::path p) {
        options_.chroot_base = std::move(p);
        return *this;
    }
    SecurityOptionsBuilder& network_enabled(bool v) {
        options_.network_enabled = v;
        return *this;
    }
    SecurityOptionsBuilder& resource_limits(ResourceLimits limits) {
        options_.resource_limits = limits;
        return *this;
    }
    SecurityOptionsBuilder& max_open_files(std::uint64_t n) {
        options_.resource_limits.max_open_files = n;
        return *this;
    }
    SecurityOptionsBuilder& max_file_size(Bytes size) {
        options_.resource_limits.max_file_size = size.count();
        return *this;
    }
    SecurityOptionsBuilder& max_processes(std::uint64_t n) {
        options_.resource_limits.max_processes = n;
        return *this;
    }
    SecurityOptionsBuilder& max_memory(Bytes size) {
        options_.resource_limits.max_memory = size.count();
        return *this;
    }
    SecurityOptionsBuilder& max_cpu_time(std::uint64_t seconds) {
        options_.resource_limits.max_cpu_time = seconds;
        return *this;
    }

    /// The options, checked by validate(SecurityOptions) above.
    [[nodiscard]] BoxliteResult<SecurityOptions> build() const {
        if (auto ok = validate(options_); !ok) return fail(ok.error());
        return options_;
    }

private:
    SecurityOptions options_ = SecurityOptions::standard();
};

/// The preset a SecurityOptions equals, or "custom".
[[nodiscard]] inline std::string_view preset_name(const SecurityOptions& o) {
    if (o == SecurityOptions::development()) return "development";
    if (o == SecurityOptions::standard()) return "standard";
    if (o == SecurityOptions::maximum()) return "maximum";
    return "custom";
}

}  // namespace boxlite

/// "standard (jailer on, seccomp on)" or "custom (jailer off, seccomp on)".
template <>
struct fmt::formatter<boxlite::SecurityOptions> : fmt::formatter<std::string_view> {
    auto format(const boxlite::SecurityOptions& o, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("{} (jailer {}, seccomp {})",
                                                                    boxlite::preset_name(o),
                                                                    o.jailer_enabled ? "on" : "off",
                                                                    o.seccomp_enabled ? "on" : "off"),
                                                        ctx);
    }
};
