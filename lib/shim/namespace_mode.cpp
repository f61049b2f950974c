// boxlite-shim namespace mode: the box is the guest agent running as PID 1 of new PID, mount,
// UTS, IPC and network namespaces, rooted in an overlayfs (read-only image rootfs below, the
// box's own upper layer in <box_dir>/upper above).
//
//   shim (host namespaces, own session; the box's init and all below it are in its cgroups)
//    └── agent, PID 1 in the box: unshare(mount/uts/ipc/net), overlay + /proc /sys /dev /tmp,
//        /proc masks, hostname, loopback up, pivot_root, rlimits, seccomp filter, capability
//        drop, then execveat() of the agent binary from an fd opened before the pivot (nothing
//        is added to the box's filesystem; jailer/sealed_exec.hpp: the box cannot write it).
//
// The agent gets PDEATHSIG=SIGKILL, so killing the shim takes the whole box down (PID 1 dying
// kills every process in its PID namespace). The listening socket is created by the shim in
// box_dir before the pivot and inherited as fd 3; paths of Unix sockets ignore network
// namespaces, so the host connects to it directly.
//
// Confinement. There is no user namespace: root in the box is root on the host kernel, so what
// separates the two is what runc and Docker rely on by default (docs/namespace-engine.md):
//   capabilities  the bounding set is cut to jailer::kBoxCapabilities (Docker's default set
//                 without MKNOD and NET_RAW; lib/jailer/capabilities.hpp says why) right before
//                 the exec, after every mount: the agent and each command, setuid programs
//                 included, hold at most those. No SYS_ADMIN (mount, namespaces), SYS_MODULE,
//                 SYS_RAWIO, SYS_BOOT, SYS_TIME, NET_ADMIN, SYS_PTRACE across users, MKNOD.
//   seccomp       a denylist (lib/jailer/seccomp_filter.hpp) installed just before the
//                 capability drop (loading it without no_new_privs needs CAP_SYS_ADMIN), so
//                 nothing of the set-up is filtered and everything after it is.
//   /proc         like runc's defaults: kcore, keys, timer_list, sched_debug, latency_stats,
//                 timer_stats read as /dev/null; acpi, asound, scsi are empty read-only tmpfs;
//                 sys, irq, bus, fs and sysrq-trigger are read-only (writing sysrq-trigger, which
//                 checks no capability, would otherwise reboot the host).
//   /sys          read-only; firmware and devices/virtual/powercap masked.
//   devices       /dev is a tmpfs holding null, zero, full, random, urandom, tty, ptmx and a
//                 private devpts; every other mount (root overlay, /tmp, /dev/shm, volumes) is
//                 nodev, so a device node that exists anyway (in a rootfs directory, a volume)
//                 cannot be opened. Together with no CAP_MKNOD: no path to a host disk.
// SecurityOptions: jailer_enabled=false (the development preset) keeps every capability and
// seccomp_enabled=false drops the filter (--capabilities all / --seccomp off); the masks and
// nodev mounts always apply.
#include "shim.hpp"

#include "capped_log.hpp"
#include "network.hpp"

#include "base/fd.hpp"
#include "base/unix_address.hpp"

#include "jailer/capabilities.hpp"
#include "jailer/cgroup.hpp"
#include "jailer/seccomp_filter.hpp"
#include "jailer/sealed_exec.hpp"

#include "net/firewall.hpp"
#include "net/pump.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/loop.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::shim {
namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

void log(const std::string& text) {
    const auto line = "boxlite-shim: " + text + "\n";
    (void)!::write(2, line.data(), line.size());
}

bool mkdir_p(const std::string& path, mode_t mode) {
    for (std::size_t i = 1; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            const auto part = path.substr(0, i);
            if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) return false;
        }
    }
    return true;
}

// runc's default masked and read-only paths (the OCI runtime spec's defaults as Docker uses them),
// plus powercap, whose energy counters leak what other tenants of the host compute.
constexpr const char* kMaskedProcPaths[] = {"/proc/acpi",        "/proc/asound",        "/proc/kcore",
                                            "/proc/keys",        "/proc/latency_stats", "/proc/timer_list",
                                            "/proc/timer_stats", "/proc/sched_debug",   "/proc/scsi"};
constexpr const char* kReadOnlyProcPaths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
constexpr const char* kMaskedSysPaths[] = {"/sys/firmware", "/sys/devices/virtual/powercap"};

/// An O_PATH descriptor, closed at scope exit.
class PathFd : public base::OwnedFd {
public:
    using OwnedFd::OwnedFd;
    /// The magic link that names this file for mount(2), whatever path led to it.
    [[nodiscard]] std::string proc_path() const { return "/proc/self/fd/" + std::to_string(get()); }
};

/// Paths inside the box root, resolved as the box will see them. The rootfs is the image's (or a
/// caller's directory), so its /proc, /tmp or a volume's mount point may be a symlink; resolved
/// with RESOLVE_IN_ROOT, "/tmp -> /etc" leads to the box's own /etc, never to the host's, and
/// every mount targets the resolved file through /proc/self/fd. (Resolving them as host paths
/// under the overlay would follow an absolute symlink out to the host: mkdir and O_CREAT there
/// before the pivot, and /proc masks applied beside the real /proc.)
class BoxRoot {
public:
    explicit BoxRoot(const std::string& dir) : root_(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)) {}
    [[nodiscard]] bool valid() const noexcept { return root_.valid(); }

    /// `path` as it is now (mounts on it included); invalid with errno (ENOENT: absent).
    [[nodiscard]] PathFd open(const std::string& path, int flags = 0) const {
        open_how how{};
        how.flags = static_cast<std::uint64_t>(O_PATH | O_CLOEXEC | flags);
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        const auto relative = path.substr(
            path.find_first_not_of('/') == std::string::npos ? path.size() : path.find_first_not_of('/'));
        return PathFd(static_cast<int>(
            ::syscall(SYS_openat2, root_.get(), relative.empty() ? "." : relative.c_str(), &how, sizeof how)));
    }

    /// The directory `path`, created (with its parents, 0755) where missing. A dangling symlink
    /// on the way is followed (within the root) and what it names is created.
    [[nodiscard]] PathFd directory(const std::string& path, int depth = 0) const {
        const auto parts = components(path);
        std::string prefix;
        PathFd at = open("/", O_DIRECTORY);
        for (std::size_t i = 0; i < parts.size(); ++i) {
            const auto parent = prefix;
            prefix += "/" + parts[i];
            PathFd next = open(prefix, O_DIRECTORY);
            if (!next.valid() && errno == ENOENT) {
                if (::mkdirat(at.get(), parts[i].c_str(), 0755) == 0) {
                    next = open(prefix, O_DIRECTORY);
                } else if (errno == EEXIST) {
                    auto target = dangling_target(at, parts[i], parent, depth);
                    if (!target) return PathFd();
                    for (std::size_t j = i + 1; j < parts.size(); ++j) *target += "/" + parts[j];
                    return directory(*target, depth + 1);
                }
            }
            if (!next.valid()) return PathFd();
            at = std::move(next);
        }
        return at;
    }

    /// The file `path` (a mount point for a file volume), created empty where missing.
    [[nodiscard]] PathFd file(const std::string& path, int depth = 0) const {
        if (PathFd existing = open(path); existing.valid() || errno != ENOENT) return existing;
        auto parts = components(path);
        if (parts.empty()) return PathFd();
        const auto name = parts.back();
        parts.pop_back();
        std::string parent_path;
        for (const auto& p : parts) parent_path += "/" + p;
        PathFd parent = directory(parent_path.empty() ? "/" : parent_path, depth);
        if (!parent.valid()) return PathFd();
        // O_EXCL|O_NOFOLLOW: never create through a symlink; a dangling one is resolved here.
        const int fd = ::openat(parent.get(), name.c_str(), O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ::close(fd);
        } else if (errno == EEXIST) {
            if (PathFd existing = open(path); existing.valid() || errno != ENOENT) return existing;
            auto target = dangling_target(parent, name, parent_path, depth);
            return target ? file(*target, depth + 1) : PathFd();
        } else {
            return PathFd();
        }
        return open(path);
    }

