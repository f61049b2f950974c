#include "c_api/options_json.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::capi {
namespace {

using nlohmann::json;

// BOXLITE_TRY_VOID with its own variable name: its argument holds lambdas that use
// BOXLITE_TRY_VOID themselves, which would shadow it.
#define CHECK(expr)                                                                 \
    do {                                                                            \
        if (auto check_result = (expr); !check_result) {                            \
            return ::tl::unexpected<BoxliteError>(std::move(check_result).error()); \
        }                                                                           \
    } while (false)

/// "integer", "string", ... for "must be X, got Y" messages.
std::string type_name(const json& j) {
    if (j.is_number_float()) return "a fractional number";
    if (j.is_number()) return "an integer";
    if (j.is_string()) return "a string";
    if (j.is_boolean()) return "a boolean";
    if (j.is_null()) return "null";
    if (j.is_array()) return "an array";
    return "an object";
}

std::string join(std::initializer_list<const char*> names) {
    std::string out;
    for (const char* name : names) {
        if (!out.empty()) out += ", ";
        out += name;
    }
    return out;
}

/// Reads one JSON value at a dotted path; every failure names the path.
class Field {
public:
    Field(const json& value, std::string path) : value_(value), path_(std::move(path)) {}

    [[nodiscard]] const json& value() const { return value_; }
    [[nodiscard]] const std::string& path() const { return path_; }
    [[nodiscard]] bool is_null() const { return value_.is_null(); }

    [[nodiscard]] Field at(const char* key) const { return Field(value_.at(key), path_ + "." + key); }
    [[nodiscard]] Field index(std::size_t i) const {
        return Field(value_.at(i), path_ + "[" + std::to_string(i) + "]");
    }

    [[nodiscard]] tl::unexpected<BoxliteError> type_error(const char* expected) const {
        return fail(ErrorKind::Config, "box options key '{}' must be {}, got {}", path_, expected, type_name(value_));
    }

    /// An object whose keys are all in `allowed`.
    [[nodiscard]] BoxliteResult<void> object(std::initializer_list<const char*> allowed) const {
        if (!value_.is_object()) return type_error("an object");
        for (const auto& [key, unused] : value_.items()) {
            bool known = false;
            for (const char* name : allowed) known = known || key == name;
            if (known) continue;
            if (key == "readonly") {
                return fail(ErrorKind::Config, "unknown box options key '{}.readonly' (the key is read_only)", path_);
            }
            return fail(ErrorKind::Config, "unknown box options key '{}.{}' (allowed: {})", path_, key, join(allowed));
        }
        return {};
    }

    [[nodiscard]] BoxliteResult<std::uint64_t> integer(std::uint64_t min, std::uint64_t max) const {
        if (!value_.is_number_integer()) return type_error("an integer");
        if (value_.is_number_unsigned()) {
            const auto v = value_.get<std::uint64_t>();
            if (v < min || v > max) return range_error(std::to_string(v), min, max);
            return v;
        }
        const auto v = value_.get<std::int64_t>();
        if (v < 0 || static_cast<std::uint64_t>(v) < min || static_cast<std::uint64_t>(v) > max) {
            return range_error(std::to_string(v), min, max);
        }
        return static_cast<std::uint64_t>(v);
    }

    [[nodiscard]] BoxliteResult<std::string> string() const {
        if (!value_.is_string()) return type_error("a string");
        return value_.get<std::string>();
    }

    [[nodiscard]] BoxliteResult<bool> boolean() const {
        if (!value_.is_boolean()) return type_error("a boolean (true or false)");
        return value_.get<bool>();
    }

    [[nodiscard]] BoxliteResult<std::vector<std::string>> strings() const {
        if (!value_.is_array()) return type_error("an array of strings");
        std::vector<std::string> out;
        for (std::size_t i = 0; i < value_.size(); ++i) {
            BOXLITE_TRY(auto s, index(i).string());
            out.push_back(std::move(s));
        }
        return out;
    }

private:
    [[nodiscard]] tl::unexpected<BoxliteError> range_error(const std::string& got, std::uint64_t min,
                                                           std::uint64_t max) const {
        return fail(ErrorKind::Config, "box options key '{}' is {}, out of range (allowed: {} to {})", path_, got, min,
                    max);
    }

