// The guest assets of the VM engines (kvm, qemu): the kernel and the initramfs every box boots.
//
// The kernel is Debian's linux-image-cloud-amd64, unpacked from its .deb by scripts/setup into a
// cache folder (nothing is installed into the host's /boot). From it the runtime makes, once per
// (kernel, agent) pair, and caches under <home>/init/:
//   vmlinux-<key>          the uncompressed kernel out of the bzImage: its payload is an LZ4
//                          "legacy" stream (magic 02 21 4c 18). An ELF x86-64 image with a PVH
//                          entry note, which QEMU's microvm and our VMM both boot directly;
//   initramfs-<key>.cpio   an uncompressed cpio (newc, written with libarchive): /init is the
//                          static boxlite-agent, /lib/modules/*.ko the guest's modules, and
//                          /lib/modules/order their load order (one file name a line), derived
//                          from each module's .modinfo depends= (the .deb has no modules.dep).
// <key> is a hash of the kernel image, the module tree, the agent binary and the format version
// (the vmlinux's: of the kernel image alone), so a new kernel or agent makes new files and never
// rewrites ones a running VM may read; a build removes other sets unwritten for an hour. Both
// are written to a temporary file and renamed into place, under a lock file, so concurrent first
// uses (threads or processes) build them once.
//
// Search order for the kernel (the first that is set wins; an explicit setting that is wrong is an
// error, never skipped):
//   1. an explicit path (BoxliteOptions::kernel, KvmEngineOptions::kernel, --kernel);
//   2. $BOXLITE_KERNEL;
//   3. $BOXLITE_KERNEL_CACHE/current, when that variable is set;
//   4. /var/cache/boxlite/kernel/current (where scripts/setup puts it).
// A kernel setting may name: an unpacked linux-image .deb (a folder with boot/vmlinuz-<release>
// and lib/modules/<release>/); a bzImage or vmlinuz file (its modules are taken from
// <root>/lib/modules/<release>/ when the file is <root>/boot/vmlinuz-<release>; otherwise the
// kernel must have the drivers built in); or an uncompressed vmlinux (ELF), used as it is.
#pragma once

#include <boxlite/error.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::engine {

/// The modules the guest agent loads, where the kernel has them as modules (the rest are built
/// in, or absent): virtio-mmio transport, block, network, vsock, virtiofs and overlayfs.
inline constexpr std::string_view kGuestModules[] = {"virtio",
                                                     "virtio_ring",
                                                     "virtio_mmio",
                                                     "virtio_blk",
                                                     "virtio_net",
                                                     "vsock",
                                                     "vmw_vsock_virtio_transport_common",
                                                     "vmw_vsock_virtio_transport",
                                                     "fuse",
                                                     "virtiofs",
                                                     "overlay"};

/// Where the initramfs keeps the modules, and the file listing their load order.
inline constexpr std::string_view kInitramfsModuleDir = "lib/modules";
inline constexpr std::string_view kInitramfsModuleOrder = "lib/modules/order";

struct GuestAssetOptions {
    /// Step 1 of the search order; empty: the next steps.
    std::filesystem::path kernel;
    /// The static boxlite-agent; empty: the helper-binary search (BOXLITE_AGENT, next to the
    /// program, the build tree, libexec; helper_binary.hpp).
    std::filesystem::path agent;
    /// The BoxLite home: assets go to <home>/init/.
    std::filesystem::path home;
    /// false: only say which files would be used (GuestAssets::present tells whether they are).
    bool build = true;
};

struct GuestAssets {
    std::filesystem::path vmlinux;        ///< uncompressed ELF kernel to boot
    std::filesystem::path initramfs;      ///< uncompressed newc cpio, /init = boxlite-agent
    std::filesystem::path kernel_source;  ///< what the search found (folder or file)
    std::string kernel_origin;            ///< which step found it: "option", "BOXLITE_KERNEL", ...
    std::string kernel_release;           ///< "6.1.0-57-cloud-amd64"; empty when unknown
    std::vector<std::string> modules;     ///< in load order (file names in the initramfs)
    std::vector<std::string> built_in;    ///< kGuestModules the kernel has built in
    bool built = false;                   ///< this call made them (false: cached)
    bool present = false;                 ///< the files exist (always, after a build)
};

