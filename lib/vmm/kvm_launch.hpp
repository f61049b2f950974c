// The pieces of KvmEngine::start (lib/vmm/kvm_engine.cpp), apart so each runs without a guest
// kernel or a 64-bit-capable KVM: the box's disk overlay, the shim config built from the launch
// request, and spawning boxlite-shim-kvm.
#pragma once

#include "vmm/shim_config.hpp"

#include <boxlite/concepts.hpp>
#include <boxlite/engine/kvm_engine.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace boxlite::vmm {

/// The box's disk: a QCOW2 overlay at `overlay` over the read-only raw ext4 image `base`.
/// Created when missing; its virtual size is disk_size_gb, but never less than the base (a disk
/// shorter than its filesystem would cut the filesystem off). An existing overlay is grown to a
/// larger disk_size_gb with the QCOW2 resize; it is never shrunk (that would drop data), so a
/// smaller value than the current size leaves it as it is. Returns the virtual size in bytes.
BoxliteResult<std::uint64_t> prepare_box_disk(const std::filesystem::path& overlay, const std::filesystem::path& base,
                                              std::optional<std::uint32_t> disk_size_gb);

/// The shim config for `launch`: vCPUs, guest RAM (memory_mib, capped by max_memory), kernel
/// command line, disk, vsock, console, and the guest agent's launch document (env, working
/// dir, user, rlimits). What the kvm engine cannot do yet is refused, not dropped: volumes
/// (they need virtiofs) and published ports (they need guest networking) are Unsupported.
BoxliteResult<KvmShimConfig> make_shim_config(const KvmEngineOptions& options, const EngineLaunch& launch,
                                              const std::filesystem::path& kernel,
                                              const std::filesystem::path& initrd,
                                              const std::filesystem::path& disk);

struct ShimSpawn {
    std::filesystem::path shim;
    std::string config;            ///< the JSON document, written to the shim's fd 3
    std::filesystem::path log;     ///< the shim's stdout and stderr (appended)
    int watchdog_read_fd = -1;     ///< becomes the shim's fd 5 (taken over and closed here)
    std::chrono::milliseconds ready_timeout{30000};
};

struct SpawnedShim {
    std::int32_t pid = -1;  ///< a child of this process, in a session of its own
    std::string ready;      ///< the shim's "ok <pid>" line
};

/// Forks and execs the shim with the config on fd 3 (to EOF), its ready line on fd 4 and the
/// watchdog on fd 5; returns once it reported "ok". Anything else — an "error" line, exit,
/// silence past the timeout — kills and reaps it and returns the reason with the log's tail.
/// Safe to call from a multi-threaded process: the child only makes async-signal-safe calls.
BoxliteResult<SpawnedShim> spawn_kvm_shim(const ShimSpawn& spawn);

}  // namespace boxlite::vmm
