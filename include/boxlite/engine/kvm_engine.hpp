// KvmEngine: the `kvm` engine — each box is a micro-VM run by our own VMM (lib/vmm +
// lib/devices) inside a `boxlite-shim-kvm` process.
//
//   start()   refuses what the VM cannot do yet (volumes: no virtiofs; published ports: no guest
//             network) with Unsupported; makes <box_dir>/disk.qcow2 over the image's ext4 base,
//             or grows the existing one, to disk_size_gb (never below the base, never shrunk);
//             spawns the shim with its configuration on fd 3 (JSON, lib/engine/kvm/launch.hpp),
//             waits for "ok <pid>", then for the guest agent to answer on vsock port `agent_port`
//             through the shim's hybrid vsock socket: the endpoint is
//             "vsock-uds:<box_dir>/vsock.sock:<port>". The launch's env, working dir, user and
//             rlimits reach the agent as /boxlite/launch.json in the initramfs
//             (lib/engine/kvm/launch.hpp); max_memory caps the guest's RAM.
//   detach=false  as for the namespace engine: the shim watches a pipe whose write end only
//             this process holds, and stops the VM when it closes (this process exited).
//   stop()    SIGTERM (the shim stops the vCPUs and flushes the disk), SIGKILL after `timeout`.
//   available()  a real, cached probe: a tiny 64-bit guest must run (lib/engine/kvm/probe.hpp). Where
//             /dev/kvm cannot run 64-bit guests (kvm_pvm) it answers UnsupportedEngine with the
//             reason, in milliseconds.
//
// The members are compiled in lib/engine/kvm/ (engine.cpp, probe.cpp, launch.cpp).
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

struct KvmEngineOptions {
    /// The boxlite-shim-kvm executable; empty: $BOXLITE_SHIM_KVM, next to the running program,
    /// the build tree's bin/, then <libdir>/../libexec/boxlite/. A path given here or in the
    /// environment that is not an executable file makes start() fail naming it.
    std::filesystem::path shim;
    /// Guest kernel and initramfs whose /init is boxlite-agent. Both given: booted as they are
    /// (kernel: a vmlinux with a PVH note, or a bzImage). Otherwise the guest assets
    /// (docs/guest.md): `kernel`, else BoxliteOptions::kernel, else $BOXLITE_KERNEL, else the
    /// kernel cache of scripts/setup; its vmlinux and an initramfs with the agent and modules
    /// are made once and cached under <home>/init/.
    std::filesystem::path kernel;
    std::filesystem::path initrd;
    /// Appended to the kernel command line the engine builds.
    std::string extra_cmdline;
    /// vsock port the guest agent listens on.
    std::uint32_t agent_port = 2695;
    /// The guest's vsock CID (3 is the first one that is not reserved).
    std::uint64_t guest_cid = 3;
    /// How long start() waits for the agent to answer after the VM started.
    std::chrono::milliseconds boot_timeout{30000};
};

class KvmEngine {
public:
    KvmEngine();
    explicit KvmEngine(KvmEngineOptions options);

    [[nodiscard]] std::string_view kind() const noexcept { return "kvm"; }
    [[nodiscard]] RootfsKind rootfs_kind() const noexcept { return RootfsKind::Ext4Disk; }
    [[nodiscard]] BoxliteResult<void> available() const;
    BoxliteResult<EngineHandle> start(const EngineLaunch& launch);
    BoxliteResult<void> stop(const EngineHandle& handle, std::chrono::milliseconds timeout);
    BoxliteResult<void> kill(const EngineHandle& handle);
    [[nodiscard]] bool is_alive(const EngineHandle& handle) const;
    BoxliteResult<EngineMetrics> metrics(const EngineHandle& handle);

    /// What this engine cannot honour, refused rather than ignored (volumes, published ports).
    [[nodiscard]] static BoxliteResult<void> supports(const BoxConfig& config);

    [[nodiscard]] const KvmEngineOptions& options() const noexcept { return options_; }

private:
    KvmEngineOptions options_;
};

static_assert(Engine<KvmEngine>);

}  // namespace boxlite