    const json& value_;
    std::string path_;
};

/// Calls `read` with the key's Field when `key` is present (and, unless `null_ok` is false, not
/// null: null means "the default", as serde's Option).
template <class Read>
BoxliteResult<void> with_key(const Field& parent, const char* key, Read&& read, bool null_ok = true) {
    const auto it = parent.value().find(key);
    if (it == parent.value().end()) return {};
    Field field = parent.at(key);
    if (field.is_null()) {
        if (null_ok) return {};
        return field.type_error("a value (not null)");
    }
    return read(field);
}

template <class T>
BoxliteResult<T> narrow(BoxliteResult<std::uint64_t> value) {
    if (!value) return fail(value.error());
    return static_cast<T>(*value);
}

constexpr std::uint64_t kU16 = std::numeric_limits<std::uint16_t>::max();
constexpr std::uint64_t kU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kU64 = std::numeric_limits<std::uint64_t>::max();

BoxliteResult<RootfsSpec> read_rootfs(const Field& f) {
    BOXLITE_TRY_VOID(f.object({"Image", "RootfsPath"}));
    if (f.value().size() != 1) {
        return fail(ErrorKind::Config,
                    "box options key '{}' must hold exactly one of Image or RootfsPath, e.g. {{\"Image\": "
                    "\"alpine:latest\"}}",
                    f.path());
    }
    if (f.value().contains("Image")) {
        BOXLITE_TRY(auto reference, f.at("Image").string());
        return RootfsSpec::image(std::move(reference));
    }
    BOXLITE_TRY(auto path, f.at("RootfsPath").string());
    return RootfsSpec::path(std::move(path));
}

BoxliteResult<std::vector<std::pair<std::string, std::string>>> read_env(const Field& f) {
    if (!f.value().is_array()) return f.type_error("an array of [\"KEY\", \"value\"] pairs");
    std::vector<std::pair<std::string, std::string>> env;
    for (std::size_t i = 0; i < f.value().size(); ++i) {
        Field pair = f.index(i);
        if (!pair.value().is_array() || pair.value().size() != 2) return pair.type_error("a [\"KEY\", \"value\"] pair");
        BOXLITE_TRY(auto key, pair.index(0).string());
        BOXLITE_TRY(auto value, pair.index(1).string());
        env.emplace_back(std::move(key), std::move(value));
    }
    return env;
}

BoxliteResult<std::vector<VolumeSpec>> read_volumes(const Field& f) {
    if (!f.value().is_array()) return f.type_error("an array of volume objects");
    std::vector<VolumeSpec> volumes;
    for (std::size_t i = 0; i < f.value().size(); ++i) {
        Field v = f.index(i);
        BOXLITE_TRY_VOID(v.object({"host_path", "guest_path", "read_only"}));
        VolumeSpec spec;
        for (const char* required : {"host_path", "guest_path"}) {
            if (!v.value().contains(required)) {
                return fail(ErrorKind::Config, "box options key '{}.{}' is required", v.path(), required);
            }
        }
        BOXLITE_TRY(spec.host_path, v.at("host_path").string());
        BOXLITE_TRY(spec.guest_path, v.at("guest_path").string());
        CHECK(with_key(v, "read_only", [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(spec.read_only, x.boolean());
            return {};
        }));
        volumes.push_back(std::move(spec));
    }
    return volumes;
}

BoxliteResult<NetworkSpec> read_network(const Field& f) {
    BOXLITE_TRY_VOID(f.object({"mode", "allow_net"}));
    if (!f.value().contains("mode")) {
        return fail(ErrorKind::Config, "box options key '{}.mode' is required (\"enabled\" or \"disabled\")", f.path());
    }
    NetworkSpec spec;
    BOXLITE_TRY(auto mode, f.at("mode").string());
    if (mode == "enabled") spec.mode = NetworkMode::Enabled;
    else if (mode == "disabled") spec.mode = NetworkMode::Disabled;
    else {
        return fail(ErrorKind::Config, "box options key '{}.mode' is '{}' (allowed: enabled, disabled)", f.path(),
                    mode);
    }
    CHECK(with_key(f, "allow_net", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(spec.allow_net, x.strings());
        for (std::size_t i = 0; i < spec.allow_net.size(); ++i) {
            if (auto ok = validate_allow_net_pattern(spec.allow_net[i]); !ok) {
                return fail(ErrorKind::Config, "box options key '{}[{}]': {}", x.path(), i, ok.error().message());
            }
        }
        if (spec.mode == NetworkMode::Disabled && !spec.allow_net.empty()) {
            return fail(ErrorKind::Config,
                        "box options key '{}' is set but '{}.mode' is disabled (enable the network or drop allow_net)",
                        x.path(), f.path());
        }
        return {};
    }));
    return spec;
}

