// JSON forms of BoxLite's records (nlohmann::json): BoxConfig, BoxState, BoxOptions and every
// type inside them. Used by SqliteStorage (database rows and the boxes/<id>/config.json mirror),
// the CLI's `inspect` and the REST server.
//
// Reading is tolerant of missing keys (they take the type's default), so records written by an
// older version still load; unknown keys are ignored. Wrong types throw nlohmann::json
// exceptions inside the to_json/from_json functions; the `parse_*` helpers at the bottom catch
// them and return MetadataError, so nothing throws across the public API.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/box_id.hpp>
#include <boxlite/box_options.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/box_status.hpp>
#include <boxlite/container_id.hpp>
#include <boxlite/detail/time.hpp>
#include <boxlite/engine_handle.hpp>
#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace nlohmann {

template <>
struct adl_serializer<boxlite::BoxID> {
    static boxlite::BoxID from_json(const json& j) {
        auto id = boxlite::BoxID::parse(j.get<std::string>());
        if (!id) throw std::invalid_argument(id.error().to_string());
        return *id;
    }
    static void to_json(json& j, const boxlite::BoxID& id) { j = id.str(); }
};

/// 64 hex digits; anything else in a stored record is MetadataError, not a container id.
template <>
struct adl_serializer<boxlite::ContainerID> {
    static boxlite::ContainerID from_json(const json& j) {
        auto id = boxlite::ContainerID::parse(j.get<std::string>());
        if (!id) throw std::invalid_argument(id.error().to_string());
        return *id;
    }
    static void to_json(json& j, const boxlite::ContainerID& id) { j = id.str(); }
};

template <class T>
struct adl_serializer<std::optional<T>> {
    static void to_json(json& j, const std::optional<T>& value) {
        if (value) j = *value;
        else j = nullptr;
    }
    static void from_json(const json& j, std::optional<T>& value) {
        if (j.is_null()) value.reset();
        else value = j.get<T>();
    }
};

}  // namespace nlohmann

