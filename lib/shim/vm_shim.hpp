// What both VM shims (boxlite-shim-kvm, boxlite-shim-qemu) do alike: answer on the ready fd,
// read the config document from its fd, and open the box disk.
#pragma once

#include <boxlite/error.hpp>

#include "engine/kvm/launch.hpp"  // vmm::ShimDiskConfig
#include "qcow2/block_backend.hpp"

#include <memory>
#include <string>

namespace boxlite::shim {

/// Writes one line to the ready fd, then closes it (-1 afterwards; nothing when already -1).
void say(int& fd, const std::string& line);

/// The whole config document from `fd`, at most 1 MiB (a Config error beyond).
[[nodiscard]] BoxliteResult<std::string> read_config(int fd);

/// The box disk: a raw file or a QCOW2 image, as the config says.
[[nodiscard]] BoxliteResult<std::shared_ptr<block::BlockBackend>> open_disk(const vmm::ShimDiskConfig& disk);

}  // namespace boxlite::shim
