// Can the qemu engine run here, and how: the QEMU binary it will use and the acceleration.
// KVM only where our probe runs a 64-bit guest under /dev/kvm (lib/engine/kvm/probe.hpp);
// TCG otherwise. Cached per process and per options.
#pragma once

#include <boxlite/engine/qemu_engine.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <string>

namespace boxlite::qemu {

struct QemuHost {
    std::filesystem::path qemu;
    std::string accel;      ///< "kvm" or "tcg"
    std::string why_accel;  ///< one line: why that acceleration
};

/// The QEMU to run and its acceleration, or UnsupportedEngine naming every place it looked.
BoxliteResult<QemuHost> resolve_qemu_host(const QemuEngineOptions& options);

}  // namespace boxlite::qemu
