// The agent's VM boot (vm_init.hpp).
#include "vm_init.hpp"

#include "engine/kvm/launch.hpp"
#include "net/box_interface.hpp"

#include <boxlite/box_id.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <linux/vm_sockets.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <string_view>
#include <thread>

// fs/ext4/ext4.h, not in the uapi headers.
#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, __u64)
#endif

namespace boxlite::guest {
namespace {

constexpr const char* kBoxDisk = "/dev/vda";
constexpr const char* kNewRoot = "/newroot";
constexpr const char* kModuleOrder = "/lib/modules/order";
constexpr const char* kLaunchFile = "/boxlite/launch.json";
constexpr std::uint32_t kDefaultAgentPort = vmm::kDefaultGuestAgentPort;
constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

void say(const std::string& text) {
    const auto line = "boxlite-agent: [" + std::to_string(vm_uptime_ms()) + " ms] " + text + "\n";
    (void)!::write(2, line.data(), line.size());
}

std::string why() { return std::strerror(errno); }

bool mount_fs(const char* source, const char* target, const char* type, unsigned long flags, const char* data) {
    ::mkdir(target, 0755);
    if (::mount(source, target, type, flags, data) == 0 || errno == EBUSY) return true;
    say(fmt::format("cannot mount {} on {}: {}", type, target, why()));
    return false;
}

vmm::GuestLaunchConfig read_launch() {
    vmm::GuestLaunchConfig launch;
    launch.agent_port = kDefaultAgentPort;
    std::ifstream in(kLaunchFile);
    if (!in) {
        say(fmt::format("no {}: defaults (vsock port {})", kLaunchFile, kDefaultAgentPort));
        return launch;
    }
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = vmm::parse_guest_launch(text.str());
    if (!parsed) {
        say(fmt::format("ignoring {}: {}", kLaunchFile, parsed.error().message()));
        return launch;
    }
    if (parsed->agent_port == 0) parsed->agent_port = kDefaultAgentPort;
    say(fmt::format("read {} (box {})", kLaunchFile, parsed->box_id));
    return *parsed;
}

/// The modules a step of the boot loads (guest_assets.hpp lists them, dependencies first).
/// Every module loaded costs ~20 ms of guest time under TCG, so each is loaded only where this
/// box needs it, and in the step that needs it: the vsock transport (and the virtio core under
/// it) first, so the agent listens while the rest of the boot goes on; then the disk; the
/// network (virtio_net and the failover modules it needs) only when the box has one; fuse and
/// virtiofs only when it has volumes. Nothing here mounts overlayfs: it stays unloaded.
enum class ModuleStep { Transport, Disk, Network, Volumes, Never };

ModuleStep module_step(const std::string& name) {
    const std::string base = name.substr(0, name.rfind(".ko"));
    if (base == "virtio_blk") return ModuleStep::Disk;
    if (base == "virtio_net" || base == "net_failover" || base == "failover") return ModuleStep::Network;
    if (base == "fuse" || base == "virtiofs") return ModuleStep::Volumes;
    if (base == "overlay") return ModuleStep::Never;
    return ModuleStep::Transport;
}

/// /lib/modules/order: one file name a line, each after the modules it depends on.
std::vector<std::string> read_module_order() {
    std::vector<std::string> names;
    std::ifstream order(kModuleOrder);
    for (std::string name; std::getline(order, name);) {
        if (!name.empty() && name.find('/') == std::string::npos) names.push_back(name);
    }
    return names;
}

/// Loads the modules of `step`, in the order's order (a step's dependencies are in its own step
/// or in an earlier one).
void load_modules(const std::vector<std::string>& order, ModuleStep step, const char* what) {
    const auto started = vm_uptime_ms();
    std::string loaded;
    int count = 0;
    for (const auto& name : order) {
        if (module_step(name) != step) continue;
        const std::string path = "/lib/modules/" + name;
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            say(fmt::format("cannot open module {}: {}", path, why()));
            continue;
        }
        if (::syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
            say(fmt::format("cannot load module {}: {}", name, why()));
        } else {
            loaded += (loaded.empty() ? "" : " ") + name.substr(0, name.rfind(".ko"));
            ++count;
        }
        ::close(fd);
    }
    say(fmt::format("loaded {} modules for the {} in {} ms: {}", count, what, vm_uptime_ms() - started, loaded));
}

bool wait_for(const char* path, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    struct stat st {};
    while (::stat(path, &st) != 0) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

/// Grows the mounted ext4 at `mountpoint` to the whole of `device`.
void grow_filesystem(const char* device, const char* mountpoint) {
    const int dev = ::open(device, O_RDONLY | O_CLOEXEC);
    std::uint64_t bytes = 0;
    if (dev < 0 || ::ioctl(dev, BLKGETSIZE64, &bytes) != 0) {
        say(fmt::format("cannot read the size of {}: {}", device, why()));
        if (dev >= 0) ::close(dev);
        return;
    }
    ::close(dev);
    struct statfs before {};
    if (::statfs(mountpoint, &before) != 0 || before.f_bsize <= 0) {
        say(fmt::format("cannot statfs {}: {}", mountpoint, why()));
        return;
    }
    const int dir = ::open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    std::uint64_t blocks = bytes / static_cast<std::uint64_t>(before.f_bsize);
    const int result = ::ioctl(dir, EXT4_IOC_RESIZE_FS, &blocks);
    const int saved = errno;
    struct statfs after {};
    ::statfs(mountpoint, &after);
    ::close(dir);
    if (result != 0) {
        errno = saved;
        say(fmt::format("cannot grow the filesystem on {} to {} blocks: {}", device, blocks, why()));
        return;
    }
    say(fmt::format("resized {} to {} blocks of {} bytes ({} -> {} bytes in the filesystem)", device, blocks,
                    before.f_bsize, static_cast<std::uint64_t>(before.f_blocks) * before.f_bsize,
                    static_cast<std::uint64_t>(after.f_blocks) * after.f_bsize));
}

/// Empties the initramfs (what switch_root(8) does): its files would hold guest RAM for good once
/// the root moves away. Stays on the initramfs's own filesystem: mount points are skipped.
void delete_initramfs_contents(int dir_fd, dev_t root_dev) {
    DIR* dir = ::fdopendir(dir_fd);
    if (dir == nullptr) {
        ::close(dir_fd);
        return;
    }
    while (auto* entry = ::readdir(dir)) {
        const std::string_view name = entry->d_name;
        if (name == "." || name == "..") continue;
        struct stat st {};
        if (::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != root_dev) continue;
        if (S_ISDIR(st.st_mode)) {
            const int child = ::openat(::dirfd(dir), entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child >= 0) delete_initramfs_contents(child, root_dev);
            ::unlinkat(::dirfd(dir), entry->d_name, AT_REMOVEDIR);
        } else {
            ::unlinkat(::dirfd(dir), entry->d_name, 0);
        }
    }
    ::closedir(dir);
}

bool switch_root(const char* new_root) {
    for (const char* dir : {"dev", "proc", "sys"}) {
        const std::string target = std::string(new_root) + "/" + dir;
        ::mkdir(target.c_str(), 0755);
        const std::string source = std::string("/") + dir;
        if (::mount(source.c_str(), target.c_str(), nullptr, MS_MOVE, nullptr) != 0) {
            say(fmt::format("cannot move {} to {}: {}", source, target, why()));
            return false;
        }
    }
    struct stat root {};
    if (::stat("/", &root) == 0)
        delete_initramfs_contents(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), root.st_dev);
    if (::chdir(new_root) != 0 || ::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0 || ::chroot(".") != 0 ||
        ::chdir("/") != 0) {
        say(fmt::format("cannot make {} the root: {}", new_root, why()));
        return false;
    }
    mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    if (::access("/dev/ptmx", F_OK) != 0) (void)!::symlink("pts/ptmx", "/dev/ptmx");
    mount_fs("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    return true;
}

void loopback_up() {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(fd, SIOCGIFFLAGS, &request) == 0) {
        request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
        if (::ioctl(fd, SIOCSIFFLAGS, &request) != 0) say(fmt::format("cannot bring lo up: {}", why()));
    }
    ::close(fd);
}

bool write_text_file(const char* path, const std::string& text) {
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    return ok;
}

/// /etc/hosts (the box's name, host.boxlite.internal) and /etc/resolv.conf (passt's gateway
/// answers DNS) in the box root: files only, written before the agent serves.
void write_network_files(const std::string& hostname) {
    ::mkdir("/etc", 0755);
    const std::string hosts = std::string("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n") +
                              net::kBoxAddress + "\t" + hostname + "\n" + net::kHostAlias + "\thost.boxlite.internal\n";
    if (!write_text_file("/etc/hosts", hosts)) say(fmt::format("cannot write /etc/hosts: {}", why()));
    if (!write_text_file("/etc/resolv.conf", std::string("nameserver ") + net::kGatewayAddress + "\n"))
        say(fmt::format("cannot write /etc/resolv.conf: {}", why()));
}

/// The network's modules loaded from `modules` (opened before the root moved: the files go with
/// the initramfs), then eth0 (our virtio-net device) up with the box network's address and
/// default route (net/box_interface.hpp, as the namespace engine's eth0), then, once `root` says
/// the box root is in place (false: the boot gave up), its /etc/hosts and /etc/resolv.conf. Runs
/// on its own thread while the boot goes on, and uses no path until then: the root moves under it
/// (IPv6 is turned off through `sysctl_net_dir`, /proc/sys/net opened before). Logs what fails;
/// the box still serves without a network.
void network_up(std::vector<std::pair<std::string, int>> modules, int sysctl_net_dir, std::future<bool> root,
                std::string hostname) {
    const auto started = vm_uptime_ms();
    std::string loaded;
    for (auto& [name, fd] : modules) {
        if (::syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
            say(fmt::format("cannot load module {}: {}", name, why()));
        } else {
            loaded += (loaded.empty() ? "" : " ") + name.substr(0, name.rfind(".ko"));
        }
        ::close(fd);
    }
    const auto modules_done = vm_uptime_ms();
    // The driver binds while its module loads; give a slow probe a little time anyway.
    for (int i = 0; i < 1000 && ::if_nametoindex("eth0") == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (::if_nametoindex("eth0") == 0) {
        say("no eth0 after 5 s: the box has loopback only");
    } else if (std::string error; !net::configure_box_interface("eth0", sysctl_net_dir, error)) {
        say(fmt::format("cannot configure eth0: {}", error));
    } else {
        say(fmt::format("eth0 up: {}/24 via {} (modules {} ms: {}; eth0 {} ms)", net::kBoxAddress, net::kGatewayAddress,
                        modules_done - started, loaded, vm_uptime_ms() - modules_done));
    }
    if (sysctl_net_dir >= 0) ::close(sysctl_net_dir);
    if (root.get()) write_network_files(hostname);
}

void apply_limits(const vmm::GuestLimits& limits) {
    auto set = [](int resource, const std::optional<std::uint64_t>& value, const char* name) {
        if (!value) return;
        rlimit limit{static_cast<rlim_t>(*value), static_cast<rlim_t>(*value)};
        if (::setrlimit(resource, &limit) != 0) say(fmt::format("cannot set rlimit {}: {}", name, why()));
    };
    set(RLIMIT_NOFILE, limits.nofile, "nofile");
    set(RLIMIT_FSIZE, limits.fsize, "fsize");
    set(RLIMIT_CPU, limits.cpu, "cpu");
    set(RLIMIT_NPROC, limits.nproc, "nproc");
}

/// The directory `path` (absolute) in the current root, made where missing (0755), opened
/// O_PATH with RESOLVE_IN_ROOT: a symlink in the box's tree resolves inside the box, never
/// elsewhere; RESOLVE_NO_MAGICLINKS keeps /proc's links out. -1 with errno on failure.
int open_mount_point(const std::string& path) {
    const int root = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return -1;
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    std::string prefix;
    int fd = -1;
    for (std::size_t pos = 1; pos <= path.size();) {
        auto end = path.find('/', pos);
        if (end == std::string::npos) end = path.size();
        const auto part = path.substr(pos, end - pos);
        pos = end + 1;
        if (part.empty() || part == ".") continue;
        prefix += "/" + part;
        const std::string relative = prefix.substr(1);
        if (fd >= 0) ::close(fd);
        fd = static_cast<int>(::syscall(SYS_openat2, root, relative.c_str(), &how, sizeof how));
        if (fd < 0 && errno == ENOENT) {
            // Made in the directory resolved so far (in root), then opened the same way.
            const auto slash = relative.rfind('/');
            int parent = root;
            if (slash != std::string::npos) {
                parent = static_cast<int>(
                    ::syscall(SYS_openat2, root, relative.substr(0, slash).c_str(), &how, sizeof how));
                if (parent < 0) break;
            }
            const int made = ::mkdirat(parent, part.c_str(), 0755);
            const int saved = errno;
            if (parent != root) ::close(parent);
            if (made != 0 && saved != EEXIST) {
                errno = saved;
                break;
            }
            fd = static_cast<int>(::syscall(SYS_openat2, root, relative.c_str(), &how, sizeof how));
        }
        if (fd < 0) break;
    }
    const int saved = errno;
    ::close(root);
    errno = saved;
    return fd;
}

/// Mounts each virtiofs volume at its guest path in the box root. The device may still be
/// probing when the agent gets here: a tag not there yet (virtiofs says EINVAL) is retried for 5 s.
bool mount_volumes(const std::vector<vmm::GuestVolume>& volumes) {
    for (const auto& v : volumes) {
        const int target = open_mount_point(v.path);
        if (target < 0) {
            say(fmt::format("cannot make the mount point {} of volume {}: {}", v.path, v.tag, why()));
            return false;
        }
        const std::string at = "/proc/self/fd/" + std::to_string(target);
        unsigned long flags = MS_NODEV | MS_NOSUID;
        if (v.read_only) flags |= MS_RDONLY;
        int result = -1;
        for (int attempt = 0; attempt < 500; ++attempt) {
            result = ::mount(v.tag.c_str(), at.c_str(), "virtiofs", flags, nullptr);
            if (result == 0 || (errno != EINVAL && errno != ENOENT && errno != ENODEV && errno != ENXIO)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        const int saved = errno;
        ::close(target);
        if (result != 0) {
            errno = saved;
            say(fmt::format("cannot mount volume {} (virtiofs) on {}: {}", v.tag, v.path, why()));
            return false;
        }
        say(fmt::format("mounted volume {} on {} ({})", v.tag, v.path, v.read_only ? "ro" : "rw"));
    }
    return true;
}

/// What a first command reads from the box disk whatever it is, read ahead while the agent is
/// still waiting for the host: /etc/passwd and /etc/group (the agent resolves the command's user
/// from them), the default PATH's directories (its search), and the file /bin/sh resolves to (the
/// shell, and the multi-call binary of busybox images), in a few large reads instead of one page
/// fault after another. Best effort, on a thread of its own; it only reads. A file is opened
/// O_PATH first and read only if it is a regular file: a box's symlink to a device is never
/// opened for real.
void read_ahead_first_command() {
    auto read_ahead = [](const char* path) {
        const int handle = ::open(path, O_PATH | O_CLOEXEC);
        if (handle < 0) return;
        struct stat st {};
        if (::fstat(handle, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
            const std::string reopen = "/proc/self/fd/" + std::to_string(handle);
            if (const int fd = ::open(reopen.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); fd >= 0) {
                constexpr off_t kMost = 16 << 20;
                (void)::readahead(fd, 0, static_cast<std::size_t>(std::min<off_t>(st.st_size, kMost)));
                ::close(fd);
            }
        }
        ::close(handle);
    };
    read_ahead("/etc/passwd");
    read_ahead("/etc/group");
    for (const auto& dir : {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
        struct stat st {};
        (void)::stat(dir, &st);
    }
    read_ahead("/bin/sh");
}

int listen_vsock(std::uint32_t port) {
    const int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        say(fmt::format("cannot create a vsock socket: {}", why()));
        return -1;
    }
    sockaddr_vm address{};
    address.svm_family = AF_VSOCK;
    address.svm_cid = VMADDR_CID_ANY;
    address.svm_port = port;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, 128) != 0) {
        say(fmt::format("cannot listen on vsock port {}: {}", port, why()));
        ::close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

long long vm_uptime_ms() {
    timespec now{};
    ::clock_gettime(CLOCK_BOOTTIME, &now);
    return static_cast<long long>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

VmBoot vm_boot() {
    VmBoot boot;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    if (::fcntl(2, F_GETFD) < 0) {  // no console from the kernel: take /dev/console now
        const int console = ::open("/dev/console", O_RDWR | O_CLOEXEC);
        for (int fd = 0; fd < 3 && console >= 0; ++fd) ::dup2(console, fd);
    }
    mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    say("VM boot: /dev, /proc and /sys mounted");
    // The launch config first (it is in the initramfs): it says which modules this box needs.
    const auto launch = read_launch();
    const auto order = read_module_order();
    // The vsock transport first, and the agent's socket listening at once: the host's connect
    // (and its wait to notice the guest listens) overlaps the rest of the boot. The kernel queues
    // a connection until the agent serves, after the boot below.
    load_modules(order, ModuleStep::Transport, "transport");
    const int listen_fd = listen_vsock(launch.agent_port);
    if (listen_fd >= 0) say(fmt::format("vsock port {} open: connections wait until the boot ends", launch.agent_port));
    // The network thread writes the box's /etc files once the root is in place (or never).
    std::promise<bool> root_in_place;
    bool root_told = false;
    auto tell_root = [&](bool in_place) {
        if (!root_told) root_in_place.set_value(in_place);
        root_told = true;
    };
    auto give_up = [&] {
        if (listen_fd >= 0) ::close(listen_fd);
        tell_root(false);
        boot.wait_for_network();
        return std::move(boot);
    };
    // All before the root moves: the modules are files of the initramfs.
    load_modules(order, ModuleStep::Disk, "disk");
    if (launch.network) {
        // The network on its own thread, off the path to serving: the agent holds every command
        // back until it is done (VmBoot::wait_for_network), so no command sees a box without it.
        std::vector<std::pair<std::string, int>> modules;
        for (const auto& name : order) {
            if (module_step(name) != ModuleStep::Network) continue;
            const std::string path = "/lib/modules/" + name;
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                say(fmt::format("cannot open module {}: {}", path, why()));
                continue;
            }
            modules.emplace_back(name, fd);
        }
        const int sysctl_net_dir = ::open("/proc/sys/net", O_PATH | O_DIRECTORY | O_CLOEXEC);
        const std::string hostname = launch.box_id.substr(0, BoxID::kShortLength);
        boot.network = std::thread(network_up, std::move(modules), sysctl_net_dir, root_in_place.get_future(),
                                   hostname);
    }
    if (!launch.volumes.empty()) load_modules(order, ModuleStep::Volumes, "volumes");

    if (wait_for(kBoxDisk, std::chrono::seconds(10))) {
        ::mkdir(kNewRoot, 0755);
        if (::mount(kBoxDisk, kNewRoot, "ext4", 0, nullptr) != 0) {
            say(fmt::format("cannot mount the box disk {} (ext4) on {}: {}", kBoxDisk, kNewRoot, why()));
            return give_up();
        }
        say(fmt::format("mounted {} on {}", kBoxDisk, kNewRoot));
        grow_filesystem(kBoxDisk, kNewRoot);
        if (!switch_root(kNewRoot)) return give_up();
        say(fmt::format("switched root to {}", kBoxDisk));
    } else {
        say(fmt::format("no box disk {} after 10 s: serving from the initramfs", kBoxDisk));
    }
    // A box without the volumes it was given must not run as if it had them: power off, and the
    // host reports the console's reason.
    if (!mount_volumes(launch.volumes)) vm_power_off();
    tell_root(true);
    std::thread(read_ahead_first_command).detach();

    // As the namespace engine does: the box's short id as host name, and the same base
    // environment under the launch's own.
    const std::string hostname = launch.box_id.substr(0, BoxID::kShortLength);
    if (!hostname.empty() && ::sethostname(hostname.data(), hostname.size()) != 0)
        say(fmt::format("cannot set the host name: {}", why()));
    loopback_up();
    apply_limits(launch.rlimits);
    std::map<std::string, std::string> env = {{"PATH", kDefaultPath}, {"HOME", "/root"}};
    if (!hostname.empty()) env["HOSTNAME"] = hostname;
    for (const auto& [key, value] : launch.env) {
        if (env.count(key)) {
            env[key] = value;  // the launch's value replaces the base one
        } else {
            boot.env.push_back(key + "=" + value);
        }
    }
    for (const auto& [key, value] : env) boot.env.insert(boot.env.begin(), key + "=" + value);
    boot.working_dir = launch.working_dir.empty() ? "/" : launch.working_dir;
    boot.user = launch.user;
    boot.power_off_when_ready = launch.power_off_when_ready;
    boot.listen_fd = listen_fd;
    if (boot.listen_fd >= 0)
        say(fmt::format("listening on vsock port {} (host name {})", launch.agent_port,
                        hostname.empty() ? "unset" : hostname));
    return boot;
}

void VmBoot::wait_for_network() {
    if (!network.joinable()) return;
    network.join();
}

void vm_power_off() {
    say("powering off");
    ::sync();
    ::reboot(RB_POWER_OFF);
    // Only reached if the kernel refused: PID 1 must not exit (that panics the kernel).
    for (;;) ::pause();
}

}  // namespace boxlite::guest