private:
    static std::vector<std::string> components(const std::string& path) {
        std::vector<std::string> parts;
        for (std::size_t pos = 0; pos <= path.size();) {
            auto end = path.find('/', pos);
            if (end == std::string::npos) end = path.size();
            if (end > pos && path.compare(pos, end - pos, ".") != 0) parts.push_back(path.substr(pos, end - pos));
            pos = end + 1;
        }
        return parts;
    }

    /// Where the symlink `name` in directory `at` (reached as `parent`) points, as a path in
    /// the root; nullopt (errno set) if it is not a symlink or the chain is too long.
    static std::optional<std::string> dangling_target(const PathFd& at, const std::string& name,
                                                      const std::string& parent, int depth) {
        if (depth >= 40) {
            errno = ELOOP;
            return std::nullopt;
        }
        char link[4096];
        const auto n = ::readlinkat(at.get(), name.c_str(), link, sizeof link - 1);
        if (n <= 0) {
            if (n == 0 || errno == EINVAL) errno = EEXIST;  // not a symlink: something raced us
            return std::nullopt;
        }
        const std::string target(link, static_cast<std::size_t>(n));
        return target.front() == '/' ? target : parent + "/" + target;
    }

    PathFd root_;
};

/// The mount flags of the mount holding `fd` that a bind remount must repeat to keep them.
unsigned long kept_mount_flags(const PathFd& fd) {
    struct statvfs vfs {};
    if (::fstatvfs(fd.get(), &vfs) != 0) return 0;
    unsigned long flags = 0;
    if ((vfs.f_flag & ST_RDONLY) != 0) flags |= MS_RDONLY;
    if ((vfs.f_flag & ST_NOSUID) != 0) flags |= MS_NOSUID;
    if ((vfs.f_flag & ST_NODEV) != 0) flags |= MS_NODEV;
    if ((vfs.f_flag & ST_NOEXEC) != 0) flags |= MS_NOEXEC;
    if ((vfs.f_flag & ST_NOATIME) != 0) flags |= MS_NOATIME;
    if ((vfs.f_flag & ST_NODIRATIME) != 0) flags |= MS_NODIRATIME;
    if ((vfs.f_flag & ST_RELATIME) != 0) flags |= MS_RELATIME;
    return flags;
}

/// Mounts a new `type` file system on the directory `target` of the box (created if missing).
std::string mount_fs(const BoxRoot& root, const char* source, const std::string& target, const char* type,
                     unsigned long flags, const char* data) {
    const PathFd at = root.directory(target);
    if (!at.valid()) return errno_text("creating " + target + " in the box");
    if (::mount(source, at.proc_path().c_str(), type, flags, data) != 0) return errno_text("mounting " + target);
    return {};
}

