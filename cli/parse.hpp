// Parsers for the values the `boxlite` command's flags take: `-e KEY[=VAL]`, `-p [HOST:]BOX[/proto]`,
// `-v HOST:BOX[:ro|rw]`, `--memory 512m`, `--disk-size 10g`, `--network`, `--engine`, `cp`'s
// `BOX:PATH` operands.
//
// Every parser is pure (the caller's environment and working directory come in as arguments) so
// the unit tests exercise them without a runtime, and every error is an InvalidArgument naming the
// flag, the value and what is allowed — the CLI turns those into usage errors (exit 2).
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/network_spec.hpp>
#include <boxlite/port_spec.hpp>
#include <boxlite/volume_spec.hpp>

#include <charconv>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace boxlite::cli {

/// Looks up a variable in the caller's environment (std::getenv in the program, a map in tests).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

namespace detail {

inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

/// A whole unsigned decimal number, nothing else (no sign, no spaces, no hex).
inline std::optional<std::uint64_t> parse_unsigned(std::string_view text) noexcept {
    if (text.empty() || text.size() > 20) return std::nullopt;
    std::uint64_t value = 0;
    const auto* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return value;
}

}  // namespace detail

// -------------------------------------------------------------------------------------------
// -e / --env KEY[=VALUE]
// -------------------------------------------------------------------------------------------

/// `KEY=VALUE` sets KEY; a bare `KEY` takes the caller's value of KEY and, as Docker does, is
/// left out when the caller has no such variable (nullopt). Keys must be non-empty and free of
/// '=' and NUL; values may hold anything but NUL (including further '=').
[[nodiscard]] inline BoxliteResult<std::optional<std::pair<std::string, std::string>>> parse_env(
    std::string_view spec, const EnvLookup& lookup) {
    if (spec.find('\0') != std::string_view::npos) {
        return fail(ErrorKind::InvalidArgument, "--env value must not contain a NUL byte");
    }
    const auto eq = spec.find('=');
    const std::string_view key = spec.substr(0, eq);
    if (key.empty()) {
        return fail(ErrorKind::InvalidArgument, "--env '{}': the variable name is empty (expected KEY[=VALUE])", spec);
    }
    if (eq != std::string_view::npos) {
        return std::make_optional(std::make_pair(std::string(key), std::string(spec.substr(eq + 1))));
    }
    auto value = lookup ? lookup(std::string(key)) : std::nullopt;
    if (!value) return std::optional<std::pair<std::string, std::string>>{};
    return std::make_optional(std::make_pair(std::string(key), std::move(*value)));
}

// -------------------------------------------------------------------------------------------
// -p / --publish [IP:][HOST:]BOX[/tcp|udp]
// -------------------------------------------------------------------------------------------

namespace detail {

inline BoxliteResult<std::uint16_t> parse_port_number(std::string_view spec, std::string_view text,
                                                      std::string_view which, bool allow_zero) {
    auto value = parse_unsigned(text);
    const std::uint64_t low = allow_zero ? 0 : 1;
    if (!value || *value < low || *value > 65535) {
        return fail(ErrorKind::InvalidArgument, "--publish '{}': {} port '{}' must be a number in {}..65535", spec,
                    which, text, low);
    }
    return static_cast<std::uint16_t>(*value);
}

}  // namespace detail

