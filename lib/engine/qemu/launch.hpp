// What the qemu engine hands boxlite-shim-qemu, and the QEMU command line the shim runs.
//
// The shim config is the kvm engine's (lib/engine/kvm/launch.hpp: guest kernel, initrd, command
// line, disk, vsock socket, console log, the guest launch document) plus a "qemu" object: the
// QEMU binary and the acceleration. One JSON document on the shim's fd 3, read to EOF.
//
// The shim hands QEMU its devices as descriptors, never as socket paths (a box directory deep in
// a CI checkout would not fit sun_path): QEMU's fd 3 is a connected socket to our vhost-user
// vsock back end, fd 4 to our vhost-user-blk back end; its stdout is the serial console, which
// the shim copies into console.log under a cap.
//
// Network: with `network.enabled`, `-netdev vhost-user` + `virtio-net-device` on a chardev that
// connects to our vhost-user-net back end (lib/devices/virtio/net) at an abstract UNIX address:
// QEMU 7.2's vhost-user netdev refuses a chardev on an inherited descriptor.
//
// Volumes: one virtiofsd (Debian's C virtiofsd, /usr/lib/qemu/virtiofsd) per volume, started by
// the shim. Volume i is QEMU's fd kFirstVolumeFd + i, a connected socket to that virtiofsd, and
// a `vhost-user-fs-device` with the volume's tag; the agent mounts the tag (GuestVolume).
#pragma once

#include "engine/common/volumes.hpp"
#include "engine/kvm/launch.hpp"

#include <boxlite/error.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::qemu {

/// QEMU's descriptors for the back ends (the shim's side of each socket pair serves them).
inline constexpr int kVsockBackendFd = 3;
inline constexpr int kBlockBackendFd = 4;
/// Volume i's virtiofsd socket is QEMU's fd kFirstVolumeFd + i.
inline constexpr int kFirstVolumeFd = 5;
/// At most this many volumes per box on the qemu engine (a virtiofsd process each).
inline constexpr std::size_t kMaxVolumes = engine::kMaxVmVolumes;
using engine::kDefaultVirtiofsd;
using vmm::kBoxMac;

/// One host folder a virtiofsd serves (engine/common/virtiofsd.hpp, shared with the kvm engine).
using QemuVolume = engine::VirtiofsShare;

/// The box network (docs/networking.md), the same as the kvm engine's (engine/kvm/launch.hpp).
using QemuPublishedPort = vmm::VmPublishedPort;
using QemuNetwork = vmm::VmNetwork;

struct QemuShimConfig {
    vmm::KvmShimConfig vm;
    std::vector<QemuVolume> volumes;
    QemuNetwork network;
    std::string virtiofsd = kDefaultVirtiofsd;         ///< absolute path; used when volumes is not empty
    std::string qemu = "/usr/bin/qemu-system-x86_64";  ///< absolute path
    std::string accel = "tcg";                         ///< "kvm" or "tcg"
};

[[nodiscard]] nlohmann::json to_json_document(const QemuShimConfig& config);
/// Parses and validates; broken input is a Config error naming the field.
[[nodiscard]] BoxliteResult<QemuShimConfig> parse_qemu_shim_config(std::string_view text);

/// The whole QEMU command line (argv[0] is the binary). `initrd` is the file the shim made (the
/// launch document in front of the base initramfs); empty: none. `net_address`: the abstract UNIX
/// address (without its leading NUL) where the shim's vhost-user-net back end listens, used when
/// the network is enabled.
[[nodiscard]] std::vector<std::string> qemu_argv(const QemuShimConfig& config, const std::string& initrd,
                                                 const std::string& net_address = {});

/// The benchmark peer's network (BOXLITE_QEMU_NET_PEER=stream in the shim): QEMU's own
/// virtio-net on `-netdev stream` over the connected socket `fd` (passt's peer), the box's MAC.
[[nodiscard]] std::vector<std::string> qemu_stream_netdev_argv(int fd);
/// QEMU's descriptor for that socket (after every volume's).
inline constexpr int kStreamPeerFd = kFirstVolumeFd + static_cast<int>(kMaxVolumes);

/// virtiofsd's command line for `volume`, its vhost-user listening socket on `listen_fd`
/// (argv[0] is the binary). Sandboxed in its own namespaces (pid, mount, net) with pivot_root
/// into the shared folder; no xattrs, no remote locks.
[[nodiscard]] std::vector<std::string> virtiofsd_argv(const QemuShimConfig& config, const QemuVolume& volume,
                                                      int listen_fd);

/// The guest's own clock (CLOCK_BOOTTIME, ms) on the agent's console line `what` (vm_init's
/// "boxlite-agent: [<ms> ms] <what>...") of the last boot in `console`, or nullopt. The console is
/// the guest's: numbers are bounded (at most an hour) and anything unexpected gives nullopt.
[[nodiscard]] std::optional<std::uint64_t> guest_console_ms(std::string_view console, std::string_view what);

}  // namespace boxlite::qemu
