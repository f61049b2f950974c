// A throw-away Linux guest under QEMU TCG for tests and benchmarks of our vhost-user back ends:
// the bzImage of scripts/setup's kernel (booted through QEMU's option ROM), a test initramfs
// (busybox-static, the virtio modules, a shell script as /init, extra files), and QEMU started
// directly with its console in a file.
#pragma once

#include "support/support.hpp"

#include "base/fd.hpp"
#include "base/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace boxlite::vhost_user::testing {

namespace fs = std::filesystem;

/// The kernel tree scripts/setup unpacks (boot/vmlinuz-*, lib/modules/<version>/).
inline fs::path kernel_tree() {
    const char* cache = std::getenv("BOXLITE_KERNEL_CACHE");
    return fs::path(cache && *cache ? cache : "/var/cache/boxlite/kernel") / "current";
}

inline std::optional<fs::path> find_file(const fs::path& root, const std::string& prefix, const std::string& suffix) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (name.rfind(prefix, 0) == 0 && name.size() >= suffix.size() &&
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
            return it->path();
    }
    return std::nullopt;
}

/// The host's TSC in kHz, from /proc/cpuinfo ("cpu MHz"); DESIGN.md: TCG boots need it.
inline std::uint64_t host_khz() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("cpu MHz", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos)
                return static_cast<std::uint64_t>(std::atof(line.c_str() + colon + 1) * 1000);
        }
    }
    return 0;
}

/// The bzImage, or "" (with `why`) when scripts/setup has not fetched the kernel.
inline std::string guest_kernel(std::string& why) {
    const auto kernel = find_file(kernel_tree() / "boot", "vmlinuz-", "");
    if (!kernel) why = "no guest kernel under " + (kernel_tree() / "boot").string() + " (scripts/setup fetches it)";
    return kernel ? kernel->string() : std::string();
}

/// Builds <dir>/initrd.cpio: busybox, the virtio block modules loaded by /init (which then runs
/// `script`, and powers off), and `extra` files (host path → path in the initramfs).
inline std::string build_initramfs(const fs::path& dir, const std::string& script,
                                   const std::vector<std::pair<fs::path, std::string>>& extra = {}) {
    const auto busybox = test::busybox_binary();
    if (!busybox) return "busybox-static is not installed";
    const fs::path staging = dir / "initramfs";
    fs::create_directories(staging / "bin");
    fs::create_directories(staging / "modules");
    fs::copy_file(*busybox, staging / "bin" / "busybox", fs::copy_options::overwrite_existing);
    for (const char* module : {"virtio_ring", "virtio", "virtio_mmio", "virtio_blk"}) {
        const auto ko = find_file(kernel_tree() / "lib" / "modules", std::string(module) + ".ko", "");
        if (!ko || ko->filename() != std::string(module) + ".ko") return std::string("no module ") + module;
        fs::copy_file(*ko, staging / "modules" / ko->filename(), fs::copy_options::overwrite_existing);
    }
    for (const auto& [from, to] : extra) fs::copy_file(from, staging / to, fs::copy_options::overwrite_existing);
    // Modules in their .modinfo dependency order; a failure powers off at once.
    test::write_file(staging / "init", R"SH(#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_blk; do
  $B insmod /modules/$m.ko || { echo "INSMOD-FAILED $m"; $B poweroff -f; }
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 600 ]; do $B sleep 0.1; i=$((i+1)); done
)SH" + script + "\n$B sync\necho GUEST-DONE\n$B poweroff -f\n");
    fs::permissions(staging / "init", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
    test::shell("cd '" + staging.string() + "' && find . | cpio -o -H newc --quiet > '" +
                (dir / "initrd.cpio").string() + "'");
    return {};
}

/// QEMU microvm under TCG booting `kernel` + <dir>/initrd.cpio, console into <dir>/console.log,
/// its own messages into <dir>/qemu.log, with `device_args` (e.g. a vhost-user device) and
/// `fds` (QEMU's descriptors from 3 on). Returns the pid (a child of ours).
inline BoxliteResult<pid_t> start_qemu(const fs::path& dir, const std::string& kernel,
                                       const std::vector<std::string>& device_args, const std::vector<int>& fds = {}) {
    base::OwnedFd output(::open((dir / "qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    base::OwnedFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    base::SpawnOptions spawn;
    spawn.argv = {"/usr/bin/qemu-system-x86_64",
                  "-M",
                  "microvm,acpi=on,rtc=on,memory-backend=mem",
                  "-object",
                  "memory-backend-memfd,id=mem,size=256M,share=on",
                  "-m",
                  "256M",
                  "-global",
                  "virtio-mmio.force-legacy=false",
                  "-accel",
                  "tcg",
                  "-cpu",
                  "max",
                  "-smp",
                  "1",
                  "-nodefaults",
                  "-no-user-config",
                  "-display",
                  "none",
                  "-no-reboot",
                  "-sandbox",
                  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                  "-serial",
                  "file:" + (dir / "console.log").string(),
                  "-kernel",
                  kernel,
                  "-initrd",
                  (dir / "initrd.cpio").string(),
                  "-append",
                  "console=ttyS0 panic=-1 loglevel=4 tsc_early_khz=" + std::to_string(host_khz()) + " tsc=reliable"};
    spawn.argv.insert(spawn.argv.end(), device_args.begin(), device_args.end());
    spawn.fds = {null.get(), output.get(), output.get()};
    spawn.fds.insert(spawn.fds.end(), fds.begin(), fds.end());
    spawn.kill_with_parent = true;
    return base::spawn(spawn);
}

/// Waits for QEMU; a hang guard (not a timing assertion) kills it after `limit`. Returns the
/// wait status.
inline int wait_qemu(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(600)) {
    int status = -1;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (bool killed = false;;) {
        if (::waitpid(pid, &status, WNOHANG) == pid) return status;
        if (!killed && std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            killed = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

}  // namespace boxlite::vhost_user::testing