/// Forms: `80` (host port assigned), `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`,
/// `[::1]:8080:80`, each optionally followed by `/tcp` or `/udp`.
[[nodiscard]] inline BoxliteResult<PortSpec> parse_port(std::string_view spec) {
    PortSpec port;
    std::string_view rest = spec;
    if (const auto slash = rest.rfind('/'); slash != std::string_view::npos) {
        const auto proto = rest.substr(slash + 1);
        if (detail::iequals(proto, "tcp")) {
            port.protocol = PortProtocol::Tcp;
        } else if (detail::iequals(proto, "udp")) {
            port.protocol = PortProtocol::Udp;
        } else {
            return fail(ErrorKind::InvalidArgument, "--publish '{}': protocol '{}' is not tcp or udp", spec, proto);
        }
        rest = rest.substr(0, slash);
    }
    if (rest.empty()) {
        return fail(ErrorKind::InvalidArgument, "--publish '{}': expected [[IP:]HOST:]BOX[/tcp|udp]", spec);
    }
    // An IPv6 host address is bracketed so its colons do not split the spec.
    if (rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
            return fail(ErrorKind::InvalidArgument,
                        "--publish '{}': a bracketed IPv6 address must be followed by ':HOST:BOX'", spec);
        }
        port.host_ip = std::string(rest.substr(1, close - 1));
        if (port.host_ip.empty()) {
            return fail(ErrorKind::InvalidArgument, "--publish '{}': the IPv6 address is empty", spec);
        }
        rest = rest.substr(close + 2);
        const auto colon = rest.find(':');
        if (colon == std::string_view::npos) {
            return fail(ErrorKind::InvalidArgument, "--publish '{}': expected [IP]:HOST:BOX", spec);
        }
        if (colon > 0) {
            BOXLITE_TRY(auto host, detail::parse_port_number(spec, rest.substr(0, colon), "host", true));
            if (host != 0) port.host_port = host;
        }
        BOXLITE_TRY(port.guest_port, detail::parse_port_number(spec, rest.substr(colon + 1), "box", false));
        return port;
    }
    const auto first = rest.find(':');
    if (first == std::string_view::npos) {
        BOXLITE_TRY(port.guest_port, detail::parse_port_number(spec, rest, "box", false));
        return port;
    }
    const auto second = rest.find(':', first + 1);
    std::string_view host_text;
    std::string_view box_text;
    if (second == std::string_view::npos) {
        host_text = rest.substr(0, first);
        box_text = rest.substr(first + 1);
    } else {
        if (rest.find(':', second + 1) != std::string_view::npos) {
            return fail(ErrorKind::InvalidArgument,
                        "--publish '{}': too many ':' (bracket IPv6 addresses: [::1]:8080:80)", spec);
        }
        const auto ip = rest.substr(0, first);
        if (ip.empty()) {
            return fail(ErrorKind::InvalidArgument, "--publish '{}': the host IP before ':' is empty", spec);
        }
        port.host_ip = std::string(ip);
        host_text = rest.substr(first + 1, second - first - 1);
        box_text = rest.substr(second + 1);
    }
    if (!host_text.empty() || second == std::string_view::npos) {
        BOXLITE_TRY(auto host, detail::parse_port_number(spec, host_text, "host", true));
        if (host != 0) port.host_port = host;
    }
    BOXLITE_TRY(port.guest_port, detail::parse_port_number(spec, box_text, "box", false));
    return port;
}

// -------------------------------------------------------------------------------------------
// -v / --volume HOST:BOX[:ro|rw] or BOX[:ro|rw]
// -------------------------------------------------------------------------------------------