BoxliteResult<std::vector<PortSpec>> read_ports(const Field& f) {
    if (!f.value().is_array()) return f.type_error("an array of port objects");
    std::vector<PortSpec> ports;
    for (std::size_t i = 0; i < f.value().size(); ++i) {
        Field p = f.index(i);
        BOXLITE_TRY_VOID(p.object({"host_port", "guest_port", "protocol", "host_ip"}));
        if (!p.value().contains("guest_port")) {
            return fail(ErrorKind::Config, "box options key '{}.guest_port' is required", p.path());
        }
        PortSpec spec;
        BOXLITE_TRY(spec.guest_port, narrow<std::uint16_t>(p.at("guest_port").integer(1, kU16)));
        CHECK(with_key(p, "host_port", [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(spec.host_port, narrow<std::uint16_t>(x.integer(0, kU16)));
            return {};
        }));
        CHECK(with_key(p, "protocol", [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(auto protocol, x.string());
            if (protocol == "tcp" || protocol == "Tcp") spec.protocol = PortProtocol::Tcp;
            else if (protocol == "udp" || protocol == "Udp") spec.protocol = PortProtocol::Udp;
            else {
                return fail(ErrorKind::Config, "box options key '{}' is '{}' (allowed: tcp, udp, Tcp, Udp)", x.path(),
                            protocol);
            }
            return {};
        }));
        CHECK(with_key(p, "host_ip", [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(spec.host_ip, x.string());
            if (!detail::is_ip(spec.host_ip)) {
                return fail(ErrorKind::Config, "box options key '{}' is '{}' (allowed: an IPv4 or IPv6 address)",
                            x.path(), spec.host_ip);
            }
            return {};
        }));
        ports.push_back(std::move(spec));
    }
    return ports;
}

BoxliteResult<void> read_limits(const Field& f, ResourceLimits& limits) {
    BOXLITE_TRY_VOID(f.object({"max_open_files", "max_file_size", "max_processes", "max_memory", "max_cpu_time"}));
    const std::pair<const char*, std::optional<std::uint64_t>*> fields[] = {
        {"max_open_files", &limits.max_open_files}, {"max_file_size", &limits.max_file_size},
        {"max_processes", &limits.max_processes},   {"max_memory", &limits.max_memory},
        {"max_cpu_time", &limits.max_cpu_time},
    };
    for (const auto& [key, target] : fields) {
        CHECK(with_key(f, key, [&, target = target](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(*target, x.integer(1, kU64));
            return {};
        }));
    }
    return {};
}

