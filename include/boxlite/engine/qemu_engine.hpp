// QemuEngine: the `qemu` engine — each box is a QEMU `microvm` (KVM where this host runs a 64-bit
// guest, TCG otherwise) whose devices are ours: a `boxlite-shim-qemu` process per box serves
// our virtio-blk (over the box's QCOW2 disk) and virtio-vsock (the same hybrid Unix socket as the
// kvm engine) to QEMU over vhost-user, and QEMU is its child.
//
//   start()   as the kvm engine: guest assets (docs/guest.md), <box_dir>/disk.qcow2 over the
//             image's ext4 base grown to disk_size_gb, the shim spawned with its config on a fd,
//             then the agent must answer on "vsock-uds:<box_dir>/vsock.sock:<port>".
//   stop()    a guest shutdown through the agent (Shutdown frame: the agent syncs and powers the
//             VM off, QEMU exits, the shim with it), SIGTERM to the shim when that has not ended
//             it within `timeout`, then SIGKILL. QEMU dies with its shim (PR_SET_PDEATHSIG) and
//             the shim with QEMU.
//   available()  a QEMU binary that runs, and the acceleration it will use (kvm only where our
//             64-bit probe guest runs: lib/engine/kvm/probe.hpp).
//
// The members are compiled in lib/engine/qemu/ (engine.cpp, probe.cpp, launch.cpp); docs/qemu-engine.md.
#pragma once

#include <boxlite/engine.hpp>
#include <boxlite/engine_handle.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace boxlite {

struct QemuEngineOptions {
    /// The boxlite-shim-qemu executable; empty: $BOXLITE_SHIM_QEMU, then the usual helper search.
    std::filesystem::path shim;
    /// qemu-system-x86_64; empty: $BOXLITE_QEMU, then /usr/bin/qemu-system-x86_64, then PATH.
    std::filesystem::path qemu;
    /// "kvm", "tcg", or empty: kvm where our probe runs a 64-bit guest, tcg otherwise.
    std::string accel;
    /// Guest kernel (vmlinux with a PVH note) and initramfs; empty: the guest assets.
    std::filesystem::path kernel;
    std::filesystem::path initrd;
    /// Appended to the kernel command line the engine builds.
    std::string extra_cmdline;
    std::uint32_t agent_port = 2695;
    std::uint64_t guest_cid = 3;
    /// How long start() waits for the agent once QEMU runs (TCG boots take seconds).
    std::chrono::milliseconds boot_timeout{120000};
};

class QemuEngine {
public:
    QemuEngine();
    explicit QemuEngine(QemuEngineOptions options);

    [[nodiscard]] std::string_view kind() const noexcept { return "qemu"; }
    [[nodiscard]] RootfsKind rootfs_kind() const noexcept { return RootfsKind::Ext4Disk; }
    [[nodiscard]] BoxliteResult<void> available() const;
    /// The acceleration new boxes get, in a few words: "kvm", or "tcg (<why not kvm, briefly>)".
    [[nodiscard]] BoxliteResult<std::string> acceleration() const;
    BoxliteResult<EngineHandle> start(const EngineLaunch& launch);
    BoxliteResult<void> stop(const EngineHandle& handle, std::chrono::milliseconds timeout);
    BoxliteResult<void> kill(const EngineHandle& handle);
    [[nodiscard]] bool is_alive(const EngineHandle& handle) const;
    BoxliteResult<EngineMetrics> metrics(const EngineHandle& handle);

    [[nodiscard]] const QemuEngineOptions& options() const noexcept { return options_; }

private:
    QemuEngineOptions options_;
};

static_assert(Engine<QemuEngine>);

}  // namespace boxlite
