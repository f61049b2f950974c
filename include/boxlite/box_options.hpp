// BoxOptions: everything a caller can say about a box at create time. Immutable once the
// box exists (it is persisted as part of BoxConfig). Defaults and ranges follow the reference;
// `validate_box_options` checks them all before anything is written.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/network_spec.hpp>
#include <boxlite/port_spec.hpp>
#include <boxlite/resource_limits.hpp>
#include <boxlite/rootfs_spec.hpp>
#include <boxlite/secret.hpp>
#include <boxlite/security_options.hpp>
#include <boxlite/volume_spec.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite {

struct BoxOptions {
    static constexpr std::uint32_t kDefaultCpus = 1;
    static constexpr std::uint32_t kDefaultMemoryMib = 512;
    static constexpr std::uint32_t kMinMemoryMib = 128;
    static constexpr std::uint32_t kMaxMemoryMib = 65536;
    static constexpr std::uint32_t kMinDiskSizeGb = 1;
    static constexpr std::uint32_t kMaxDiskSizeGb = 1024;

    std::uint32_t cpus = kDefaultCpus;                     ///< 1 .. host CPUs
    std::uint32_t memory_mib = kDefaultMemoryMib;          ///< 128 .. 65536
    std::optional<std::uint32_t> disk_size_gb;             ///< 1 .. 1024; nullopt = image size
    std::optional<std::string> working_dir;                ///< absolute; overrides the image's WorkingDir
    std::vector<std::pair<std::string, std::string>> env;  ///< added to / overriding the image's Env
    RootfsSpec rootfs;
    std::vector<VolumeSpec> volumes;
    NetworkSpec network;
    std::vector<PortSpec> ports;
    bool auto_remove = true;  ///< remove the box when it stops
    bool detach = false;      ///< false: the box dies with the process that created it
    SecurityOptions security = SecurityOptions::standard();
    ResourceLimits resource_limits;
    std::map<std::string, std::string> labels;
    std::vector<Secret> secrets;
    std::optional<std::vector<std::string>> entrypoint;  ///< overrides the image's Entrypoint
    std::optional<std::vector<std::string>> cmd;         ///< overrides the image's Cmd
    std::optional<std::string> user;                     ///< "uid[:gid]" or a name; overrides the image's User

    friend bool operator==(const BoxOptions&, const BoxOptions&) = default;
};

/// The number of CPUs online on this host (at least 1): the upper bound of BoxOptions::cpus.
/// Compiled in the library (lib/core/host.cpp).
[[nodiscard]] std::uint32_t host_cpu_count() noexcept;