/// Finds the kernel, and makes (or finds cached) the vmlinux and initramfs for it and the agent.
/// Errors: no kernel anywhere (naming every place looked at and how to get one); a corrupt or
/// unsupported kernel image; a module missing from the tree; the agent not found.
[[nodiscard]] BoxliteResult<GuestAssets> prepare_guest_assets(const GuestAssetOptions& options);

/// The search order alone: the kernel setting that wins and the step that found it.
struct KernelSource {
    std::filesystem::path path;
    std::string origin;
};
[[nodiscard]] BoxliteResult<KernelSource> locate_guest_kernel(const std::filesystem::path& explicit_kernel);

/// Kernel command-line words every VM engine adds: the TSC frequency of this host
/// (`tsc_early_khz=<MHz x 1000> tsc=reliable`: without them Debian's kernel under TCG may hang
/// for good after "Marking TSC unstable" when the host is busy). Empty when /proc/cpuinfo has
/// no "cpu MHz".
[[nodiscard]] std::string guest_tsc_cmdline();

/// The kernel command-line words every VM engine adds after its own (console, reboot, panic):
/// `cryptomgr.notests=1` (the crypto self-tests are 0.2-0.5 s of a TCG boot here, the largest
/// initcall; they check the kernel's own algorithm implementations, not an isolation boundary)
/// and guest_tsc_cmdline().
[[nodiscard]] std::string guest_boot_cmdline();

// ---- The parsers, exposed for tests (bounded, hostile-input safe).

/// The uncompressed kernel out of a bzImage whose payload is LZ4 legacy; a corrupt or other
/// image is an error saying what is wrong.
[[nodiscard]] BoxliteResult<std::vector<std::byte>> extract_vmlinux(std::span<const std::byte> bzimage);
/// An LZ4 legacy stream (magic, then blocks of <le32 size><data>) of at most `max_output` bytes.
[[nodiscard]] BoxliteResult<std::vector<std::byte>> decompress_lz4_legacy(std::span<const std::byte> stream,
                                                                          std::size_t max_output);
/// ELF64, x86-64, executable, program headers inside the file, and a PVH entry note (Xen
/// XEN_ELFNOTE_PHYS32_ENTRY) — what QEMU microvm and our VMM need to boot it.
[[nodiscard]] BoxliteResult<void> validate_vmlinux(std::span<const std::byte> elf);
/// The .modinfo section of a module (ELF64 relocatable) as key=value strings.
[[nodiscard]] BoxliteResult<std::vector<std::string>> read_modinfo(std::span<const std::byte> module);

/// `module` without its appended signature (Linux's "~Module signature appended~\n" trailer:
/// the PKCS#7 blob, then a 12-byte struct module_signature whose last 4 bytes are the blob's
/// big-endian length). The initramfs keeps modules unsigned: Debian's kernel does not enforce
/// module signatures (no module.sig_enforce, no lockdown in our guests), so the check only sets a
/// taint flag, yet it is ~80% of the guest instructions a module load costs under TCG (measured
/// with -icount: 123 M instructions for the 13 modules signed, 20 M unsigned). The modules'
/// integrity is apt's (the .deb is checked against Debian's signed index when scripts/setup
/// downloads it). A module without a trailer comes back as it is; a trailer whose length does
/// not fit is an error.
[[nodiscard]] BoxliteResult<std::span<const std::byte>> strip_module_signature(std::span<const std::byte> module);

struct ModuleInfo {
    std::string name;
    std::vector<std::string> depends;
};
/// `wanted` and everything they depend on, dependencies first; an unknown name is an error.
[[nodiscard]] BoxliteResult<std::vector<std::string>> module_load_order(const std::vector<ModuleInfo>& modules,
                                                                        const std::vector<std::string>& wanted);

}  // namespace boxlite::engine