/// Hides `path` (absent paths need no hiding): a directory under an empty read-only tmpfs, a
/// file under the box's /dev/null (reads see nothing, writes go nowhere).
std::string mask(const BoxRoot& root, const std::string& path, const PathFd& null_device) {
    const PathFd at = root.open(path);
    if (!at.valid()) return errno == ENOENT ? std::string() : errno_text("opening " + path);
    struct stat st {};
    if (::fstat(at.get(), &st) != 0) return errno_text("stat " + path);
    const bool ok = S_ISDIR(st.st_mode) ? ::mount("tmpfs", at.proc_path().c_str(), "tmpfs",
                                                  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555") == 0
                                        : ::mount(null_device.proc_path().c_str(), at.proc_path().c_str(), nullptr,
                                                  MS_BIND, nullptr) == 0;
    return ok ? std::string() : errno_text("masking " + path);
}

/// Remounts the mount that now sits on `path` with `extra_flags` added to its own. The path is opened
/// afresh: a descriptor from before a mount on it still names what lies underneath.
std::string remount_with(const BoxRoot& root, const std::string& path, unsigned long extra_flags, const char* what) {
    const PathFd at = root.open(path);
    if (!at.valid() || ::mount(nullptr, at.proc_path().c_str(), nullptr,
                               MS_BIND | MS_REMOUNT | extra_flags | kept_mount_flags(at), nullptr) != 0) {
        return errno_text(what);
    }
    return {};
}

/// Binds `path` of the box onto itself and makes that read-only (absent paths are skipped).
std::string make_read_only(const BoxRoot& root, const std::string& path) {
    {
        const PathFd at = root.open(path);
        if (!at.valid()) return errno == ENOENT ? std::string() : errno_text("opening " + path);
        if (::mount(at.proc_path().c_str(), at.proc_path().c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
            return errno_text("binding " + path + " to make it read-only");
        }
    }
    return remount_with(root, path, MS_RDONLY, ("making " + path + " read-only").c_str());
}

/// Volumes. The host side is opened once (what is checked is what is mounted) and the target is
/// resolved inside the box root (BoxRoot: RESOLVE_IN_ROOT, so a symlink at or above the mount
/// point leads into the box, never out to the host), created where missing. The mount is a copy
/// of the host tree (open_tree), its flags set on the whole copy before it is attached
/// (mount_setattr with AT_RECURSIVE: a read-only volume has no writable submount, and there is no
/// moment at which the box could see it writable), then attached through the target's descriptor
/// (move_mount). Every volume is nodev; read-only adds MS_RDONLY. Root in the box cannot lift it:
/// it has no CAP_SYS_ADMIN and mount(2), mount_setattr(2) and friends are in the seccomp filter.
/// Kernels before 5.12 (no mount_setattr) get the classic bind plus a remount of its top.
std::string mount_volume(const BoxRoot& root, const VolumeMount& v) {
    if (v.guest_path.empty() || v.guest_path.front() != '/')
        return "volume guest path '" + v.guest_path + "' is not absolute";
    const PathFd source(::open(v.host_path.c_str(), O_PATH | O_CLOEXEC));
    if (!source.valid()) return errno_text("volume host path '" + v.host_path + "'");
    struct stat st {};
    if (::fstat(source.get(), &st) != 0) return errno_text("stat of volume host path '" + v.host_path + "'");
    const PathFd target = S_ISDIR(st.st_mode) ? root.directory(v.guest_path) : root.file(v.guest_path);
    if (!target.valid()) return errno_text("creating the volume mount point " + v.guest_path + " in the box");
    const auto what = "volume " + v.host_path + " at " + v.guest_path;

    const base::OwnedFd tree(
        static_cast<int>(::syscall(SYS_open_tree, source.get(), "",
                                   OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE)));
    if (tree.valid()) {
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_NODEV | (v.read_only ? MOUNT_ATTR_RDONLY : 0U);
        attr.propagation = MS_PRIVATE;
        if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
            if (errno != ENOSYS) return errno_text("setting the flags of " + what);
        } else {
            if (::syscall(SYS_move_mount, tree.get(), "", target.get(), "",
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
                return errno_text("mounting " + what);
            }
            return {};
        }
    } else if (errno != ENOSYS) {
        return errno_text("copying the mount tree of " + what);
    }
    // Fallback: bind, then remount the top with nodev (and read-only); the host mount's own
    // nosuid/noexec/... are kept, a remount would otherwise clear them.
    if (::mount(source.proc_path().c_str(), target.proc_path().c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
        return errno_text("bind-mounting " + what);
    }
    const unsigned long extra = MS_NODEV | (v.read_only ? static_cast<unsigned long>(MS_RDONLY) : 0UL);
    return remount_with(root, v.guest_path, extra, ("restricting " + what).c_str());
}

/// The image of the box's disk: created sparse and formatted ext4 on the first start (under a
/// temporary name, so a shim killed half way leaves nothing that looks ready), kept afterwards:
/// the box's files survive stop and start.
std::string prepare_disk_image(const std::string& image, std::uint64_t bytes) {
    if (::access(image.c_str(), F_OK) == 0) return {};
    const auto partial = image + ".partial";
    ::unlink(partial.c_str());
    {
        const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) return errno_text("creating the disk image " + partial);
        const bool sized = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0;
        const int saved = errno;
        ::close(fd);
        errno = saved;
        if (!sized) return errno_text("sizing the disk image " + partial);
    }
    const pid_t pid = ::fork();
    if (pid < 0) return errno_text("fork for mkfs.ext4");
    if (pid == 0) {
        const int devnull = ::open("/dev/null", O_RDWR);
        if (devnull >= 0) ::dup2(devnull, 1);
        // Lazy init: the inode tables and journal are zeroed by the kernel later, not written now.
        for (const char* mkfs : {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"}) {
            ::execl(mkfs, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                    partial.c_str(), static_cast<char*>(nullptr));
        }
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ::unlink(partial.c_str());
        return "mkfs.ext4 of the disk image " + partial + " failed (status " + std::to_string(status) +
               "; see shim.log)";
    }
    if (::rename(partial.c_str(), image.c_str()) != 0) return errno_text("renaming " + partial);
    return {};
}

/// Attaches `image` to a free loop device with LO_FLAGS_AUTOCLEAR: the device detaches itself
/// once its last user (the mount) is gone, so a killed box leaks no loop device. Returns the
/// device's fd (or -1, `error` set).
int attach_loop_device(const std::string& image, std::string& error) {
    const base::OwnedFd file(::open(image.c_str(), O_RDWR | O_CLOEXEC));
    if (!file.valid()) {
        error = errno_text("opening the disk image " + image);
        return -1;
    }
    const base::OwnedFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    if (!control.valid()) {
        error = errno_text("opening /dev/loop-control");
        return -1;
    }
    for (int attempt = 0; attempt < 64; ++attempt) {
        const int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
        if (number < 0) {
            error = errno_text("finding a free loop device");
            return -1;
        }
        const auto device = "/dev/loop" + std::to_string(number);
        const int loop = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
        if (loop < 0) {
            error = errno_text("opening " + device);
            if (errno == ENOENT) continue;  // udev has not made the node yet
            return -1;
        }
        loop_config config{};
        config.fd = static_cast<__u32>(file.get());
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), image.c_str(), LO_NAME_SIZE - 1);
        if (::ioctl(loop, LOOP_CONFIGURE, &config) == 0) return loop;
        const int saved = errno;
        ::close(loop);
        if (saved != EBUSY) {  // EBUSY: another box took this one between GET_FREE and now
            errno = saved;
            error = errno_text("attaching " + image + " to " + device);
            return -1;
        }
    }
    error = "no free loop device for " + image + " after 64 attempts";
    return -1;
}

/// Keeps the OOM killer off the shim: it is outside the box's cgroups, but a global OOM must not
/// pick it over the box either. Raising the value later is always allowed; this also sets the
/// floor (oom_score_adj_min) of this process to -1000, which the box's init lifts again below.
bool protect_shim_from_oom_killer() {
    if (!jailer::CgroupSet::write("/proc/self/oom_score_adj", "-1000")) {
        log(errno_text("warning: setting the shim's oom_score_adj to -1000"));
        return false;
    }
    return true;
}

/// The agent (the box's PID 1) is never the OOM killer's choice inside its memory cgroup, while
/// the box's commands can be (the agent resets them to 0 before each exec) and cannot lower
/// themselves again. Writing oom_score_adj with CAP_SYS_RESOURCE also sets the floor that a
/// process without that capability may go down to, and the floor is inherited: so first 0 (the
/// floor for everything in the box), then -1000 through the legacy oom_adj file (-17 = disabled),
/// which changes the value and not the floor. Without the legacy file, -1000 and its floor.
void protect_agent_from_oom_killer() {
    (void)jailer::CgroupSet::write("/proc/self/oom_score_adj", "0");
    if (!jailer::CgroupSet::write("/proc/self/oom_adj", "-17") &&
        !jailer::CgroupSet::write("/proc/self/oom_score_adj", "-1000")) {
        log(errno_text("warning: setting the agent's oom_score_adj to -1000"));
    }
}

/// Writes `text` to `path` in the box (through RESOLVE_IN_ROOT: a symlinked /etc/hosts leads to
/// the box's own file), replacing what was there.
std::string write_box_file(const BoxRoot& root, const std::string& path, const std::string& text) {
    const PathFd parent = root.directory(path.substr(0, path.rfind('/')));
    if (!parent.valid()) return errno_text("creating the folder of " + path + " in the box");
    open_how how{};
    how.flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
    how.mode = 0644;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
    const auto name = path.substr(path.rfind('/') + 1);
    int fd = static_cast<int>(::syscall(SYS_openat2, parent.get(), name.c_str(), &how, sizeof how));
    if (fd < 0 && errno == ELOOP) {
        // A symlink (Ubuntu's resolv.conf points into /run): replaced by the box's own file.
        if (::unlinkat(parent.get(), name.c_str(), 0) == 0) {
            fd = static_cast<int>(::syscall(SYS_openat2, parent.get(), name.c_str(), &how, sizeof how));
        }
    }
    if (fd < 0) return errno_text("writing " + path + " in the box");
    const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    return written ? std::string() : errno_text("writing " + path + " in the box");
}

/// The box's names: itself, and host.boxlite.internal (the host's loopback, through the pump's
/// rewrite of 192.168.127.254); DNS is the gateway, which passt forwards to the host's resolver.
std::string write_network_files(const BoxRoot& root, const std::string& hostname) {
    const std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n192.168.127.2\t" +
                              hostname + "\n192.168.127.254\thost.boxlite.internal\n";
    if (auto error = write_box_file(root, "/etc/hosts", hosts); !error.empty()) return error;
    return write_box_file(root, "/etc/resolv.conf", "nameserver 192.168.127.1\n");
}

/// Everything the box's PID 1 does before it becomes the agent. Returns an error text, or
/// never returns on success.
std::string become_box_init(const ShimOptions& o, int listen_fd, int agent_ready_fd, int agent_fd, int log_fd,
                            const std::string& memory_events, const std::string& memory_tasks, int tap_channel,
                            int cgroups_joined_fd) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return errno_text("PR_SET_PDEATHSIG");
    protect_agent_from_oom_killer();
    if (::unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) != 0) return errno_text("unshare");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno_text("making / private");

    // With a disk size, the writable layer lives on the box's own ext4 file system, mounted in
    // this mount namespace only: when the box ends, however it ends (a kill -9 of the shim
    // included), the namespace goes, the overlay and the ext4 mount with it, and the loop device
    // detaches itself (AUTOCLEAR). No mount is ever left on the host to clean up.
    std::string layer_root = o.box_dir;
    if (o.disk_bytes) {
        layer_root = o.box_dir + "/disk";
        if (!mkdir_p(layer_root, 0700)) return errno_text("creating " + layer_root);
        std::string error;
        const int loop = attach_loop_device(o.box_dir + "/disk.ext4", error);
        if (loop < 0) return error;
        const auto device = "/proc/self/fd/" + std::to_string(loop);
        char name[64];
        const auto n = ::readlink(device.c_str(), name, sizeof name - 1);
        const std::string source = n > 0 ? std::string(name, static_cast<std::size_t>(n)) : device;
        const bool mounted = ::mount(source.c_str(), layer_root.c_str(), "ext4", MS_NODEV, nullptr) == 0;
        const int saved = errno;
        ::close(loop);
        errno = saved;
        if (!mounted) return errno_text("mounting the box's disk " + source + " at " + layer_root);
    }
    const auto upper = layer_root + "/upper";
    const auto work = layer_root + "/work";
    const auto merged = o.box_dir + "/merged";
    for (const auto& dir : {upper, work, merged}) {
        if (!mkdir_p(dir, 0755)) return errno_text("creating " + dir);
    }
    const auto overlay_options = "lowerdir=" + o.rootfs + ",upperdir=" + upper + ",workdir=" + work;
    // A kernel before 5.10 has no volatile overlays (EINVAL): then the upper layer is synced.
    const bool mounted_volatile = o.volatile_upper && ::mount("overlay", merged.c_str(), "overlay", MS_NODEV,
                                                              (overlay_options + ",volatile").c_str()) == 0;
    if (!mounted_volatile && ::mount("overlay", merged.c_str(), "overlay", MS_NODEV, overlay_options.c_str()) != 0) {
        return errno_text("mounting the overlay root (" + overlay_options + ")");
    }
    const BoxRoot root(merged);
    if (!root.valid()) return errno_text("opening the box root " + merged);
    std::string err;
    // /dev first: the masks below are binds of the box's own /dev/null.
    if (!(err = mount_fs(root, "tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")).empty())
        return err;
    {
        const PathFd dev = root.open("/dev", O_DIRECTORY);
        if (!dev.valid()) return errno_text("opening /dev in the box");
        struct Node {
            const char* name;
            unsigned major, minor;
        };
        for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7}, Node{"random", 1, 8},
                              Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
            if (::mknodat(dev.get(), n.name, S_IFCHR | 0666, makedev(n.major, n.minor)) != 0) {
                return errno_text(std::string("mknod /dev/") + n.name);
            }
            ::fchmodat(dev.get(), n.name, 0666, 0);  // umask-proof
        }
        for (auto [link, target] :
             {std::pair{"ptmx", "pts/ptmx"}, std::pair{"fd", "/proc/self/fd"}, std::pair{"stdin", "/proc/self/fd/0"},
              std::pair{"stdout", "/proc/self/fd/1"}, std::pair{"stderr", "/proc/self/fd/2"}}) {
            if (::symlinkat(target, dev.get(), link) != 0) return errno_text(std::string("symlink /dev/") + link);
        }
    }
    if (!(err = mount_fs(root, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                         "newinstance,ptmxmode=0666,mode=0620"))
             .empty()) {
        return err;
    }
    if (!(err = mount_fs(root, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")).empty())
        return err;
    const PathFd null_device = root.open("/dev/null");
    if (!null_device.valid()) return errno_text("opening the box's /dev/null");

    if (!(err = mount_fs(root, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr)).empty()) return err;
    for (const char* path : kMaskedProcPaths) {
        if (!(err = mask(root, path, null_device)).empty()) return err;
    }
    for (const char* path : kReadOnlyProcPaths) {
        if (!(err = make_read_only(root, path)).empty()) return err;
    }
    if (!(err = mount_fs(root, "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, nullptr))
             .empty()) {
        // sysfs can be refused in some nested setups; the box works without it.
        log("warning: " + err + " (the box has no /sys)");
    } else {
        for (const char* path : kMaskedSysPaths) {
            if (!(err = mask(root, path, null_device)).empty()) return err;
        }
    }
    if (!(err = mount_fs(root, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")).empty()) return err;
    for (const auto& v : o.volumes) {
        if (auto error = mount_volume(root, v); !error.empty()) return error;
    }

    if (::sethostname(o.hostname.data(), o.hostname.size()) != 0) return errno_text("sethostname");
    {
        // Loopback only: the new network namespace has nothing else (networking comes later).
        const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
        if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return errno_text("reading loopback flags");
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
        if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) return errno_text("bringing loopback up");
        ::close(s);
    }
    if (o.network) {
        // eth0, made here while the box still has every capability, and handed to the shim: the
        // frames go through the shim's firewall, which nothing in the box can reconfigure.
        std::string error;
        const int tap = create_box_tap(error);
        if (tap < 0) return error;
        const bool sent = send_fd(tap_channel, tap);
        ::close(tap);
        if (!sent) return errno_text("handing the box's eth0 to the shim");
        if (auto names = write_network_files(root, o.hostname); !names.empty()) return names;
    }
    if (tap_channel >= 0) ::close(tap_channel);

    // The agent tells an OOM-killed command from a killed one by the cgroup's oom_kill count;
    // opened now, as the box's /sys has no cgroup file system.
    // Moved above 9 so that the dup2s to 3, 4 and 5 below can neither overwrite it nor be no-ops.
    int memory_events_fd = memory_events.empty() ? -1 : ::open(memory_events.c_str(), O_RDONLY | O_CLOEXEC);
    if (memory_events_fd >= 0) memory_events_fd = ::fcntl(memory_events_fd, F_DUPFD_CLOEXEC, 10);
    // The memory cgroup's `tasks`, when the agent is kept out of it (see run_namespace_mode).
    int memory_tasks_fd = memory_tasks.empty() ? -1 : ::open(memory_tasks.c_str(), O_WRONLY | O_CLOEXEC);
    if (memory_tasks_fd >= 0) memory_tasks_fd = ::fcntl(memory_tasks_fd, F_DUPFD_CLOEXEC, 10);
    if (::chdir(merged.c_str()) != 0) return errno_text("chdir to the box root");
    // pivot_root(".", "."): the old root ends up stacked under the new one and is detached at once.
    if (::syscall(SYS_pivot_root, ".", ".") != 0) return errno_text("pivot_root");
    if (::umount2(".", MNT_DETACH) != 0) return errno_text("detaching the host root");
    if (::chdir("/") != 0) return errno_text("chdir /");

    auto limit = [](int resource, const std::optional<std::uint64_t>& value) {
        if (!value) return;
        rlimit rl{static_cast<rlim_t>(*value), static_cast<rlim_t>(*value)};
        ::setrlimit(resource, &rl);
    };
    limit(RLIMIT_NOFILE, o.nofile);
    limit(RLIMIT_FSIZE, o.fsize);
    limit(RLIMIT_CPU, o.cpu_time);
    // Binds the box's non-root users only (the kernel exempts uid 0), counted per uid host-wide
    // as there is no user namespace; pids.max in the box's cgroup is what bounds root.
    limit(RLIMIT_NPROC, o.pids);

    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // Every descriptor the agent gets, and the agent binary's, first moved above 9: a dup2 to 3..6
    // must not overwrite a source still to be placed (their numbers depend on what the shim had
    // open, e.g. whether there is a watchdog pipe).
    for (int* fd : {&listen_fd, &agent_ready_fd, &agent_fd}) {
        if ((*fd = ::fcntl(*fd, F_DUPFD_CLOEXEC, 10)) < 0) return errno_text("moving a descriptor above 9");
    }
    if (cgroups_joined_fd >= 0 && (cgroups_joined_fd = ::fcntl(cgroups_joined_fd, F_DUPFD_CLOEXEC, 10)) < 0)
        return errno_text("moving a descriptor above 9");
    if (::dup2(listen_fd, 3) < 0 || ::dup2(agent_ready_fd, 4) < 0) return errno_text("dup2");
    if (memory_events_fd >= 0 && ::dup2(memory_events_fd, 5) < 0) return errno_text("dup2");
    if (memory_tasks_fd >= 0 && ::dup2(memory_tasks_fd, 6) < 0) return errno_text("dup2");
    if (memory_tasks_fd >= 0 && cgroups_joined_fd >= 0 && ::dup2(cgroups_joined_fd, 7) < 0) return errno_text("dup2");

    // Last, so that no step of the set-up above is filtered or lacks a capability.
    if (o.seccomp) {
        if (auto ok = jailer::install_box_seccomp_filter({}); !ok) return ok.error().message();
    }
    if (!o.all_capabilities) {
        if (auto ok = jailer::restrict_capabilities(jailer::kBoxCapabilities); !ok) return ok.error().message();
    }
    // Everything else is closed at exec (CLOEXEC); 3 to 7 are the agent's.
    std::vector<std::string> args = {"boxlite-agent", "--listen-fd", "3", "--ready-fd", "4"};
    if (memory_events_fd >= 0) args.insert(args.end(), {"--memory-events-fd", "5"});
    if (memory_tasks_fd >= 0) args.insert(args.end(), {"--memory-cgroup-fd", "6"});
    if (memory_tasks_fd >= 0 && cgroups_joined_fd >= 0) args.insert(args.end(), {"--cgroups-joined-fd", "7"});
    if (!o.workdir.empty()) args.insert(args.end(), {"--workdir", o.workdir});
    if (!o.user.empty()) args.insert(args.end(), {"--user", o.user});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_storage = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                            "HOME=/root", "HOSTNAME=" + o.hostname};
    env_storage.insert(env_storage.end(), o.env.begin(), o.env.end());
    std::vector<char*> envp;
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    ::syscall(SYS_execveat, agent_fd, "", argv.data(), envp.data(), AT_EMPTY_PATH);
    return errno_text("executing the agent");
}

int listen_on(const std::string& path, std::string& error) {
    boxlite::base::UnixAddress addr;
    if (!boxlite::base::UnixAddress::make(path, addr, error)) return -1;
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::unlink(path.c_str());
    if (fd < 0 || ::bind(fd, addr.get(), addr.size()) != 0 || ::listen(fd, 128) != 0) {
        error = errno_text("listening on " + path);
        return -1;
    }
    ::chmod(path.c_str(), 0600);
    return fd;
}

/// Sends the port forwarder the box's network namespace (its init `box` is in it by the time
/// the agent is ready) and waits for its word that it has entered it (10 s at most).
bool hand_over_box_network(int channel, pid_t box, std::string& error) {
    const int network = ::open(("/proc/" + std::to_string(box) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
    if (network < 0) {
        error = errno_text("opening the box's network namespace for its published TCP ports");
        return false;
    }
    const bool sent = send_fd(channel, network);
    ::close(network);
    char answer[512] = {};
    pollfd ready{channel, POLLIN, 0};
    const ssize_t n = sent && ::poll(&ready, 1, 10'000) == 1 ? ::recv(channel, answer, sizeof answer - 1, 0) : -1;
    if (n == 1 && answer[0] == 'k') return true;
    error = n > 0 ? std::string(answer, static_cast<std::size_t>(n))
                  : "the port forwarder of the published TCP ports did not start (see shim.log)";
    return false;
}

}  // namespace

void report(int& ready_fd, const std::string& line) {
    if (ready_fd < 0) return;
    const auto text = line + "\n";
    (void)!::write(ready_fd, text.data(), text.size());
    ::close(ready_fd);
    ready_fd = -1;
}

int run_namespace_mode(const ShimOptions& o) {
    // Nothing in the box may read the shim's memory or descriptors, or trace it (box processes
    // run as root, so only dumpability and the missing CAP_SYS_PTRACE keep them out).
    ::prctl(PR_SET_DUMPABLE, 0);
    // Where -1000 cannot be had (no CAP_SYS_RESOURCE), the agent stays out of the box's memory
    // cgroup instead (cgroup v1) and moves each command into it before the exec.
    const bool oom_protected = protect_shim_from_oom_killer();
    int ready_fd = o.ready_fd;
    auto fail_start = [&](const std::string& message) {
        log("start failed: " + message);
        report(ready_fd, "error " + message);
        return 1;
    };
    if (o.box_dir.empty() || o.rootfs.empty() || o.agent.empty() || o.socket.empty() || o.hostname.empty()) {
        return fail_start("namespace mode needs --box-dir, --rootfs, --agent, --socket and --hostname");
    }
    if (o.rootfs.find_first_of(",:") != std::string::npos || o.box_dir.find_first_of(",:") != std::string::npos) {
        return fail_start("rootfs and box directory paths must not contain ',' or ':' (overlayfs option syntax)");
    }
    struct stat st {};
    if (::stat(o.rootfs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return fail_start("rootfs '" + o.rootfs + "' is not a directory");
    if (o.disk_bytes) {
        if (auto error = prepare_disk_image(o.box_dir + "/disk.ext4", *o.disk_bytes); !error.empty())
            return fail_start(error);
    }

    // The box's cgroups. The box's init joins them itself as it starts, before anything else, in
    // ways that skip the kernel's global attach lock (a write to cgroup.procs would wait for an
    // RCU grace period, 7-16 ms here: jailer::CgroupSet::SelfJoin). Nothing runs in the box before
    // the agent reports ready, so every command and all its children are inside. The shim itself
    // stays out (it is not the box's workload).
    // cgroup.info (read by NamespaceEngine for metrics and clean-up) is written once the init has
    // joined, so it names only cgroups the box is really in and limits that really bind it.
    auto cgroups = jailer::CgroupSet::create(o.box_id, {o.memory_bytes, o.cpus, o.pids});
    std::optional<net::EgressFirewall> firewall;
    if (o.network) {
        auto allow = net::AllowList::parse(o.allow_net);
        if (!allow) return fail_start(allow.error().message());
        firewall.emplace(std::move(*allow));
        log("box " + o.box_id + ": network: eth0 192.168.127.2/24 through passt" +
            (o.allow_net.empty() ? std::string(", unrestricted")
                                 : ", allowed: " + std::to_string(o.allow_net.size()) + " rule(s)"));
    } else {
        log("box " + o.box_id + ": network: disabled (loopback only)");
    }
    log("box " + o.box_id + ": capabilities: " +
        (o.all_capabilities ? std::string("all (SecurityOptions: jailer disabled)")
                            : jailer::capability_names(jailer::kBoxCapabilities)) +
        "; seccomp filter " + (o.seccomp ? "on" : "off (SecurityOptions: seccomp disabled)"));

    std::string error;
    const int listen_fd = listen_on(o.socket, error);
    if (listen_fd < 0) return fail_start(error);
    // The agent runs from a file the box can execute and never write, opened before the pivot
    // (jailer/sealed_exec.hpp): the binary through a read-only overlay that is never attached to
    // any mount namespace, else a sealed copy in memory.
    auto sealed = jailer::open_sealed_executable(o.agent, o.box_dir, error);
    if (!sealed.fd) return fail_start(error);
    if (sealed.method == jailer::SealMethod::MemfdCopy) {
        log("box " + o.box_id + ": agent: run from a sealed copy in memory (no read-only overlay: " + sealed.fallback +
            ")");
    }
    const int agent_fd = sealed.fd.release();
    // The agent's stdout and stderr are a pipe that we copy into agent.log, capped and rotated:
    // a file descriptor of agent.log itself in the box would let it grow without bound.
    CappedLog agent_log;
    if (!agent_log.open(o.box_dir + "/agent.log", o.log_max_bytes)) return fail_start(errno_text("opening agent.log"));
    int log_pipe[2];
    if (::pipe2(log_pipe, O_CLOEXEC) != 0) return fail_start(errno_text("pipe"));
    int log_read_fd = log_pipe[0];
    ::fcntl(log_read_fd, F_SETFL, O_NONBLOCK);
    // Copies what the agent wrote so far; closes the pipe at its end.
    auto drain_log = [&] {
        char buf[65536];
        while (log_read_fd >= 0) {
            const auto n = ::read(log_read_fd, buf, sizeof buf);
            if (n > 0) {
                agent_log.write(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n == 0) log_read_fd = (::close(log_read_fd), -1);
            break;
        }
    };
    int agent_ready[2];
    int child_error[2];
    if (::pipe2(agent_ready, O_CLOEXEC) != 0 || ::pipe2(child_error, O_CLOEXEC) != 0)
        return fail_start(errno_text("pipe"));

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    const int signal_fd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    // The network: the frame pump starts first, in the shim's PID namespace (not the box's, where
    // the box's root could signal it; and a process that unshared its PID namespace can no longer
    // start threads, so the pump is a process of its own). passt gets its end of a socketpair, the
    // pump the other; the box's init sends eth0 to the pump over tap_channel.
    //
    // The pump starts passt (docs/performance.md, run --rm): at once when the box publishes ports
    // (passt listens for them), else only when the box sends its first frame. passt's own start
    // (about 10 ms of CPU, mostly zeroing its buffers) is then off a box's start path, and a box
    // that never uses the network never starts it. Nothing is lost meanwhile: the box's frames
    // wait in eth0's queue until the pump reads them, and the socketpair holds what the pump
    // writes until passt reads it, so a box's first connection does not depend on when passt got
    // ready. Nothing outside the box can reach it before passt runs, as passt is its only way in.
    //
    // The pump dies with the shim (PDEATHSIG); passt's keeper with the pump, and passt with it
    // (network.hpp, start_passt).
    int tap_channel[2] = {-1, -1};
    pid_t pump_pid = -1;
    // Published TCP ports: bound here (a port taken since the engine's check fails the start,
    // naming it) and forwarded by a process of their own with splice(), straight into the box's
    // network namespace (lib/net/port_forwarder.hpp); passt carries only the UDP ones.
    ShimOptions passt_options = o;
    passt_options.publish.clear();
    std::vector<net::ForwardedPort> forwarded;
    for (const auto& port : o.publish) {
        if (port.udp) {
            passt_options.publish.push_back(port);
            continue;
        }
        auto bound = bind_published_tcp_port(port);
        if (!bound) return fail_start(bound.error().message());
        forwarded.push_back(std::move(*bound));
    }
    int forward_channel[2] = {-1, -1};
    pid_t forwarder_pid = -1;
    if (!forwarded.empty()) {
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, forward_channel) != 0)
            return fail_start(errno_text("socketpair for the port forwarder"));
        forwarder_pid = fork_tied_to_parent();
        if (forwarder_pid == 0) {
            std::vector<int> keep = {forward_channel[1]};
            for (const auto& port : forwarded) keep.push_back(port.listener.get());
            close_descriptors_from(3, keep);
            run_port_forwarder(forward_channel[1], std::move(forwarded), o.box_id);
        }
        ::close(forward_channel[1]);
        forwarded.clear();  // the forwarder holds the listeners now
        if (forwarder_pid < 0) return fail_start(errno_text("fork for the port forwarder"));
    }
    // The box's connections to host.boxlite.internal: once the host has accepted one on a port,
    // the pump starts a forwarder that attaches a connect hook to the box's cgroup, and the box's
    // later connections to that port are spliced to the host's loopback instead of going through
    // passt (docs/networking.md, "The host alias, spliced"). Nothing of it is on the box's start
    // path. Where it cannot be had (no cgroup v2 hierarchy, no BPF), all goes through passt.
    std::string alias_cgroup;
    if (o.network && firewall->allow_list().allows_any_host_alias_port()) {
        alias_cgroup = cgroups.bpf_dir();
        if (alias_cgroup.empty()) {
            log("box " + o.box_id +
                ": network: host.boxlite.internal goes through passt only: no cgroup v2 "
                "hierarchy for the box's cgroup");
        }
    }
    if (o.network) {
        if (find_passt(o, error).empty()) return fail_start(error);  // now, not at the box's first frame
        int passt_pair[2] = {-1, -1};
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, tap_channel) != 0 ||
            ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, passt_pair) != 0) {
            return fail_start(errno_text("socketpair for the box network"));
        }
        size_passt_socket_pair(passt_pair[0], passt_pair[1]);
        pump_pid = fork_tied_to_parent();
        if (pump_pid == 0) {
            // Nothing of the shim's but the three sockets: the ready pipe, the box lock and the
            // watchdog must close when the shim closes them.
            close_descriptors_from(3, {tap_channel[0], passt_pair[0], passt_pair[1]});
            std::string passt_error;
            auto start = [&] {
                const pid_t passt = start_passt(passt_options, passt_pair[1], passt_error);
                ::close(passt_pair[1]);
                if (passt < 0) log("box " + o.box_id + ": network: " + passt_error);
                return passt >= 0;
            };
            if (!passt_options.publish.empty() && !start()) ::_exit(1);
            const int tap = receive_fd(tap_channel[0]);
            if (tap < 0) ::_exit(0);
            if (passt_options.publish.empty()) {
                pollfd first_frame{tap, POLLIN, 0};
                while (::poll(&first_frame, 1, -1) < 0 && errno == EINTR) {}
                if (!start()) ::_exit(1);
            }
            std::optional<HostAliasSplicer> splicer;
            if (!alias_cgroup.empty()) {
                splicer.emplace(o.box_id, alias_cgroup, tap);
                firewall->on_host_alias_accepted([&](std::uint16_t port) { splicer->accepted(port); });
            }
            net::FramePump pump(tap, passt_pair[0], *firewall, net::BoxFraming::VnetHeader);
            pump.queue_to_passt(box_arp_request());
            auto result = pump.run(-1);
            if (!result) log("box " + o.box_id + ": network pump ended: " + result.error().message());
            ::_exit(result ? 0 : 1);
        }
        ::close(tap_channel[0]);
        ::close(passt_pair[0]);
        ::close(passt_pair[1]);
        if (pump_pid < 0) return fail_start(errno_text("fork for the network pump"));
    }
    // The pump's exit is quick (eth0 is persistent, so its last close does not unregister it:
    // network.cpp), and its passt goes with it.
    auto stop_network = [&] {
        for (pid_t* pid : {&pump_pid, &forwarder_pid}) {
            if (*pid <= 0) continue;
            ::kill(*pid, SIGKILL);
            ::waitpid(*pid, nullptr, 0);
            *pid = -1;
        }
        if (forward_channel[0] >= 0) forward_channel[0] = (::close(forward_channel[0]), -1);
    };

    if (::unshare(CLONE_NEWPID) != 0) {
        stop_network();
        return fail_start(errno_text("unshare(CLONE_NEWPID)"));
    }
    // Where the agent stays out of the memory cgroup, it forks each command's process ahead of
    // time (a spare that joins the memory cgroup early: guest/agent.cpp), but only once it is in
    // the box's other cgroups, which happens below while the box's init sets up: this pipe says
    // when. Best effort: without it the agent forks no spare before the first command.
    const bool agent_outside_memory = !oom_protected && !cgroups.v2() && !cgroups.memory_dir().empty();
    int cgroups_joined[2] = {-1, -1};
    if (agent_outside_memory && ::pipe2(cgroups_joined, O_CLOEXEC) != 0) cgroups_joined[0] = cgroups_joined[1] = -1;
    // The box's init joins its cgroups itself, without the kernel's global attach lock
    // (jailer::CgroupSet::SelfJoin): born in the v2 one, then into each v1 one through its `tasks`,
    // before anything else; the shim has settled the joins when this returns.
    const pid_t child = cgroups.fork_self_joined(agent_outside_memory).pid;
    if (child < 0) {
        for (const int fd : cgroups_joined) {
            if (fd >= 0) ::close(fd);
        }
        return fail_start(errno_text("fork"));
    }
    if (child == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        ::close(agent_ready[0]);
        ::close(child_error[0]);
        ::close(log_pipe[0]);
        agent_log.close();
        std::string memory_events, memory_tasks;
        if (!cgroups.memory_dir().empty()) {
            memory_events = cgroups.memory_dir() + (cgroups.v2() ? "/memory.events" : "/memory.oom_control");
            // `tasks`: each single-threaded command process moves itself in ("0"), without the
            // global attach lock (see SelfJoin).
            if (!oom_protected && !cgroups.v2()) memory_tasks = cgroups.memory_dir() + "/tasks";
        }
        if (cgroups_joined[1] >= 0) ::close(cgroups_joined[1]);
        const auto message = become_box_init(o, listen_fd, agent_ready[1], agent_fd, log_pipe[1], memory_events,
                                             memory_tasks, tap_channel[1], cgroups_joined[0]);
        (void)!::write(child_error[1], message.data(), message.size());
        ::_exit(1);
    }
    if (tap_channel[1] >= 0) ::close(tap_channel[1]);
    if (cgroups_joined[0] >= 0) ::close(cgroups_joined[0]);
    if (cgroups_joined[1] >= 0) {
        (void)!::write(cgroups_joined[1], "j", 1);
        ::close(cgroups_joined[1]);
    }
    if (agent_outside_memory) {
        log("box " + o.box_id + ": oom_score_adj -1000 is refused here; the agent stays out of the memory cgroup " +
            cgroups.memory_dir() + " and moves each command into it");
    }
    {
        std::ofstream info(o.box_dir + "/cgroup.info");
        info << "memory " << cgroups.memory_dir() << "\ncpu " << cgroups.cpu_dir() << "\npids " << cgroups.pids_dir()
             << "\ncpuacct " << cgroups.cpuacct_dir() << "\n";
        if (!cgroups.v2()) info << "unified " << cgroups.bpf_dir() << "\n";
        for (const auto& a : cgroups.applied()) info << "applied " << a << "\n";
        for (const auto& s : cgroups.skipped()) info << "skipped " << s << "\n";
    }
    std::string applied_text, skipped_text;
    for (const auto& a : cgroups.applied()) applied_text += (applied_text.empty() ? "" : ", ") + a;
    for (const auto& s : cgroups.skipped()) skipped_text += (skipped_text.empty() ? "" : "; ") + s;
    log("box " + o.box_id + ": cgroup limits applied: " + (applied_text.empty() ? "none" : applied_text) +
        (skipped_text.empty() ? "" : "; not applied: " + skipped_text));
    ::close(listen_fd);
    ::close(agent_ready[1]);
    ::close(child_error[1]);
    ::close(log_pipe[1]);
    ::close(agent_fd);

    // Wait for "ready" from the agent, an error text from the child, or its death.
    std::string ready_text, child_text;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool ready = false;
    while (!ready) {
        pollfd fds[3] = {{agent_ready[0], POLLIN, 0}, {child_error[0], POLLIN, 0}, {log_read_fd, POLLIN, 0}};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) break;
        if (::poll(fds, 3, static_cast<int>(left)) <= 0) continue;
        if (fds[2].revents != 0) drain_log();
        char buf[1024];
        if (fds[1].revents != 0) {
            const auto n = ::read(child_error[0], buf, sizeof buf);
            if (n > 0) child_text.append(buf, static_cast<std::size_t>(n));
            if (n > 0) continue;
            if (!child_text.empty()) break;
            child_error[0] = (::close(child_error[0]), -1);
        }
        if (fds[0].revents != 0) {
            const auto n = ::read(agent_ready[0], buf, sizeof buf);
            if (n > 0) ready_text.append(buf, static_cast<std::size_t>(n));
            if (ready_text.find('\n') != std::string::npos) ready = true;
            else if (n <= 0) break;
        }
    }
    ::close(agent_ready[0]);
    if (child_error[0] >= 0) ::close(child_error[0]);
    // Published ports take connections once the box is reported ready: passt binds them as it
    // starts (the pump starts it at once when ports are published), usually before the agent is
    // ready; this waits out the rest (a few /proc reads when it has, nothing without ports). A
    // port passt could not bind fails the start, as the engine's own check would have.
    if (ready && !passt_options.publish.empty() &&
        !wait_for_published_ports(passt_options.publish, 10'000, pump_pid, child_text)) {
        ready = false;
    }
    if (ready && forwarder_pid > 0 && !hand_over_box_network(forward_channel[0], child, child_text)) ready = false;
    if (!ready) {
        ::kill(child, SIGKILL);
        ::waitpid(child, nullptr, 0);
        stop_network();
        drain_log();
        cgroups.remove();
        ::unlink(o.socket.c_str());
        return fail_start(child_text.empty() ? "the agent exited before it was ready (see agent.log)" : child_text);
    }
    { std::ofstream(o.box_dir + "/agent.pid") << child << "\n"; }
    const std::string ok = "ok " + std::to_string(child) + " " + std::to_string(::getpid());
    if (o.ready_ack && ready_fd >= 0) {
        // Nobody may keep a box the runtime has not recorded: wait for its word (or its death).
        const auto line = ok + "\n";
        bool recorded = ::send(ready_fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size());
        if (recorded) {
            pollfd answer{ready_fd, POLLIN, 0};
            char byte = 0;
            recorded = ::poll(&answer, 1, 120'000) == 1 && ::read(ready_fd, &byte, 1) == 1 && byte == 'a';
        }
        ::close(ready_fd);
        ready_fd = -1;
        if (recorded && o.lock_fd >= 0) ::close(o.lock_fd);  // the box is the runtime's now
        if (!recorded) {
            log("box " + o.box_id + ": the runtime that started it went away before recording it; ending the box");
            ::kill(child, SIGKILL);
            ::waitpid(child, nullptr, 0);
            stop_network();
            cgroups.remove();
            ::unlink(o.socket.c_str());
            ::unlink((o.box_dir + "/agent.pid").c_str());
            return 1;
        }
    } else {
        report(ready_fd, ok);
    }
    log("box " + o.box_id + ": agent running as host pid " + std::to_string(child));

    // Supervise: the box ends when the agent exits, when we are told to stop, or when the
    // creator of a non-detached box goes away.
    int status = 0;
    bool exited = false;
    int watchdog_fd = o.watchdog_fd;
    while (!exited) {
        // A negative fd is ignored by poll: the log pipe after its end, no watchdog.
        pollfd fds[3] = {{signal_fd, POLLIN, 0}, {log_read_fd, POLLIN, 0}, {watchdog_fd, POLLIN, 0}};
        if (::poll(fds, 3, -1) < 0 && errno != EINTR) break;
        if (fds[1].revents != 0) drain_log();
        if (watchdog_fd >= 0 && fds[2].revents != 0) {
            log("box " + o.box_id + ": the creating process exited (detach=false); killing the box");
            ::kill(child, SIGKILL);
            ::close(watchdog_fd);
            watchdog_fd = -1;
        }
        signalfd_siginfo info{};
        bool child_signal = false;
        while (::read(signal_fd, &info, sizeof info) == sizeof info) {
            if (info.ssi_signo == SIGCHLD) {
                child_signal = true;
                continue;
            }
            // SIGTERM/SIGINT/SIGHUP: ask the agent to shut down gracefully.
            ::kill(child, SIGTERM);
        }
        const auto r = ::waitpid(child, &status, WNOHANG);
        if (r == child) exited = true;
        // A network helper that ended while the box runs (it never should): reaped and said in
        // shim.log, as the box goes on without it (no network, or no published TCP ports).
        for (auto [pid, what] : {std::pair{&pump_pid, "network pump"}, std::pair{&forwarder_pid, "port forwarder"}}) {
            int helper = 0;
            if (!child_signal || *pid <= 0 || ::waitpid(*pid, &helper, WNOHANG) != *pid) continue;
            *pid = -1;
            log("box " + o.box_id + ": the " + what + " ended (" +
                (WIFEXITED(helper) ? "status " + std::to_string(WEXITSTATUS(helper))
                                   : "signal " + std::to_string(WTERMSIG(helper))) +
                ")");
        }
    }
    stop_network();
    drain_log();
    cgroups.remove();
    ::unlink(o.socket.c_str());
    ::unlink((o.box_dir + "/agent.pid").c_str());
    log("box " + o.box_id + ": agent exited (" +
        (WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                           : "signal " + std::to_string(WTERMSIG(status))) +
        ")");
    return 0;
}

}  // namespace boxlite::shim
