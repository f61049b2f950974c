// Volumes on the VM engines (qemu and kvm), decided once in the caller's process: which host
// folders a virtiofsd serves (engine/common/virtiofsd.hpp, started by the shim) and where the
// agent mounts each tag (the guest launch document). docs/volumes.md.
#pragma once

#include "engine/common/virtiofsd.hpp"

#include <boxlite/box_config.hpp>
#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::engine {

/// The box's volumes as virtiofsd shares (`shares`, tag "vol<i>" for volume i) and virtiofs
/// mounts (appended to `guest_launch`, shallower guest paths first); `virtiofsd` is the binary
/// (BOXLITE_VIRTIOFSD, or Debian's). An anonymous volume is the box's own folder, made here at
/// the first start and kept until rm. Refused before anything runs, naming `kind` (the engine):
/// too many volumes, a caller that is not root (virtiofsd's sandbox and the read-only bind need
/// CAP_SYS_ADMIN), no virtiofsd, a host path that is gone or is not a folder.
[[nodiscard]] BoxliteResult<void> add_vm_volumes(std::string_view kind, const BoxConfig& box,
                                                 const std::filesystem::path& box_dir, std::string& virtiofsd,
                                                 std::vector<VirtiofsShare>& shares, nlohmann::json& guest_launch);

}  // namespace boxlite::engine