/// `HOST:BOX[:ro|rw]` shares a host path; `BOX[:ro|rw]` (one absolute path) makes an anonymous
/// volume, a folder of the box's own removed with it. The host side must be a path — it starts
/// with `/`, `./`, `../` or `~` (Docker's first-character rule); anything else would be a named
/// volume, which the local runtime has no backend for. Relative paths resolve against `cwd`, `~`
/// against `home`. The result then passes the same checks as the C++ API's (validate(VolumeSpec)):
/// Config errors for a missing host path, a guest path that is relative, holds "..", or lies on
/// /proc, /sys or /dev.
[[nodiscard]] inline BoxliteResult<VolumeSpec> parse_volume(std::string_view spec, const std::filesystem::path& cwd,
                                                            const std::optional<std::string>& home) {
    VolumeSpec volume;
    std::string_view rest = spec;
    // A trailing mode is ro or rw; the box path never contains ':' in this notation.
    if (const auto last = rest.rfind(':'); last != std::string_view::npos) {
        const auto mode = rest.substr(last + 1);
        if (mode == "ro" || mode == "rw") {
            volume.read_only = mode == "ro";
            rest = rest.substr(0, last);
        } else if (rest.find(':') != last) {
            return fail(ErrorKind::InvalidArgument, "--volume '{}': mode '{}' is not ro or rw", spec, mode);
        }
    }
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos) {
        // BOX[:ro|rw]: anonymous.
        if (rest.empty() || rest.front() != '/') {
            return fail(ErrorKind::InvalidArgument,
                        "--volume '{}': expected HOST:BOX[:ro|rw], or an absolute BOX[:ro|rw] for an anonymous volume",
                        spec);
        }
        volume.guest_path = std::string(rest);
        BOXLITE_TRY_VOID(validate(volume).map_error(
            [&](const BoxliteError& e) { return e.with_context(fmt::format("--volume '{}'", spec)); }));
        return volume;
    }
    const std::string_view host_text = rest.substr(0, colon);
    rest = rest.substr(colon + 1);
    if (host_text.empty()) {
        return fail(ErrorKind::InvalidArgument, "--volume '{}': the host path is empty", spec);
    }
    std::filesystem::path host;
    if (host_text.front() == '/') {
        host = std::filesystem::path(host_text);
    } else if (host_text.starts_with("./") || host_text.starts_with("../") || host_text == "." || host_text == "..") {
        host = cwd / std::filesystem::path(host_text);
    } else if (host_text.front() == '~' && (host_text.size() == 1 || host_text[1] == '/')) {
        if (!home) {
            return fail(ErrorKind::InvalidArgument, "--volume '{}': '~' used but HOME is not set", spec);
        }
        host = std::filesystem::path(*home) / std::filesystem::path(host_text.substr(host_text.size() > 1 ? 2 : 1));
    } else {
        return fail(ErrorKind::InvalidArgument,
                    "--volume '{}': '{}' is not a host path and named volumes are not supported; write "
                    "./{} for a directory relative to here",
                    spec, host_text, host_text);
    }
    if (rest.find(':') != std::string_view::npos) {
        return fail(ErrorKind::InvalidArgument, "--volume '{}': expected HOST:BOX[:ro|rw]", spec);
    }
    std::error_code ec;
    auto canonical = std::filesystem::weakly_canonical(host, ec);
    if (ec) canonical = host.lexically_normal();
    volume.host_path = canonical.string();
    volume.guest_path = std::string(rest);
    BOXLITE_TRY_VOID(validate(volume).map_error(
        [&](const BoxliteError& e) { return e.with_context(fmt::format("--volume '{}'", spec)); }));
    return volume;
}

// -------------------------------------------------------------------------------------------
// Sizes: --memory (MiB) and --disk-size (GB)
// -------------------------------------------------------------------------------------------

