#include "engine/common/virtiofsd.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <thread>

namespace boxlite::engine {

std::vector<std::string> virtiofsd_argv(const std::string& binary, const VirtiofsShare& share, int listen_fd) {
    return {binary, fmt::format("--fd={}", listen_fd), "-o", fmt::format("source={}", share.host_path), "-o",
            "sandbox=namespace", "-o", "no_xattr", "-o", "no_posix_lock", "-o", "no_flock", "-o", "log_level=warn",
            // Descriptors: the C virtiofsd raises RLIMIT_NOFILE to a million by default.
            "--rlimit-nofile=65536"};
}

// The child makes its mount namespace private, binds a read-only volume's folder over itself
// read-only (recursively: no writable submount), and execs virtiofsd.
BoxliteResult<Virtiofsd> start_virtiofsd(const std::string& binary, const VirtiofsShare& volume) {
    const auto what = fmt::format("virtiofsd for volume {} ({})", volume.tag, volume.host_path);
    base::OwnedFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) return fail_errno(ErrorKind::Engine, what + ": socket", errno);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    // Binding only the family autobinds a unique abstract address.
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(sa_family_t)) != 0 ||
        ::listen(listener.get(), 1) != 0)
        return fail_errno(ErrorKind::Engine, what + ": binding its socket", errno);
    socklen_t length = sizeof address;
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
        return fail_errno(ErrorKind::Engine, what + ": getsockname", errno);
    Virtiofsd out;
    out.host_path = volume.host_path;
    out.frontend_end.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!out.frontend_end || ::connect(out.frontend_end.get(), reinterpret_cast<sockaddr*>(&address), length) != 0)
        return fail_errno(ErrorKind::Engine, what + ": connecting to its socket", errno);

    constexpr int kListenFd = 3;
    const auto args = virtiofsd_argv(binary, volume, kListenFd);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const char* source = volume.host_path.c_str();
    const bool read_only = volume.read_only;
    int report[2];
    if (::pipe2(report, O_CLOEXEC) != 0) return fail_errno(ErrorKind::Engine, what + ": pipe", errno);
    base::OwnedFd report_read(report[0]), report_write(report[1]);
    base::OwnedFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return fail_errno(ErrorKind::Engine, what + ": fork", errno);
    if (pid == 0) {
        // Async-signal-safe calls only (the shim has threads): raw system calls.
        auto die = [&](int step) {
            const int detail[2] = {step, errno};
            [[maybe_unused]] auto n = ::write(report_write.get(), detail, sizeof detail);
            ::_exit(127);
        };
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
        if (::unshare(CLONE_NEWNS) != 0) die(1);
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die(2);
        if (read_only) {
            if (::mount(source, source, nullptr, MS_BIND | MS_REC, nullptr) != 0) die(3);
            mount_attr attr{};
            attr.attr_set = MOUNT_ATTR_RDONLY;
            if (::syscall(SYS_mount_setattr, AT_FDCWD, source, AT_RECURSIVE, &attr, sizeof attr) != 0) {
                // Kernels before 5.12: the top of the bind only.
                if (errno != ENOSYS ||
                    ::mount(nullptr, source, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
                    die(4);
            }
        }
        if (::dup2(null.get(), 0) < 0 || ::dup2(2, 1) < 0) die(5);
        // dup2 onto itself keeps FD_CLOEXEC: clear it when the listener already is fd 3.
        if (listener.get() == kListenFd ? ::fcntl(kListenFd, F_SETFD, 0) < 0 : ::dup2(listener.get(), kListenFd) < 0)
            die(5);
        ::execv(argv[0], argv.data());
        die(6);
    }
    report_write.reset();
    int detail[2] = {0, 0};
    ssize_t got;
    do got = ::read(report_read.get(), detail, sizeof detail);
    while (got < 0 && errno == EINTR);
    if (got > 0) {
        ::waitpid(pid, nullptr, 0);
        static constexpr const char* kSteps[] = {"",
                                                 "unshare(CLONE_NEWNS) (volumes on the VM engines need root)",
                                                 "making its mount namespace private",
                                                 "binding the folder read-only",
                                                 "remounting the bind read-only",
                                                 "setting up its descriptors",
                                                 "exec"};
        const int step = detail[0] >= 1 && detail[0] <= 6 ? detail[0] : 0;
        return fail_errno(ErrorKind::Engine, fmt::format("{}: {}", what, kSteps[step]), detail[1]);
    }
    out.pid = pid;
    return out;
}

void reap_virtiofsd(std::vector<Virtiofsd>& daemons, std::chrono::milliseconds grace) {
    const auto until = std::chrono::steady_clock::now() + grace;
    for (auto& d : daemons) {
        while (!d.exited) {
            const pid_t done = ::waitpid(d.pid, nullptr, WNOHANG);
            if (done == d.pid || (done < 0 && errno == ECHILD)) {
                d.exited = true;
                break;
            }
            if (std::chrono::steady_clock::now() > until) {
                ::kill(d.pid, SIGKILL);
                ::waitpid(d.pid, nullptr, 0);
                d.exited = true;
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
}

}  // namespace boxlite::engine
