// The guest kernel and initramfs the VM engines (kvm, qemu) boot, as `boxlite info` shows them.
//
// The kernel is found in this order (docs/guest.md): BoxliteOptions::kernel, $BOXLITE_KERNEL,
// $BOXLITE_KERNEL_CACHE/current, /var/cache/boxlite/kernel/current (scripts/setup puts Debian's
// linux-image-cloud-amd64 there). From it and the static boxlite-agent the runtime makes, once,
// <home>/init/vmlinux-<key> and <home>/init/initramfs-<key>.cpio.
#pragma once

#include <boxlite/boxlite_options.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace boxlite {

struct GuestAssetsStatus {
    std::filesystem::path kernel_source;  ///< what the search found (folder or file)
    std::string kernel_origin;            ///< which step found it ("the kernel cache", "BOXLITE_KERNEL", ...)
    std::string kernel_release;           ///< e.g. "6.1.0-57-cloud-amd64"; empty when unknown
    std::filesystem::path vmlinux;        ///< the kernel VMs boot
    std::filesystem::path initramfs;      ///< the initramfs VMs boot (/init = boxlite-agent)
    bool cached = false;                  ///< both are made already (else the first VM start makes them)
    std::vector<std::string> modules;     ///< the initramfs's modules in load order (when cached)
};

/// Which kernel and initramfs a VM box of this runtime would boot, without making them; an error
/// says what is missing and where the search looked.
[[nodiscard]] BoxliteResult<GuestAssetsStatus> describe_guest_assets(const BoxliteOptions& options);

}  // namespace boxlite
