// virtiofsd for the VM engines: Debian's C virtiofsd (/usr/lib/qemu/virtiofsd, package
// qemu-system-common), one per volume, started by the box's shim — QEMU's vhost-user-fs-device
// talks to it on the qemu engine, our VMM's vhost-user frontend on the kvm engine
// (lib/vhost_user/frontend_device.hpp). docs/volumes.md describes both.
//
// Each virtiofsd is a child of the shim with PR_SET_PDEATHSIG, in a private mount namespace
// where a read-only volume is a read-only bind of its folder (that virtiofsd has no read-only
// option: read-only is enforced on the host, whatever the guest does); virtiofsd then sandboxes
// itself (pid, mount and net namespaces, pivot_root into the folder). Its vhost-user socket is a
// listening socket bound to an autobound abstract address (the C virtiofsd accepts on --fd; no
// path that sun_path or the box directory's depth could break), connected here before virtiofsd
// runs, so the one connection it accepts is ours: `frontend_end`.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace boxlite::engine {

inline constexpr const char* kDefaultVirtiofsd = "/usr/lib/qemu/virtiofsd";
/// At most this many volumes per box on a VM engine (a virtiofsd process each).
inline constexpr std::size_t kMaxVmVolumes = 16;

/// One host folder a virtiofsd serves: an absolute host directory, its virtio-fs tag, and
/// whether the shim exports a read-only bind of it.
struct VirtiofsShare {
    std::string tag;
    std::string host_path;
    bool read_only = false;
};

/// virtiofsd's command line for `share`, its vhost-user listening socket on `listen_fd` (argv[0]
/// is `binary`). Sandboxed in its own namespaces with pivot_root into the folder; no xattrs, no
/// remote locks.
[[nodiscard]] std::vector<std::string> virtiofsd_argv(const std::string& binary, const VirtiofsShare& share,
                                                      int listen_fd);

/// One running virtiofsd and the frontend's end of its vhost-user socket.
struct Virtiofsd {
    pid_t pid = -1;
    base::OwnedFd frontend_end;
    std::string host_path;
    bool exited = false;
};

/// Starts `binary` for `share` (needs root: a private mount namespace). The error names the
/// step that failed.
[[nodiscard]] BoxliteResult<Virtiofsd> start_virtiofsd(const std::string& binary, const VirtiofsShare& share);

/// Ends the virtiofsd processes that have not exited yet: they see EOF once their frontend is
/// gone; the ones still there after `grace` get SIGKILL. Reaps them all.
void reap_virtiofsd(std::vector<Virtiofsd>& daemons, std::chrono::milliseconds grace);

}  // namespace boxlite::engine
