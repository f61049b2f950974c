// QemuEngine::available() and the choice of QEMU binary and acceleration (probe.hpp).
#include "engine/qemu/probe.hpp"

#include "engine/kvm/probe.hpp"

#include <fmt/ranges.h>

#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <vector>

namespace boxlite::qemu {
namespace {

namespace fs = std::filesystem;

bool executable(const fs::path& path) {
    std::error_code ec;
    return fs::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

BoxliteResult<QemuHost> resolve_qemu_host(const QemuEngineOptions& options) {
    QemuHost host;
    std::vector<std::string> looked;
    if (!options.qemu.empty()) {
        if (!executable(options.qemu))
            return fail(ErrorKind::UnsupportedEngine,
                        "qemu: {} (the QEMU given in the options) is not an executable file", options.qemu.string());
        host.qemu = options.qemu;
    } else if (const char* env = std::getenv("BOXLITE_QEMU"); env && *env) {
        if (!executable(env))
            return fail(ErrorKind::UnsupportedEngine, "qemu: BOXLITE_QEMU={} is not an executable file", env);
        host.qemu = env;
    } else {
        std::vector<fs::path> candidates{"/usr/bin/qemu-system-x86_64"};
        if (const char* path = std::getenv("PATH")) {
            std::stringstream dirs(path);
            for (std::string dir; std::getline(dirs, dir, ':');)
                if (!dir.empty()) candidates.push_back(fs::path(dir) / "qemu-system-x86_64");
        }
        for (const auto& candidate : candidates) {
            if (executable(candidate)) {
                host.qemu = fs::absolute(candidate);
                break;
            }
            looked.push_back(candidate.string());
        }
        if (host.qemu.empty())
            return fail(ErrorKind::UnsupportedEngine,
                        "qemu: no qemu-system-x86_64 (looked at {}; Debian package qemu-system-x86, or BOXLITE_QEMU)",
                        fmt::join(looked, ", "));
    }
    if (!options.accel.empty()) {
        if (options.accel != "kvm" && options.accel != "tcg")
            return fail(ErrorKind::Config, "qemu: acceleration '{}' (allowed: kvm, tcg, or empty to choose)",
                        options.accel);
        host.accel = options.accel;
        host.why_accel = "asked for";
        return host;
    }
    const auto& long_mode = vmm::cached_long_mode_support();
    host.accel = long_mode ? "kvm" : "tcg";
    host.why_accel = long_mode ? "/dev/kvm runs 64-bit guests" : long_mode.error().message();
    return host;
}

}  // namespace boxlite::qemu

namespace boxlite {

BoxliteResult<void> QemuEngine::available() const {
    BOXLITE_TRY(auto host, qemu::resolve_qemu_host(options_));
    (void)host;
    return {};
}

BoxliteResult<std::string> QemuEngine::acceleration() const {
    BOXLITE_TRY(auto host, qemu::resolve_qemu_host(options_));
    if (host.accel == "kvm") return std::string("kvm");
    // The kvm engine's own status says why in full; one short clause here, not the same text twice.
    if (host.why_accel == "asked for") return std::string("tcg (asked for)");
    return std::string("tcg (KVM cannot run a 64-bit guest here)");
}

}  // namespace boxlite
