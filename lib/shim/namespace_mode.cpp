// boxlite-shim namespace mode: the box is the guest agent running as PID 1 of new PID, mount,
// UTS, IPC and network namespaces, rooted in an overlayfs (read-only image rootfs below, the
// box's own upper layer in <box_dir>/upper above).
//
//   shim (host namespaces, own session; the box's init and all below it are in its cgroups)
//    └── agent, PID 1 in the box: unshare(mount/uts/ipc/net), overlay + /proc /sys /dev /tmp,
//        hostname, loopback up, pivot_root, rlimits, then execveat() of the agent binary from
//        an fd opened before the pivot (nothing is added to the box's filesystem).
//
// The agent gets PDEATHSIG=SIGKILL, so killing the shim takes the whole box down (PID 1 dying
// kills every process in its PID namespace). The listening socket is created by the shim in
// box_dir before the pivot and inherited as fd 3; paths of Unix sockets ignore network
// namespaces, so the host connects to it directly.
#include "shim.hpp"

#include "../jailer/cgroup.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

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

/// Everything the box's PID 1 does before it becomes the agent. Returns an error text, or
/// never returns on success.
std::string become_box_init(const ShimOptions& o, int listen_fd, int agent_ready_fd, int agent_fd, int log_fd) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return errno_text("PR_SET_PDEATHSIG");
    if (::unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) != 0) return errno_text("unshare");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno_text("making / private");

    const auto upper = o.box_dir + "/upper";
    const auto work = o.box_dir + "/work";
    const auto merged = o.box_dir + "/merged";
    for (const auto& dir : {upper, work, merged}) {
        if (!mkdir_p(dir, 0755)) return errno_text("creating " + dir);
    }
    const auto overlay_options = "lowerdir=" + o.rootfs + ",upperdir=" + upper + ",workdir=" + work;
    if (::mount("overlay", merged.c_str(), "overlay", 0, overlay_options.c_str()) != 0) {
        return errno_text("mounting the overlay root (" + overlay_options + ")");
    }
    auto in_root = [&](const std::string& p) { return merged + p; };
    auto mount_fs = [&](const char* source, const std::string& target, const char* type, unsigned long flags,
                        const char* data) -> std::string {
        if (!mkdir_p(in_root(target), 0755)) return errno_text("creating " + target + " in the box");
        if (::mount(source, in_root(target).c_str(), type, flags, data) != 0) return errno_text("mounting " + target);
        return {};
    };
    std::string err;
    if (!(err = mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr)).empty()) return err;
    if (!(err = mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, nullptr)).empty()) {
        // sysfs can be refused in some nested setups; the box works without it.
        log("warning: " + err + " (the box has no /sys)");
    }
    if (!(err = mount_fs("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")).empty()) return err;
    struct Node {
        const char* name;
        unsigned major, minor;
    };
    for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7}, Node{"random", 1, 8},
                          Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
        const auto path = in_root(std::string("/dev/") + n.name);
        if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)) != 0) return errno_text("mknod " + path);
        ::chmod(path.c_str(), 0666);  // umask-proof
    }
    if (!(err = mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")).empty()) {
        return err;
    }
    if (!(err = mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")).empty()) return err;
    for (auto [link, target] : {std::pair{"/dev/ptmx", "pts/ptmx"}, std::pair{"/dev/fd", "/proc/self/fd"},
                                std::pair{"/dev/stdin", "/proc/self/fd/0"}, std::pair{"/dev/stdout", "/proc/self/fd/1"},
                                std::pair{"/dev/stderr", "/proc/self/fd/2"}}) {
        if (::symlink(target, in_root(link).c_str()) != 0) return errno_text(std::string("symlink ") + link);
    }
    if (!(err = mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")).empty()) return err;
    for (const auto& v : o.volumes) {
        if (v.guest_path.empty() || v.guest_path.front() != '/') return "volume guest path '" + v.guest_path + "' is not absolute";
        struct stat st {};
        if (::stat(v.host_path.c_str(), &st) != 0) return errno_text("volume host path '" + v.host_path + "'");
        const auto target = in_root(v.guest_path);
        if (S_ISDIR(st.st_mode)) {
            if (!mkdir_p(target, 0755)) return errno_text("creating volume mount point " + v.guest_path);
        } else {
            mkdir_p(target.substr(0, target.rfind('/')), 0755);
            const int fd = ::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd >= 0) ::close(fd);
        }
        if (::mount(v.host_path.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
            return errno_text("bind-mounting volume " + v.host_path + " at " + v.guest_path);
        }
        if (v.read_only && ::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, nullptr) != 0) {
            return errno_text("making volume " + v.guest_path + " read-only");
        }
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

    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    if (::dup2(listen_fd, 3) < 0 || ::dup2(agent_ready_fd, 4) < 0) return errno_text("dup2");
    // Everything else is closed at exec (CLOEXEC); 3 and 4 are the agent's.
    std::vector<std::string> args = {"boxlite-agent", "--listen-fd", "3", "--ready-fd", "4"};
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
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        error = "socket path '" + path + "' is longer than " + std::to_string(sizeof addr.sun_path - 1) + " bytes";
        return -1;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::unlink(path.c_str());
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 128) != 0) {
        error = errno_text("listening on " + path);
        return -1;
    }
    ::chmod(path.c_str(), 0600);
    return fd;
}

int copy_to_memfd(const std::string& path, std::string& error) {
    const int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        error = errno_text("opening the agent binary " + path);
        return -1;
    }
    const int fd = static_cast<int>(::syscall(SYS_memfd_create, "boxlite-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd < 0) {
        error = errno_text("memfd_create");
        ::close(in);
        return -1;
    }
    // In-kernel copy (page cache to shmem); no bounce through a user buffer.
    while (true) {
        const auto n = ::sendfile(fd, in, nullptr, 1 << 30);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = errno_text("copying the agent binary " + path);
            ::close(in);
            ::close(fd);
            return -1;
        }
        if (n == 0) break;
    }
    ::close(in);
    ::fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    return fd;
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
    if (::stat(o.rootfs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return fail_start("rootfs '" + o.rootfs + "' is not a directory");

    // The box's cgroups. The box's init joins them right after the fork, while it sets up its
    // mounts and starts the agent: on cgroup v1 the first attach waits for an RCU grace period
    // (10-25 ms here), which would otherwise be spent before the fork. Nothing runs in the box
    // before the agent reports ready, and "ok" is reported only after the join, so every command
    // and all its children are inside. The shim itself stays out (it is not the box's workload).
    const auto cgroups = jailer::CgroupSet::create(o.box_id, {o.memory_bytes, o.cpus, o.pids});
    {
        std::ofstream info(o.box_dir + "/cgroup.info");
        info << "memory " << cgroups.memory_dir() << "\ncpu " << cgroups.cpu_dir() << "\npids " << cgroups.pids_dir()
             << "\ncpuacct " << cgroups.cpuacct_dir() << "\n";
        for (const auto& a : cgroups.applied()) info << "applied " << a << "\n";
        for (const auto& s : cgroups.skipped()) info << "skipped " << s << "\n";
    }
    std::string applied_text, skipped_text;
    for (const auto& a : cgroups.applied()) applied_text += (applied_text.empty() ? "" : ", ") + a;
    for (const auto& s : cgroups.skipped()) skipped_text += (skipped_text.empty() ? "" : "; ") + s;
    log("box " + o.box_id + ": cgroup limits applied: " + (applied_text.empty() ? "none" : applied_text) +
        (skipped_text.empty() ? "" : "; not applied: " + skipped_text));
    log("box " + o.box_id + ": network: loopback only (outbound networking is not implemented for the namespace engine yet)");

    std::string error;
    const int listen_fd = listen_on(o.socket, error);
    if (listen_fd < 0) return fail_start(error);
    // The agent runs from a sealed in-memory copy: the kernel refuses to exec a file whose mount
    // was detached by the pivot, and the box must not see (or change) the host's binary.
    const int agent_fd = copy_to_memfd(o.agent, error);
    if (agent_fd < 0) return fail_start(error);
    const int log_fd = ::open((o.box_dir + "/agent.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) return fail_start(errno_text("opening agent.log"));
    int agent_ready[2];
    int child_error[2];
    if (::pipe2(agent_ready, O_CLOEXEC) != 0 || ::pipe2(child_error, O_CLOEXEC) != 0) return fail_start(errno_text("pipe"));

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    const int signal_fd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    if (::unshare(CLONE_NEWPID) != 0) return fail_start(errno_text("unshare(CLONE_NEWPID)"));
    const pid_t child = ::fork();
    if (child < 0) return fail_start(errno_text("fork"));
    if (child == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        ::close(agent_ready[0]);
        ::close(child_error[0]);
        const auto message = become_box_init(o, listen_fd, agent_ready[1], agent_fd, log_fd);
        (void)!::write(child_error[1], message.data(), message.size());
        ::_exit(1);
    }
    cgroups.add(static_cast<int>(child));
    ::close(listen_fd);
    ::close(agent_ready[1]);
    ::close(child_error[1]);
    ::close(agent_fd);

    // Wait for "ready" from the agent, an error text from the child, or its death.
    std::string ready_text, child_text;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool ready = false;
    while (!ready) {
        pollfd fds[2] = {{agent_ready[0], POLLIN, 0}, {child_error[0], POLLIN, 0}};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) break;
        if (::poll(fds, 2, static_cast<int>(left)) <= 0) continue;
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
    if (!ready) {
        ::kill(child, SIGKILL);
        ::waitpid(child, nullptr, 0);
        cgroups.remove();
        ::unlink(o.socket.c_str());
        return fail_start(child_text.empty() ? "the agent exited before it was ready (see agent.log)" : child_text);
    }
    {
        std::ofstream(o.box_dir + "/agent.pid") << child << "\n";
    }
    report(ready_fd, "ok " + std::to_string(child) + " " + std::to_string(::getpid()));
    log("box " + o.box_id + ": agent running as host pid " + std::to_string(child));

    // Supervise: the box ends when the agent exits, when we are told to stop, or when the
    // creator of a non-detached box goes away.
    int status = 0;
    bool exited = false;
    int watchdog_fd = o.watchdog_fd;
    while (!exited) {
        pollfd fds[2] = {{signal_fd, POLLIN, 0}, {watchdog_fd, POLLIN, 0}};
        const nfds_t count = watchdog_fd >= 0 ? 2 : 1;
        if (::poll(fds, count, -1) < 0 && errno != EINTR) break;
        if (count == 2 && fds[1].revents != 0) {
            log("box " + o.box_id + ": the creating process exited (detach=false); killing the box");
            ::kill(child, SIGKILL);
            ::close(watchdog_fd);
            watchdog_fd = -1;
        }
        signalfd_siginfo info{};
        while (::read(signal_fd, &info, sizeof info) == sizeof info) {
            if (info.ssi_signo == SIGCHLD) continue;
            // SIGTERM/SIGINT/SIGHUP: ask the agent to shut down gracefully.
            ::kill(child, SIGTERM);
        }
        const auto r = ::waitpid(child, &status, WNOHANG);
        if (r == child) exited = true;
    }
    cgroups.remove();
    ::unlink(o.socket.c_str());
    ::unlink((o.box_dir + "/agent.pid").c_str());
    log("box " + o.box_id + ": agent exited (" +
        (WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status)) : "signal " + std::to_string(WTERMSIG(status))) + ")");
    return 0;
}

}  // namespace boxlite::shim