BoxliteResult<void> read_security(const Field& f, SecurityOptions& s) {
    BOXLITE_TRY_VOID(f.object({"jailer_enabled", "seccomp_enabled", "uid", "gid", "new_pid_ns", "new_net_ns",
                               "chroot_base", "chroot_enabled", "close_fds", "sanitize_env", "env_allowlist",
                               "resource_limits", "sandbox_profile", "network_enabled"}));
    const std::pair<const char*, bool*> flags[] = {
        {"jailer_enabled", &s.jailer_enabled}, {"seccomp_enabled", &s.seccomp_enabled}, {"new_pid_ns", &s.new_pid_ns},
        {"new_net_ns", &s.new_net_ns},         {"chroot_enabled", &s.chroot_enabled},   {"close_fds", &s.close_fds},
        {"sanitize_env", &s.sanitize_env},     {"network_enabled", &s.network_enabled},
    };
    for (const auto& [key, target] : flags) {
        CHECK(with_key(
            f, key,
            [&, target = target](const Field& x) -> BoxliteResult<void> {
                BOXLITE_TRY(*target, x.boolean());
                return {};
            },
            false));
    }
    CHECK(with_key(f, "uid", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(s.uid, narrow<std::uint32_t>(x.integer(0, kU32)));
        return {};
    }));
    CHECK(with_key(f, "gid", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(s.gid, narrow<std::uint32_t>(x.integer(0, kU32)));
        return {};
    }));
    CHECK(with_key(f, "chroot_base", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(auto base, x.string());
        s.chroot_base = std::move(base);
        return {};
    }));
    CHECK(with_key(f, "env_allowlist", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(s.env_allowlist, x.strings());
        return {};
    }));
    CHECK(with_key(f, "resource_limits", [&](const Field& x) { return read_limits(x, s.resource_limits); }));
    // A macOS Seatbelt profile: there is no such sandbox on Linux, and ignoring one would give the
    // caller less confinement than asked for.
    CHECK(with_key(f, "sandbox_profile", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY_VOID(x.string());
        return fail(ErrorKind::Unsupported,
                    "box options key '{}' (a macOS sandbox profile) is not supported on Linux; leave it null",
                    x.path());
    }));
    return {};
}

BoxliteResult<void> read_advanced(const Field& f, BoxOptions& o) {
    BOXLITE_TRY_VOID(f.object({"security", "isolate_mounts", "health_check"}));
    CHECK(with_key(f, "security", [&](const Field& x) { return read_security(x, o.security); }));
    CHECK(with_key(f, "isolate_mounts", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(auto isolate, x.boolean());
        // Every engine gives the box its own mount namespace.
        if (!isolate) {
            return fail(ErrorKind::Unsupported,
                        "box options key '{}' is false, but every engine here isolates the box's mounts", x.path());
        }
        return {};
    }));
    CHECK(with_key(f, "health_check", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY_VOID(x.object({"interval", "timeout", "retries", "start_period"}));
        return fail(ErrorKind::Unsupported, "box options key '{}' is not supported yet; leave it null", x.path());
    }));
    return {};
}

BoxliteResult<std::vector<Secret>> read_secrets(const Field& f) {
    if (!f.value().is_array()) return f.type_error("an array of secret objects");
    std::vector<Secret> secrets;
    for (std::size_t i = 0; i < f.value().size(); ++i) {
        Field s = f.index(i);
        BOXLITE_TRY_VOID(s.object({"name", "value", "hosts", "placeholder"}));
        Secret secret;
        for (const char* required : {"name", "value"}) {
            if (!s.value().contains(required)) {
                return fail(ErrorKind::Config, "box options key '{}.{}' is required", s.path(), required);
            }
        }
        BOXLITE_TRY(secret.name, s.at("name").string());
        BOXLITE_TRY(secret.value, s.at("value").string());
        CHECK(with_key(s, "hosts", [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(secret.hosts, x.strings());
            return {};
        }));
        CHECK(with_key(s, "placeholder", [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(secret.placeholder, x.string());
            return {};
        }));
        secrets.push_back(std::move(secret));
    }
    return secrets;
}