namespace detail {

/// Splits "512m" into (512, "m"); the unit is lower-cased, a trailing "b"/"ib" dropped.
inline std::optional<std::pair<std::uint64_t, char>> split_size(std::string_view text, char default_unit) {
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    auto number = parse_unsigned(text.substr(0, digits));
    if (!number) return std::nullopt;
    std::string unit;
    for (char c : text.substr(digits)) {
        unit.push_back((c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c);
    }
    if (unit.empty()) return std::make_pair(*number, default_unit);
    if (unit == "b") return std::make_pair(*number, 'b');
    if (unit.size() == 3 && unit.substr(1) == "ib") unit.resize(1);
    if (unit.size() == 2 && unit[1] == 'b') unit.resize(1);
    if (unit.size() != 1) return std::nullopt;
    switch (unit[0]) {
        case 'k':
        case 'm':
        case 'g':
        case 't': return std::make_pair(*number, unit[0]);
        default: return std::nullopt;
    }
}

inline std::optional<std::uint64_t> to_bytes(std::uint64_t number, char unit) {
    int shift = 0;
    switch (unit) {
        case 'b': shift = 0; break;
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        case 't': shift = 40; break;
        default: return std::nullopt;
    }
    if (number > (std::numeric_limits<std::uint64_t>::max() >> shift)) return std::nullopt;
    return number << shift;
}

}  // namespace detail

/// `--memory`: a bare number is MiB (the reference's unit); `k`, `m`, `g`, `t` (with optional
/// `b`/`ib`, any case) are binary units. The result must be a whole number of MiB.
[[nodiscard]] inline BoxliteResult<std::uint32_t> parse_memory_mib(std::string_view text) {
    auto split = detail::split_size(text, 'm');
    auto bytes = split ? detail::to_bytes(split->first, split->second) : std::nullopt;
    if (!bytes) {
        return fail(ErrorKind::InvalidArgument,
                    "--memory '{}': expected a size like 512, 512m, 2g (a bare number is MiB)", text);
    }
    if (*bytes % (1ULL << 20) != 0) {
        return fail(ErrorKind::InvalidArgument, "--memory '{}' is not a whole number of MiB", text);
    }
    const auto mib = *bytes >> 20;
    if (mib > std::numeric_limits<std::uint32_t>::max()) {
        return fail(ErrorKind::InvalidArgument, "--memory '{}' is too large", text);
    }
    return static_cast<std::uint32_t>(mib);
}

/// `--disk-size`: a bare number is GB (GiB, as the reference's disk_size_gb); `m`, `g`, `t`
/// units are accepted when the result is a whole number of GiB.
[[nodiscard]] inline BoxliteResult<std::uint32_t> parse_disk_size_gb(std::string_view text) {
    auto split = detail::split_size(text, 'g');
    auto bytes = split ? detail::to_bytes(split->first, split->second) : std::nullopt;
    if (!bytes) {
        return fail(ErrorKind::InvalidArgument,
                    "--disk-size '{}': expected a size like 10, 10g, 1t (a bare "
                    "number is GB)",
                    text);
    }
    if (*bytes % (1ULL << 30) != 0) {
        return fail(ErrorKind::InvalidArgument, "--disk-size '{}' is not a whole number of GB", text);
    }
    const auto gb = *bytes >> 30;
    if (gb > std::numeric_limits<std::uint32_t>::max()) {
        return fail(ErrorKind::InvalidArgument, "--disk-size '{}' is too large", text);
    }
    return static_cast<std::uint32_t>(gb);
}

/// `--cpus N`: a whole number >= 1 (the runtime checks the host's upper bound).
[[nodiscard]] inline BoxliteResult<std::uint32_t> parse_cpus(std::string_view text) {
    auto value = detail::parse_unsigned(text);
    if (!value || *value == 0 || *value > 255) {
        return fail(ErrorKind::InvalidArgument, "--cpus '{}': expected a whole number of CPUs in 1..255", text);
    }
    return static_cast<std::uint32_t>(*value);
}

// -------------------------------------------------------------------------------------------
// Enumerations
// -------------------------------------------------------------------------------------------

[[nodiscard]] inline BoxliteResult<NetworkMode> parse_network_mode(std::string_view text) {
    if (text == "enabled") return NetworkMode::Enabled;
    if (text == "disabled") return NetworkMode::Disabled;
    return fail(ErrorKind::InvalidArgument, "--network '{}': expected enabled or disabled", text);
}

/// The engines `--engine` / BOXLITE_ENGINE may name.
enum class EngineChoice : std::uint8_t { Auto, Kvm, Qemu, Namespace };

[[nodiscard]] constexpr std::string_view to_string(EngineChoice choice) noexcept {
    switch (choice) {
        case EngineChoice::Auto: return "auto";
        case EngineChoice::Kvm: return "kvm";
        case EngineChoice::Qemu: return "qemu";
        case EngineChoice::Namespace: return "namespace";
    }
    return "auto";
}

[[nodiscard]] inline BoxliteResult<EngineChoice> parse_engine(std::string_view text) {
    for (auto choice : {EngineChoice::Auto, EngineChoice::Kvm, EngineChoice::Qemu, EngineChoice::Namespace}) {
        if (text == to_string(choice)) return choice;
    }
    return fail(ErrorKind::InvalidArgument, "--engine '{}': expected auto, kvm, qemu or namespace", text);
}

// -------------------------------------------------------------------------------------------
// cp operands
// -------------------------------------------------------------------------------------------

/// One side of `boxlite cp`: a host path, or `BOX:PATH` inside a box.
struct CopyOperand {
    std::optional<std::string> box;  ///< set for `BOX:PATH`
    std::string path;

