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
#pragma once

#include "engine/kvm/launch.hpp"

#include <boxlite/error.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace boxlite::qemu {

/// QEMU's descriptors for the back ends (the shim's side of each socket pair serves them).
inline constexpr int kVsockBackendFd = 3;
inline constexpr int kBlockBackendFd = 4;

struct QemuShimConfig {
    vmm::KvmShimConfig vm;
    std::string qemu = "/usr/bin/qemu-system-x86_64";  ///< absolute path
    std::string accel = "tcg";                         ///< "kvm" or "tcg"
};

[[nodiscard]] nlohmann::json to_json_document(const QemuShimConfig& config);
/// Parses and validates; broken input is a Config error naming the field.
[[nodiscard]] BoxliteResult<QemuShimConfig> parse_qemu_shim_config(std::string_view text);

/// The whole QEMU command line (argv[0] is the binary). `initrd` is the file the shim made (the
/// launch document in front of the base initramfs); empty: none.
[[nodiscard]] std::vector<std::string> qemu_argv(const QemuShimConfig& config, const std::string& initrd);

}  // namespace boxlite::qemu