BoxliteResult<CreateRequest> parse(std::string_view text) {
    json root;
    try {
        root = json::parse(text);
    } catch (const json::exception& e) {
        return fail(ErrorKind::InvalidArgument, "options_json is not valid JSON: {}", e.what());
    }
    CreateRequest request;
    if (root.is_null()) return request;
    if (root.contains("allow_net")) {
        return fail(ErrorKind::Config,
                    "box options key 'allow_net' belongs inside 'network': {{\"network\": {{\"mode\": \"enabled\", "
                    "\"allow_net\": [...]}}}}");
    }
    if (!root.is_object()) {
        return fail(ErrorKind::Config, "options_json must be a JSON object, got {}", type_name(root));
    }
    // Top-level paths come out as ".cpus"; strip() takes the dot off.
    Field f(root, "");
    for (const auto& [key, unused] : root.items()) {
        static constexpr std::initializer_list<const char*> kKeys = {
            "name",  "rootfs",      "cpus",   "memory_mib", "disk_size_gb", "working_dir", "env",  "volumes", "network",
            "ports", "auto_remove", "detach", "advanced",   "entrypoint",   "cmd",         "user", "secrets"};
        bool known = false;
        for (const char* name : kKeys) known = known || key == name;
        if (!known) return fail(ErrorKind::Config, "unknown box options key '{}' (allowed: {})", key, join(kKeys));
    }
    auto& o = request.options;
    auto strip = [&](BoxliteResult<void> r) -> BoxliteResult<void> {
        if (r) return r;
        // "box options key '.cpus'" -> "box options key 'cpus'"
        std::string message = r.error().message();
        for (std::string::size_type at; (at = message.find("'.")) != std::string::npos;) message.erase(at + 1, 1);
        return fail(BoxliteError(r.error().kind(), std::move(message)));
    };
    CHECK(strip(with_key(f, "name", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(request.name, x.string());
        return {};
    })));
    CHECK(strip(with_key(f, "rootfs", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.rootfs, read_rootfs(x));
        return {};
    })));
    CHECK(strip(with_key(f, "cpus", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.cpus, narrow<std::uint32_t>(x.integer(1, 255)));
        return {};
    })));
    CHECK(strip(with_key(f, "memory_mib", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.memory_mib,
                    narrow<std::uint32_t>(x.integer(BoxOptions::kMinMemoryMib, BoxOptions::kMaxMemoryMib)));
        return {};
    })));
    CHECK(strip(with_key(f, "disk_size_gb", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.disk_size_gb,
                    narrow<std::uint32_t>(x.integer(BoxOptions::kMinDiskSizeGb, BoxOptions::kMaxDiskSizeGb)));
        return {};
    })));
    CHECK(strip(with_key(f, "working_dir", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.working_dir, x.string());
        return {};
    })));
    CHECK(strip(with_key(f, "env", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.env, read_env(x));
        return {};
    })));
    CHECK(strip(with_key(f, "volumes", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.volumes, read_volumes(x));
        return {};
    })));
    CHECK(strip(with_key(f, "network", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.network, read_network(x));
        return {};
    })));
    CHECK(strip(with_key(f, "ports", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.ports, read_ports(x));
        return {};
    })));
    CHECK(strip(with_key(
        f, "auto_remove",
        [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(o.auto_remove, x.boolean());
            return {};
        },
        false)));
    CHECK(strip(with_key(
        f, "detach",
        [&](const Field& x) -> BoxliteResult<void> {
            BOXLITE_TRY(o.detach, x.boolean());
            return {};
        },
        false)));
    CHECK(strip(with_key(f, "advanced", [&](const Field& x) { return read_advanced(x, o); })));
    CHECK(strip(with_key(f, "entrypoint", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.entrypoint, x.strings());
        return {};
    })));
    CHECK(strip(with_key(f, "cmd", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.cmd, x.strings());
        return {};
    })));
    CHECK(strip(with_key(f, "user", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.user, x.string());
        return {};
    })));
    CHECK(strip(with_key(f, "secrets", [&](const Field& x) -> BoxliteResult<void> {
        BOXLITE_TRY(o.secrets, read_secrets(x));
        return {};
    })));
    return request;
}

}  // namespace

BoxliteResult<CreateRequest> parse_create_options(std::string_view json_text) noexcept {
    try {
        return parse(json_text);
    } catch (const std::bad_alloc&) {
        return fail(ErrorKind::Internal, "out of memory parsing box options");
    } catch (const std::exception& e) {
        return fail(ErrorKind::Internal, "parsing box options: {}", e.what());
    }
}

}  // namespace boxlite::capi