namespace boxlite {

namespace detail {

template <class T>
void read_field(const nlohmann::json& j, const char* key, T& out) {
    if (auto it = j.find(key); it != j.end()) it->get_to(out);
}

inline nlohmann::json time_to_json(std::chrono::system_clock::time_point tp) { return format_rfc3339(tp); }

inline std::chrono::system_clock::time_point time_from_json(const nlohmann::json& j) {
    auto tp = parse_rfc3339(j.get<std::string>());
    if (!tp) throw std::invalid_argument(tp.error().to_string());
    return *tp;
}

inline void read_time(const nlohmann::json& j, const char* key, std::chrono::system_clock::time_point& out) {
    if (auto it = j.find(key); it != j.end()) out = time_from_json(*it);
}

inline void read_time(const nlohmann::json& j, const char* key,
                      std::optional<std::chrono::system_clock::time_point>& out) {
    if (auto it = j.find(key); it != j.end() && !it->is_null()) out = time_from_json(*it);
    else out.reset();
}

}  // namespace detail

// --- status and handle ------------------------------------------------------------------------

inline void to_json(nlohmann::json& j, BoxStatus s) { j = to_string(s); }
inline void from_json(const nlohmann::json& j, BoxStatus& s) {
    const auto text = j.get<std::string>();
    auto parsed = parse_box_status(text);
    if (!parsed) throw std::invalid_argument("unknown box status '" + text + "'");
    s = *parsed;
}

// Defined with the options below; the handle's published ports use them.
inline void to_json(nlohmann::json& j, const PortSpec& p);
inline void from_json(const nlohmann::json& j, PortSpec& p);

inline void to_json(nlohmann::json& j, const EngineHandle& h) {
    j = {{"pid", h.pid}, {"pid_start_time", h.pid_start_time}, {"endpoint", h.endpoint}};
    if (!h.ports.empty()) j["ports"] = h.ports;
}
inline void from_json(const nlohmann::json& j, EngineHandle& h) {
    detail::read_field(j, "pid", h.pid);
    detail::read_field(j, "pid_start_time", h.pid_start_time);
    detail::read_field(j, "endpoint", h.endpoint);
    detail::read_field(j, "ports", h.ports);
}

namespace detail {
/// Each stage with its JSON key.
template <class F>
void for_each_stage(BoxStageTimings& t, F&& f) {
    f("total_create_ms", t.total_create_ms);
    f("guest_boot_ms", t.guest_boot_ms);
    f("filesystem_setup_ms", t.filesystem_setup_ms);
    f("image_prepare_ms", t.image_prepare_ms);
    f("guest_rootfs_ms", t.guest_rootfs_ms);
    f("box_config_ms", t.box_config_ms);
    f("box_spawn_ms", t.box_spawn_ms);
    f("container_init_ms", t.container_init_ms);
    f("guest_assets_ms", t.guest_assets_ms);
    f("box_disk_ms", t.box_disk_ms);
}
}  // namespace detail

/// Stage name → milliseconds, the unmeasured ones left out: {"image_prepare_ms": 840, …}.
inline void to_json(nlohmann::json& j, const BoxStageTimings& t) {
    j = nlohmann::json::object();
    auto copy = t;
    detail::for_each_stage(copy, [&](const char* key, const std::optional<std::uint64_t>& ms) {
        if (ms) j[key] = *ms;
    });
}
inline void from_json(const nlohmann::json& j, BoxStageTimings& t) {
    detail::for_each_stage(t, [&](const char* key, std::optional<std::uint64_t>& ms) {
        if (auto it = j.find(key); it != j.end() && !it->is_null()) ms = it->get<std::uint64_t>();
        else ms.reset();
    });
}

inline void to_json(nlohmann::json& j, const BoxState& s) {
    j = {{"status", s.status},
         {"handle", s.handle},
         {"container_id", s.container_id},
         {"last_updated", detail::time_to_json(s.last_updated)},
         {"started_at", s.started_at ? detail::time_to_json(*s.started_at) : nlohmann::json(nullptr)},
         {"stages", s.stages}};
}
inline void from_json(const nlohmann::json& j, BoxState& s) {
    detail::read_field(j, "status", s.status);
    detail::read_field(j, "handle", s.handle);
    detail::read_field(j, "container_id", s.container_id);
    detail::read_time(j, "last_updated", s.last_updated);
    detail::read_time(j, "started_at", s.started_at);
    detail::read_field(j, "stages", s.stages);
}

// --- options ----------------------------------------------------------------------------------

/// {"image": "alpine:latest"} or {"path": "/srv/rootfs"}.
inline void to_json(nlohmann::json& j, const RootfsSpec& r) {
    if (const auto* image = r.as_image()) j = {{"image", image->reference}};
    else if (const auto* dir = r.as_path()) j = {{"path", dir->path.string()}};
}
inline void from_json(const nlohmann::json& j, RootfsSpec& r) {
    if (auto it = j.find("image"); it != j.end()) r = RootfsSpec::image(it->get<std::string>());
    else if (auto p = j.find("path"); p != j.end()) r = RootfsSpec::path(p->get<std::string>());
    else throw std::invalid_argument("rootfs needs an \"image\" or a \"path\" key");
}

inline void to_json(nlohmann::json& j, const VolumeSpec& v) {
    j = {{"host_path", v.host_path}, {"guest_path", v.guest_path}, {"read_only", v.read_only}};
}
inline void from_json(const nlohmann::json& j, VolumeSpec& v) {
    detail::read_field(j, "host_path", v.host_path);
    detail::read_field(j, "guest_path", v.guest_path);
    detail::read_field(j, "read_only", v.read_only);
}

inline void to_json(nlohmann::json& j, NetworkMode m) { j = to_string(m); }
inline void from_json(const nlohmann::json& j, NetworkMode& m) {
    const auto text = j.get<std::string>();
    if (text == "enabled") m = NetworkMode::Enabled;
    else if (text == "disabled") m = NetworkMode::Disabled;
    else throw std::invalid_argument("network mode '" + text + "' (allowed: enabled, disabled)");
}

inline void to_json(nlohmann::json& j, const NetworkSpec& n) { j = {{"mode", n.mode}, {"allow_net", n.allow_net}}; }
inline void from_json(const nlohmann::json& j, NetworkSpec& n) {
    detail::read_field(j, "mode", n.mode);
    detail::read_field(j, "allow_net", n.allow_net);
}

inline void to_json(nlohmann::json& j, PortProtocol p) { j = to_string(p); }
inline void from_json(const nlohmann::json& j, PortProtocol& p) {
    const auto text = j.get<std::string>();
    if (text == "tcp") p = PortProtocol::Tcp;
    else if (text == "udp") p = PortProtocol::Udp;
    else throw std::invalid_argument("port protocol '" + text + "' (allowed: tcp, udp)");
}

inline void to_json(nlohmann::json& j, const PortSpec& p) {
    j = {{"host_port", p.host_port}, {"guest_port", p.guest_port}, {"protocol", p.protocol}, {"host_ip", p.host_ip}};
}
inline void from_json(const nlohmann::json& j, PortSpec& p) {
    detail::read_field(j, "host_port", p.host_port);
    detail::read_field(j, "guest_port", p.guest_port);
    detail::read_field(j, "protocol", p.protocol);
    detail::read_field(j, "host_ip", p.host_ip);
}

inline void to_json(nlohmann::json& j, const ResourceLimits& r) {
    j = {{"max_open_files", r.max_open_files},
         {"max_file_size", r.max_file_size},
         {"max_processes", r.max_processes},
         {"max_memory", r.max_memory},
         {"max_cpu_time", r.max_cpu_time}};
}
inline void from_json(const nlohmann::json& j, ResourceLimits& r) {
    detail::read_field(j, "max_open_files", r.max_open_files);
    detail::read_field(j, "max_file_size", r.max_file_size);
    detail::read_field(j, "max_processes", r.max_processes);
    detail::read_field(j, "max_memory", r.max_memory);
    detail::read_field(j, "max_cpu_time", r.max_cpu_time);
}

inline void to_json(nlohmann::json& j, const SecurityOptions& s) {
    j = {{"jailer_enabled", s.jailer_enabled},
         {"seccomp_enabled", s.seccomp_enabled},
         {"new_pid_ns", s.new_pid_ns},
         {"new_net_ns", s.new_net_ns},
         {"close_fds", s.close_fds},
         {"sanitize_env", s.sanitize_env},
         {"env_allowlist", s.env_allowlist},
         {"resource_limits", s.resource_limits},
         {"uid", s.uid},
         {"gid", s.gid},
         {"chroot_enabled", s.chroot_enabled},
         {"chroot_base", s.chroot_base.string()},
         {"network_enabled", s.network_enabled}};
}
inline void from_json(const nlohmann::json& j, SecurityOptions& s) {
    detail::read_field(j, "jailer_enabled", s.jailer_enabled);
    detail::read_field(j, "seccomp_enabled", s.seccomp_enabled);
    detail::read_field(j, "new_pid_ns", s.new_pid_ns);
    detail::read_field(j, "new_net_ns", s.new_net_ns);
    detail::read_field(j, "close_fds", s.close_fds);
    detail::read_field(j, "sanitize_env", s.sanitize_env);
    detail::read_field(j, "env_allowlist", s.env_allowlist);
    detail::read_field(j, "resource_limits", s.resource_limits);
    detail::read_field(j, "uid", s.uid);
    detail::read_field(j, "gid", s.gid);
    detail::read_field(j, "chroot_enabled", s.chroot_enabled);
    if (auto it = j.find("chroot_base"); it != j.end()) s.chroot_base = it->get<std::string>();
    detail::read_field(j, "network_enabled", s.network_enabled);
}

inline void to_json(nlohmann::json& j, const Secret& s) {
    j = {{"name", s.name}, {"value", s.value}, {"hosts", s.hosts}, {"placeholder", s.placeholder}};
}
inline void from_json(const nlohmann::json& j, Secret& s) {
    detail::read_field(j, "name", s.name);
    detail::read_field(j, "value", s.value);
    detail::read_field(j, "hosts", s.hosts);
    detail::read_field(j, "placeholder", s.placeholder);
}

inline void to_json(nlohmann::json& j, const BoxOptions& o) {
    nlohmann::json env = nlohmann::json::array();
    for (const auto& [key, value] : o.env) env.push_back({key, value});
    j = {{"cpus", o.cpus},
         {"memory_mib", o.memory_mib},
         {"disk_size_gb", o.disk_size_gb},
         {"working_dir", o.working_dir},
         {"env", std::move(env)},
         {"rootfs", o.rootfs},
         {"volumes", o.volumes},
         {"network", o.network},
         {"ports", o.ports},
         {"auto_remove", o.auto_remove},
         {"detach", o.detach},
         {"security", o.security},
         {"resource_limits", o.resource_limits},
         {"labels", o.labels},
         {"secrets", o.secrets},
         {"entrypoint", o.entrypoint},
         {"cmd", o.cmd},
         {"user", o.user}};
}
inline void from_json(const nlohmann::json& j, BoxOptions& o) {
    detail::read_field(j, "cpus", o.cpus);
    detail::read_field(j, "memory_mib", o.memory_mib);
    detail::read_field(j, "disk_size_gb", o.disk_size_gb);
    detail::read_field(j, "working_dir", o.working_dir);
    if (auto it = j.find("env"); it != j.end()) {
        o.env.clear();
        // [["KEY", "value"], ...] keeps order and duplicates; {"KEY": "value"} is accepted too.
        if (it->is_object()) {
            for (const auto& [key, value] : it->items()) o.env.emplace_back(key, value.get<std::string>());
        } else {
            for (const auto& pair : *it)
                o.env.emplace_back(pair.at(0).get<std::string>(), pair.at(1).get<std::string>());
        }
    }
    detail::read_field(j, "rootfs", o.rootfs);
    detail::read_field(j, "volumes", o.volumes);
    detail::read_field(j, "network", o.network);
    detail::read_field(j, "ports", o.ports);
    detail::read_field(j, "auto_remove", o.auto_remove);
    detail::read_field(j, "detach", o.detach);
    detail::read_field(j, "security", o.security);
    detail::read_field(j, "resource_limits", o.resource_limits);
    detail::read_field(j, "labels", o.labels);
    detail::read_field(j, "secrets", o.secrets);
    detail::read_field(j, "entrypoint", o.entrypoint);
    detail::read_field(j, "cmd", o.cmd);
    detail::read_field(j, "user", o.user);
}

inline void to_json(nlohmann::json& j, const BoxConfig& c) {
    j = {{"id", c.id},
         {"name", c.name},
         {"options", c.options},
         {"created_at", detail::time_to_json(c.created_at)},
         {"engine", c.engine}};
}
inline void from_json(const nlohmann::json& j, BoxConfig& c) {
    c.id = j.at("id").get<BoxID>();
    detail::read_field(j, "name", c.name);
    detail::read_field(j, "options", c.options);
    detail::read_time(j, "created_at", c.created_at);
    detail::read_field(j, "engine", c.engine);
}

// --- error-returning entry points ------------------------------------------------------------

/// Parses `text` as a T, turning every JSON or value error into MetadataError naming `what`.
template <class T>
[[nodiscard]] BoxliteResult<T> parse_json_as(std::string_view text, std::string_view what) {
    try {
        auto j = nlohmann::json::parse(text);
        return j.get<T>();
    } catch (const std::exception& e) {
        return fail(ErrorKind::MetadataError, "{} is not valid: {}", what, e.what());
    }
}

/// Converts an already-parsed JSON value, with the same error mapping.
template <class T>
[[nodiscard]] BoxliteResult<T> from_json_value(const nlohmann::json& j, std::string_view what) {
    try {
        return j.get<T>();
    } catch (const std::exception& e) {
        return fail(ErrorKind::InvalidArgument, "{} is not valid: {}", what, e.what());
    }
}

template <class T>
[[nodiscard]] std::string to_json_text(const T& value, int indent = -1) {
    return nlohmann::json(value).dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace boxlite