/// Checks every option against the reference's ranges before anything is written. The first
/// problem found is returned as a Config error naming the option and what is allowed.
[[nodiscard]] inline BoxliteResult<void> validate_box_options(const BoxOptions& o,
                                                              std::uint32_t host_cpus = host_cpu_count()) {
    if (o.cpus < 1 || o.cpus > host_cpus) {
        return fail(ErrorKind::Config, "CPU count must be between 1 and {}", host_cpus);
    }
    if (o.memory_mib < BoxOptions::kMinMemoryMib || o.memory_mib > BoxOptions::kMaxMemoryMib) {
        return fail(ErrorKind::Config, "memory must be between {} and {} MiB, got {}", BoxOptions::kMinMemoryMib,
                    BoxOptions::kMaxMemoryMib, o.memory_mib);
    }
    if (o.disk_size_gb &&
        (*o.disk_size_gb < BoxOptions::kMinDiskSizeGb || *o.disk_size_gb > BoxOptions::kMaxDiskSizeGb)) {
        return fail(ErrorKind::Config, "disk size must be between {} and {} GB, got {}", BoxOptions::kMinDiskSizeGb,
                    BoxOptions::kMaxDiskSizeGb, *o.disk_size_gb);
    }
    if (o.working_dir && (o.working_dir->empty() || o.working_dir->front() != '/' || detail::has_nul(*o.working_dir))) {
        return fail(ErrorKind::Config, "working_dir '{}' must be an absolute path", *o.working_dir);
    }
    for (const auto& [key, value] : o.env) {
        if (key.empty() || key.find('=') != std::string::npos || detail::has_nul(key) || detail::has_nul(value)) {
            return fail(ErrorKind::Config, "environment variable name '{}' must be non-empty without '=' or NUL", key);
        }
    }
    if (auto ok = validate(o.rootfs); !ok) return ok;
    std::set<std::string> guest_paths;
    for (const auto& volume : o.volumes) {
        if (auto ok = validate(volume); !ok) return ok;
        if (!guest_paths.insert(normalized_guest_path(volume.guest_path)).second) {
            return fail(ErrorKind::Config, "two volumes are mounted at guest path {}; each guest path takes one volume",
                        normalized_guest_path(volume.guest_path));
        }
    }
    if (auto ok = validate(o.network); !ok) return ok;
    std::set<std::pair<std::uint16_t, PortProtocol>> host_ports;
    for (const auto& port : o.ports) {
        if (auto ok = validate(port); !ok) return ok;
        if (port.host_port && *port.host_port != 0 && !host_ports.insert({*port.host_port, port.protocol}).second) {
            return fail(ErrorKind::Config, "host port {}/{} is forwarded twice", *port.host_port,
                        port.protocol == PortProtocol::Tcp ? "tcp" : "udp");
        }
    }
    if (o.auto_remove && o.detach) {
        return fail(ErrorKind::Config,
                    "auto_remove and detach cannot both be true (a detached box needs manual lifecycle control; "
                    "set auto_remove=false)");
    }
    if (auto ok = validate(o.resource_limits); !ok) return ok;
    if (auto ok = validate(o.security); !ok) return ok;
    for (const auto& [key, value] : o.labels) {
        if (key.empty() || detail::has_nul(key) || detail::has_nul(value)) {
            return fail(ErrorKind::Config, "label keys must be non-empty and labels must not contain NUL");
        }
    }
    std::set<std::string> secret_names;
    for (const auto& secret : o.secrets) {
        if (auto ok = validate(secret); !ok) return ok;
        if (!secret_names.insert(secret.name).second) {
            return fail(ErrorKind::Config, "secret '{}' is defined twice", secret.name);
        }
    }
    if (o.entrypoint && (o.entrypoint->empty() || o.entrypoint->front().empty())) {
        return fail(ErrorKind::Config, "entrypoint, when set, must name a program");
    }
    // execve() takes NUL-terminated strings: a NUL would silently cut an argument short.
    auto has_nul_arg = [](const std::optional<std::vector<std::string>>& args) {
        if (!args) return false;
        for (const auto& arg : *args) {
            if (detail::has_nul(arg)) return true;
        }
        return false;
    };
    if (has_nul_arg(o.entrypoint) || has_nul_arg(o.cmd)) {
        return fail(ErrorKind::Config, "entrypoint and cmd arguments must not contain NUL");
    }
    if (o.user && (o.user->empty() || detail::has_nul(*o.user))) {
        return fail(ErrorKind::Config, "user, when set, must be a name or uid[:gid]");
    }
    return {};
}

}  // namespace boxlite

/// One line summary: "image alpine:latest, 1 cpu, 512 MiB, network enabled, auto_remove".
template <>
struct fmt::formatter<boxlite::BoxOptions> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxOptions& o, format_context& ctx) const {
        std::string out = fmt::format("{}, {} cpu, {} MiB", o.rootfs, o.cpus, o.memory_mib);
        if (o.disk_size_gb) out += fmt::format(", {} GB disk", *o.disk_size_gb);
        out += fmt::format(", network {}", o.network);
        for (const auto& v : o.volumes) out += fmt::format(", -v {}", v);
        for (const auto& p : o.ports) out += fmt::format(", -p {}", p);
        if (o.auto_remove) out += ", auto_remove";
        if (o.detach) out += ", detach";
        return fmt::formatter<std::string_view>::format(out, ctx);
    }
};
