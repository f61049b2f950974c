// BoxOptions: everything a caller can say about a box at create time. Immutable once the
// box exists (it is persisted as part of BoxConfig). Defaults and ranges follow the reference;
// `validate_box_options` checks them all before anything is written.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/network_spec.hpp>
#include <boxlite/port_spec.hpp>
#include <boxlite/resource_limits.hpp>
#include <boxlite/rootfs_spec.hpp>
#include <boxlite/secret.hpp>
#include <boxlite/security_options.hpp>
#include <boxlite/volume_spec.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite {

struct BoxOptions {
    static constexpr std::uint32_t kDefaultCpus = 1;
    static constexpr std::uint32_t kDefaultMemoryMib = 512;
    static constexpr std::uint32_t kMinMemoryMib = 128;
    static constexpr std::uint32_t kMaxMemoryMib = 65536;
    static constexpr std::uint32_t kMinDiskSizeGb = 1;
    static constexpr std::uint32_t kMaxDiskSizeGb = 1024;

    std::uint32_t cpus = kDefaultCpus;              ///< 1 .. host CPUs
    std::uint32_t memory_mib = kDefaultMemoryMib;   ///< 128 .. 65536
    std::optional<std::uint32_t> disk_size_gb;      ///< 1 .. 1024; nullopt = image size
    std::optional<std::string> working_dir;         ///< absolute; overrides the image's WorkingDir
    std::vector<std::pair<std::string, std::string>> env;  ///< added to / overriding the image's Env
    RootfsSpec rootfs;
    std::vector<VolumeSpec> volumes;
    NetworkSpec network;
    std::vector<PortSpec> ports;
    bool auto_remove = true;   ///< remove the box when it stops
    bool detach = false;       ///< false: the box dies with the process that created it
    SecurityOptions security = SecurityOptions::standard();
    ResourceLimits resource_limits;
    std::map<std::string, std::string> labels;
    std::vector<Secret> secrets;
    std::optional<std::vector<std::string>> entrypoint;  ///< overrides the image's Entrypoint
    std::optional<std::vector<std::string>> cmd;         ///< overrides the image's Cmd
    std::optional<std::string> user;                    ///< "uid[:gid]" or a name; overrides the image's User

    friend bool operator==(const BoxOptions&, const BoxOptions&) = default;
};

}  // namespace boxlite
