// VolumeSpec: a host directory shared into the box (virtiofs in VMs, a bind mount in namespaces).
#pragma once

#include <string>

namespace boxlite {

struct VolumeSpec {
    std::string host_path;   ///< must exist on the host
    std::string guest_path;  ///< absolute path inside the box
    bool read_only = false;

    friend bool operator==(const VolumeSpec&, const VolumeSpec&) = default;
};

}  // namespace boxlite
