// BoxliteOptions: how a runtime is set up — where its home directory is, which registries
// images come from, and which engine runs boxes.
//
//   home_dir          default ~/.boxlite; BOXLITE_HOME overrides it (see `from_environment`)
//   image_registries  registries tried, in order, for unqualified references ("alpine:latest")
//   insecure_registries  host[:port]s reached over plain HTTP (loopback registries always are);
//                     checked when the image store opens (Config error for anything else)
//   engine            auto | kvm | qemu | namespace | mock; BOXLITE_ENGINE overrides it.
//                     `auto` picks kvm, then qemu; it never silently drops to namespace isolation.
//   log_max_bytes     where each box log on the host (agent.log, console.log) rotates: one older
//                     file (.1) is kept, so a box holds at most twice this per log. 64 KiB - 1 GiB;
//                     BOXLITE_LOG_MAX_BYTES overrides it. Checked by validate() (open_runtime).
#pragma once

#include <boxlite/error.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite {

/// Which engine runs boxes. The kind -> engine factory lives in engine/select.hpp.
enum class EngineKind : std::uint8_t { Auto, Kvm, Qemu, Namespace, Mock };

constexpr std::string_view to_string(EngineKind kind) noexcept {
    switch (kind) {
        case EngineKind::Auto: return "auto";
        case EngineKind::Kvm: return "kvm";
        case EngineKind::Qemu: return "qemu";
        case EngineKind::Namespace: return "namespace";
        case EngineKind::Mock: return "mock";
    }
    return "auto";
}

/// "auto", "kvm", "qemu", "namespace", "mock" (exact, lower case).
[[nodiscard]] inline BoxliteResult<EngineKind> parse_engine_kind(std::string_view text) {
    for (auto kind : {EngineKind::Auto, EngineKind::Kvm, EngineKind::Qemu, EngineKind::Namespace, EngineKind::Mock}) {
        if (to_string(kind) == text) return kind;
    }
    return fail(ErrorKind::UnsupportedEngine, "'{}' (allowed: auto, kvm, qemu, namespace, mock)", text);
}

struct BoxliteOptions {
    /// The default registry list: Docker Hub, as the reference.
    static inline const std::vector<std::string> kDefaultRegistries = {"docker.io"};

    std::filesystem::path home_dir = default_home_dir();
    std::vector<std::string> image_registries = kDefaultRegistries;
    EngineKind engine = EngineKind::Auto;
    std::vector<std::string> insecure_registries = {};
    static constexpr std::uint64_t kDefaultLogMaxBytes = std::uint64_t{4} << 20;
    static constexpr std::uint64_t kMinLogMaxBytes = std::uint64_t{64} << 10;
    static constexpr std::uint64_t kMaxLogMaxBytes = std::uint64_t{1} << 30;
    std::uint64_t log_max_bytes = kDefaultLogMaxBytes;
    /// The VM engines' guest kernel: an unpacked linux-image .deb folder, a bzImage/vmlinuz or a
    /// vmlinux. Empty: $BOXLITE_KERNEL, then the kernel cache scripts/setup fills
    /// ($BOXLITE_KERNEL_CACHE/current, /var/cache/boxlite/kernel/current); docs/guest.md.
    std::filesystem::path kernel = {};

    /// A Config error naming the first option out of its range.
    [[nodiscard]] BoxliteResult<void> validate() const {
        if (log_max_bytes < kMinLogMaxBytes || log_max_bytes > kMaxLogMaxBytes) {
            return fail(ErrorKind::Config, "log_max_bytes {} is out of range (allowed: {} to {} bytes)", log_max_bytes,
                        kMinLogMaxBytes, kMaxLogMaxBytes);
        }
        return {};
    }

    /// $BOXLITE_HOME when set and non-empty, else $HOME/.boxlite, else ./.boxlite.
    [[nodiscard]] static std::filesystem::path default_home_dir() {
        if (const char* home = std::getenv("BOXLITE_HOME"); home != nullptr && *home != '\0') {
            return std::filesystem::path(home);
        }
        if (const char* user_home = std::getenv("HOME"); user_home != nullptr && *user_home != '\0') {
            return std::filesystem::path(user_home) / ".boxlite";
        }
        return std::filesystem::path(".boxlite");
    }

    /// Defaults, with BOXLITE_HOME and BOXLITE_ENGINE applied. An unknown BOXLITE_ENGINE is an
    /// error rather than a silent fallback, so a typo never changes the isolation a user gets.
    [[nodiscard]] static BoxliteResult<BoxliteOptions> from_environment() {
        BoxliteOptions options;
        if (const char* engine = std::getenv("BOXLITE_ENGINE"); engine != nullptr && *engine != '\0') {
            auto kind = parse_engine_kind(engine);
            if (!kind) return fail(kind.error().with_context("BOXLITE_ENGINE"));
            options.engine = *kind;
        }
        if (const char* cap = std::getenv("BOXLITE_LOG_MAX_BYTES"); cap != nullptr && *cap != '\0') {
            char* end = nullptr;
            errno = 0;
            const auto value = std::strtoull(cap, &end, 10);
            if (errno != 0 || end == cap || *end != '\0' || *cap == '-') {
                return fail(ErrorKind::Config, "BOXLITE_LOG_MAX_BYTES '{}' is not a number of bytes", cap);
            }
            options.log_max_bytes = value;
            if (auto ok = options.validate(); !ok) return fail(ok.error().with_context("BOXLITE_LOG_MAX_BYTES"));
        }
        return options;
    }

    friend bool operator==(const BoxliteOptions&, const BoxliteOptions&) = default;
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::EngineKind> : fmt::formatter<std::string_view> {
    auto format(boxlite::EngineKind kind, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(boxlite::to_string(kind), ctx);
    }
};

/// "home /root/.boxlite, engine auto, registries docker.io" (registries in search order).
template <>
struct fmt::formatter<boxlite::BoxliteOptions> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxliteOptions& o, format_context& ctx) const {
        std::string registries;
        for (const auto& r : o.image_registries) registries += (registries.empty() ? "" : ", ") + r;
        return fmt::formatter<std::string_view>::format(fmt::format("home {}, engine {}, registries {}",
                                                                    o.home_dir.string(), o.engine,
                                                                    registries.empty() ? std::string("none")
                                                                                       : registries),
                                                        ctx);
    }
};