    friend bool operator==(const CopyOperand&, const CopyOperand&) = default;
};

/// Docker's rule: a ':' before any '/' makes `BOX:PATH`; a path starting with '/' or '.' is always
/// a host path (so `./a:b` is a file named "a:b").
[[nodiscard]] inline CopyOperand parse_copy_operand(std::string_view text) {
    if (text.empty() || text.front() == '/' || text.front() == '.') return {std::nullopt, std::string(text)};
    const auto colon = text.find(':');
    const auto slash = text.find('/');
    if (colon == std::string_view::npos || (slash != std::string_view::npos && slash < colon)) {
        return {std::nullopt, std::string(text)};
    }
    return {std::string(text.substr(0, colon)), std::string(text.substr(colon + 1))};
}

struct CopyRequest {
    std::string box;
    std::string box_path;
    std::string host_path;
    bool into_box = false;  ///< host -> box when true, box -> host when false
};

/// Exactly one of SRC and DST names a box; its path must be absolute and neither may be empty.
[[nodiscard]] inline BoxliteResult<CopyRequest> parse_copy(std::string_view source, std::string_view destination) {
    const auto src = parse_copy_operand(source);
    const auto dst = parse_copy_operand(destination);
    if (src.box.has_value() == dst.box.has_value()) {
        return fail(ErrorKind::InvalidArgument,
                    "cp '{}' '{}': exactly one of SRC and DST must be BOX:PATH (copying {} is not supported)", source,
                    destination, src.box ? "between boxes" : "between host paths");
    }
    CopyRequest request;
    const auto& box_side = src.box ? src : dst;
    const auto& host_side = src.box ? dst : src;
    request.into_box = dst.box.has_value();
    request.box = *box_side.box;
    request.box_path = box_side.path;
    request.host_path = host_side.path;
    if (request.box.empty()) {
        return fail(ErrorKind::InvalidArgument, "cp: '{}' names no box before ':'",
                    request.into_box ? destination : source);
    }
    if (request.box_path.empty() || request.box_path.front() != '/') {
        return fail(ErrorKind::InvalidArgument, "cp: the path inside box '{}' must be absolute, got '{}'", request.box,
                    request.box_path);
    }
    if (request.host_path.empty()) return fail(ErrorKind::InvalidArgument, "cp: the host path is empty");
    return request;
}

// -------------------------------------------------------------------------------------------
// Exit codes
// -------------------------------------------------------------------------------------------

inline constexpr int kExitSuccess = 0;
inline constexpr int kExitRuntimeError = 1;
inline constexpr int kExitUsageError = 2;
/// A command whose stdout reader left (`boxlite ls | head -1`) ends quietly with the status that
/// dying of SIGPIPE would have given, so `set -o pipefail` scripts see what they see of any tool.
inline constexpr int kExitOutputClosed = 128 + SIGPIPE;

/// The CLI's exit status for a box command's result: N for exit N, 128+N for "killed by signal
/// N" (the runtime reports that as -N, as the reference does). Clamped to what a shell can see.
[[nodiscard]] constexpr int exit_status_for(int box_exit_code) noexcept {
    if (box_exit_code >= 0) return box_exit_code > 255 ? 255 : box_exit_code;
    const int signal_number = -box_exit_code;
    return signal_number > 127 ? 255 : 128 + signal_number;
}

}  // namespace boxlite::cli
