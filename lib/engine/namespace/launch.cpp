#include "engine/namespace/launch.hpp"

#include <boxlite/box_config.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <optional>

namespace boxlite::engine::ns {

std::vector<std::string> shim_arguments(const NamespaceEngineOptions& engine, const EngineLaunch& launch,
                                        const std::string& socket) {
    const auto& config = *launch.config;
    const auto& options = config.options;
    std::vector<std::string> args = {"namespace",
                                     "--box-id",
                                     config.id.str(),
                                     "--hostname",
                                     config.id.short_id(),
                                     "--box-dir",
                                     launch.box_dir.string(),
                                     "--rootfs",
                                     launch.rootfs.string(),
                                     "--agent",
                                     engine.agent.string(),
                                     "--socket",
                                     socket};
    const auto& limits = options.resource_limits;
    const auto& security_limits = options.security.resource_limits;
    auto pick = [](const std::optional<std::uint64_t>& a, const std::optional<std::uint64_t>& b) { return a ? a : b; };
    const std::uint64_t memory = limits.max_memory.value_or(static_cast<std::uint64_t>(options.memory_mib) << 20);
    args.insert(args.end(), {"--memory", std::to_string(memory), "--cpus", std::to_string(options.cpus)});
    args.insert(args.end(), {"--pids", std::to_string(effective_max_processes(limits, security_limits))});
    if (auto v = pick(limits.max_open_files, security_limits.max_open_files))
        args.insert(args.end(), {"--nofile", std::to_string(*v)});
    if (auto v = pick(limits.max_file_size, security_limits.max_file_size))
        args.insert(args.end(), {"--fsize", std::to_string(*v)});
    if (auto v = pick(limits.max_cpu_time, security_limits.max_cpu_time))
        args.insert(args.end(), {"--cpu-time", std::to_string(*v)});
    args.insert(args.end(), {"--log-max-bytes", std::to_string(launch.log_max_bytes.value_or(engine.log_max_bytes))});
    if (options.disk_size_gb)
        args.insert(args.end(), {"--disk-bytes", std::to_string(std::uint64_t{*options.disk_size_gb} << 30)});
    const bool network = options.network.mode == NetworkMode::Enabled;
    args.insert(args.end(), {"--network", network ? "on" : "off"});
    if (network) {
        for (const auto& pattern : options.network.allow_net) args.insert(args.end(), {"--allow-net", pattern});
        if (const char* passt = std::getenv("BOXLITE_PASST"); passt != nullptr && *passt != '\0')
            args.insert(args.end(), {"--passt", passt});
        // Where passt sends the box's DNS (default: the host's resolv.conf); tests point it at
        // their own server.
        if (const char* dns = std::getenv("BOXLITE_NET_DNS"); dns != nullptr && *dns != '\0')
            args.insert(args.end(), {"--dns", dns});
    }
    for (const auto& [key, value] : launch.env) args.insert(args.end(), {"--env", key + "=" + value});
    if (!launch.working_dir.empty()) args.insert(args.end(), {"--workdir", launch.working_dir});
    if (!launch.user.empty()) args.insert(args.end(), {"--user", launch.user});
    // Three flags per volume, as paths may hold ':'. Shallower guest paths first, so that a volume
    // inside another one (/data and /data/in) is mounted on top of it, not hidden under it.
    std::vector<std::size_t> order(options.volumes.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    auto depth = [&](std::size_t i) {
        const auto path = normalized_guest_path(options.volumes[i].guest_path);
        return std::count(path.begin(), path.end(), '/');
    };
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return depth(a) < depth(b); });
    for (const auto i : order) {
        const auto& v = options.volumes[i];
        const auto host = v.anonymous() ? anonymous_volume_path(launch.box_dir, i).string() : v.host_path;
        args.insert(args.end(), {"--volume", host, "--volume-target", normalized_guest_path(v.guest_path),
                                 "--volume-mode", v.read_only ? "ro" : "rw"});
    }
    // An auto-remove box's upper layer is thrown away when it stops: no sync of the host's
    // filesystem for it when its overlay goes (see --upper in lib/shim/shim.hpp).
    if (options.auto_remove) args.insert(args.end(), {"--upper", "volatile"});
    args.insert(args.end(), {"--capabilities", options.security.jailer_enabled ? "box" : "all", "--seccomp",
                             options.security.seccomp_enabled ? "on" : "off"});
    return args;
}

}  // namespace boxlite::engine::ns
