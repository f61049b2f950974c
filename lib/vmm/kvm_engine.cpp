// The compiled half of KvmEngine (include/boxlite/engine/kvm_engine.hpp): the disk overlay,
// the shim config from the launch request, spawning boxlite-shim-kvm with its config on fd 3,
// waiting for the guest agent over the hybrid vsock socket, and managing the shim process by
// pid + start time. The pieces tests drive without a guest kernel are declared in kvm_launch.hpp.
#include "vmm/kvm_launch.hpp"

#include <boxlite/detail/process.hpp>
#include <boxlite/engine/kvm_engine.hpp>
#include <boxlite/engine/namespace_engine.hpp>  // detail::WatchdogRegistry, shared by both engines

#include "qcow2/qcow2_image.hpp"
#include "vmm/file.hpp"
#include "vmm/guest_launch.hpp"
#include "vmm/probe.hpp"
#include "vmm/shim_config.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace boxlite::vmm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

BoxliteResult<fs::path> find_shim(const KvmEngineOptions& options) {
    std::vector<fs::path> candidates;
    if (!options.shim.empty()) candidates.push_back(options.shim);
    if (const char* env = std::getenv("BOXLITE_SHIM_KVM"); env && *env) candidates.emplace_back(env);
    std::error_code ec;
    const auto self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back(self.parent_path() / "boxlite-shim-kvm");
#ifdef BOXLITE_BUILD_BIN_DIR
    candidates.push_back(fs::path(BOXLITE_BUILD_BIN_DIR) / "boxlite-shim-kvm");
#endif
#ifdef BOXLITE_INSTALL_LIBEXEC_DIR
    candidates.push_back(fs::path(BOXLITE_INSTALL_LIBEXEC_DIR) / "boxlite-shim-kvm");
#endif
    for (const auto& path : candidates)
        if (::access(path.c_str(), X_OK) == 0) return path;
    return fail(ErrorKind::Engine, "boxlite-shim-kvm not found (set BOXLITE_SHIM_KVM or install it next to {})",
                self.string());
}

std::string tail_of(const fs::path& file, std::size_t bytes = 2000) {
    return read_file_text(file.string(), bytes);
}

/// One line from `fd` within `timeout`; nullopt on EOF or timeout.
std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout) {
    std::string line;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) <= 0) continue;
        char c;
        const ssize_t n = ::read(fd, &c, 1);
        if (n <= 0) return std::nullopt;
        if (c == '\n') return line;
        if (line.size() > 4096) return line;
        line.push_back(c);
    }
    return std::nullopt;
}

/// The hybrid vsock handshake against the shim's socket: "CONNECT <port>\n" → "OK <n>\n".
bool agent_answers(const fs::path& uds, std::uint32_t port) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const auto path = uds.string();
    if (path.size() >= sizeof(address.sun_path)) {
        ::close(fd);
        return false;
    }
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
        const auto request = fmt::format("CONNECT {}\n", port);
        if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
            auto line = read_line(fd, std::chrono::milliseconds(500));
            ok = line && line->rfind("OK ", 0) == 0;
        }
    }
    ::close(fd);
    return ok;
}

void reap_if_child(std::int32_t pid) {
    int status;
    ::waitpid(pid, &status, WNOHANG);
}

fs::path default_init_dir() {
    if (const char* home = std::getenv("BOXLITE_HOME"); home && *home) return fs::path(home) / "init";
    if (const char* user = std::getenv("HOME"); user && *user) return fs::path(user) / ".boxlite" / "init";
    return fs::path("/root/.boxlite/init");
}

void close_all(std::initializer_list<int> fds) {
    for (int fd : fds)
        if (fd >= 0) ::close(fd);
}

/// Writes all of `data` to a stream socket before `deadline`; false if the peer went away or
/// the time ran out. MSG_NOSIGNAL: a shim that died must not SIGPIPE the caller.
bool send_all(int fd, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

}  // namespace

BoxliteResult<std::uint64_t> prepare_box_disk(const fs::path& overlay, const fs::path& base,
                                              std::optional<std::uint32_t> disk_size_gb) {
    std::error_code ec;
    const std::uint64_t base_size = fs::file_size(base, ec);
    if (ec)
        return fail(ErrorKind::Storage, "the box's base disk image {} cannot be read: {}", base.string(), ec.message());
    const std::uint64_t wanted = std::max(base_size, disk_size_gb ? std::uint64_t{*disk_size_gb} << 30 : 0);
    if (!fs::exists(overlay, ec)) {
        qcow2::CreateOptions create;
        create.backing_file = base.string();
        create.backing_format = "raw";
        create.size = wanted;
        BOXLITE_TRY(auto image, qcow2::Qcow2Image::create(overlay, create));
        BOXLITE_TRY_VOID(image->close());
        return wanted;
    }
    BOXLITE_TRY(auto image, qcow2::Qcow2Image::open(overlay));
    std::uint64_t size = image->size();
    if (size < wanted) {
        if (auto grown = image->resize(wanted); !grown)
            return fail(grown.error().with_context(
                fmt::format("growing the disk {} to {} bytes (disk_size_gb)", overlay.string(), wanted)));
        size = wanted;
    }
    BOXLITE_TRY_VOID(image->close());
    return size;
}

BoxliteResult<KvmShimConfig> make_shim_config(const KvmEngineOptions& options, const EngineLaunch& launch,
                                              const fs::path& kernel, const fs::path& initrd, const fs::path& disk) {
    if (!launch.config) return fail(ErrorKind::InvalidArgument, "kvm engine: launch without a box config");
    const auto& box = *launch.config;
    const auto& o = box.options;
    if (!o.volumes.empty())
        return fail(ErrorKind::Unsupported,
                    "box {}: the kvm engine cannot mount volumes yet (they need virtiofs, which it does not have); "
                    "{} volume(s) asked for, the first at {} — remove them or use the namespace engine",
                    box.id, o.volumes.size(), o.volumes.front().guest_path);
    if (!o.ports.empty())
        return fail(ErrorKind::Unsupported,
                    "box {}: the kvm engine cannot publish ports yet (the VM has no network device); "
                    "{} port mapping(s) asked for — remove them or use another engine",
                    box.id, o.ports.size());

    KvmShimConfig config;
    config.box_id = box.id.str();
    config.cpus = o.cpus;
    // The VM's RAM is the box's memory; max_memory can only lower it.
    std::uint64_t memory_mib = o.memory_mib;
    const auto& limits = o.resource_limits;
    const auto& security_limits = o.security.resource_limits;
    auto pick = [](const std::optional<std::uint64_t>& a, const std::optional<std::uint64_t>& b) { return a ? a : b; };
    if (auto max_memory = pick(limits.max_memory, security_limits.max_memory)) {
        memory_mib = std::min(memory_mib, *max_memory >> 20);
        if (memory_mib < BoxOptions::kMinMemoryMib)
            return fail(ErrorKind::Config,
                        "box {}: max_memory {} bytes leaves the VM less than {} MiB of RAM, too little for its kernel",
                        box.id, *max_memory, BoxOptions::kMinMemoryMib);
    }
    config.memory_mib = memory_mib;
    config.kernel = kernel.string();
    config.initrd = initrd.string();
    config.cmdline = fmt::format("console=ttyS0 reboot=k panic=-1 quiet boxlite.box_id={} boxlite.agent_port={}{}{}",
                                 config.box_id, options.agent_port, options.extra_cmdline.empty() ? "" : " ",
                                 options.extra_cmdline);
    config.disk = ShimDiskConfig{disk.string(), "qcow2", false, "boxlite-root"};
    config.vsock_uds = (launch.box_dir / "vsock.sock").string();
    config.guest_cid = options.guest_cid;
    config.console_log = (launch.box_dir / "console.log").string();

    GuestLaunchConfig guest;
    guest.box_id = config.box_id;
    guest.agent_port = options.agent_port;
    guest.env = launch.env;
    guest.working_dir = launch.working_dir.empty() ? "/" : launch.working_dir;
    guest.user = launch.user;
    guest.rlimits.nofile = pick(limits.max_open_files, security_limits.max_open_files);
    guest.rlimits.fsize = pick(limits.max_file_size, security_limits.max_file_size);
    guest.rlimits.cpu = pick(limits.max_cpu_time, security_limits.max_cpu_time);
    guest.rlimits.nproc = pick(limits.max_processes, security_limits.max_processes);
    config.guest_launch = to_json_document(guest);
    return config;
}

BoxliteResult<SpawnedShim> spawn_kvm_shim(const ShimSpawn& spawn) {
    int watchdog = spawn.watchdog_read_fd;
    // Everything the child needs exists before fork: it only makes async-signal-safe calls.
    std::vector<std::string> args = {spawn.shim.string(), "--config-fd", "3", "--ready-fd", "4"};
    if (watchdog >= 0) args.insert(args.end(), {"--watchdog-fd", "5"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    // The config goes over a socket, not a pipe, so writing to a shim that died is EPIPE, not SIGPIPE.
    int config[2] = {-1, -1}, ready[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, config) != 0) {
        close_all({watchdog});
        return fail_errno(ErrorKind::Engine, "socketpair for the shim config", errno);
    }
    if (::pipe2(ready, O_CLOEXEC) != 0) {
        const int error = errno;
        close_all({watchdog, config[0], config[1]});
        return fail_errno(ErrorKind::Engine, "pipe for the shim's ready line", error);
    }
    const std::string log = spawn.log.string();
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (log_fd < 0 || devnull < 0) {
        const int error = errno;
        close_all({watchdog, config[0], config[1], ready[0], ready[1], log_fd, devnull});
        return fail_errno(ErrorKind::Engine, fmt::format("opening the shim log {}", log), error);
    }

    const pid_t pid = ::fork();
    if (pid < 0) {
        const int error = errno;
        close_all({watchdog, config[0], config[1], ready[0], ready[1], log_fd, devnull});
        return fail_errno(ErrorKind::Engine, "fork for boxlite-shim-kvm", error);
    }
    if (pid == 0) {
        // Own session: signals to the caller's process group do not reach the box.
        ::setsid();
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        // Every source is first copied above the targets, without O_CLOEXEC: a source that
        // already sits on its target (the lowest free fds are often 3, 4 ...) would make
        // dup2 a no-op that keeps close-on-exec, and the shim would find the fd closed.
        const int sources[6] = {devnull, log_fd, log_fd, config[1], ready[1], watchdog};
        int moved[6];
        for (int target = 0; target < 6; ++target) {
            moved[target] = sources[target] >= 0 ? ::fcntl(sources[target], F_DUPFD, 10) : -1;
            if (sources[target] >= 0 && moved[target] < 0) ::_exit(126);
        }
        for (int target = 0; target < 6; ++target)
            if (moved[target] >= 0 && ::dup2(moved[target], target) != target) ::_exit(126);
        ::close_range(watchdog >= 0 ? 6 : 5, ~0U, 0);
        ::execv(argv[0], argv.data());
        static const char message[] = "error cannot execute boxlite-shim-kvm\n";
        [[maybe_unused]] auto n = ::write(4, message, sizeof(message) - 1);
        ::_exit(127);
    }
    close_all({watchdog, config[1], ready[1], log_fd, devnull});
    const auto deadline = Clock::now() + spawn.ready_timeout;
    const bool sent = send_all(config[0], spawn.config, deadline);
    ::close(config[0]);  // EOF: the shim reads the config to the end
    auto line = sent ? read_line(ready[0], std::chrono::duration_cast<std::chrono::milliseconds>(
                                                       std::max(deadline - Clock::now(), Clock::duration::zero())))
                     : std::nullopt;
    ::close(ready[0]);
    auto give_up = [&](std::string why) -> tl::unexpected<BoxliteError> {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
        return fail(ErrorKind::Engine, "{}", why);
    };
    if (!line)
        return give_up(fmt::format("boxlite-shim-kvm exited or went silent without reporting; its log: {}",
                                   tail_of(spawn.log)));
    if (line->rfind("error ", 0) == 0) return give_up(line->substr(6));
    if (line->rfind("ok ", 0) != 0) return give_up(fmt::format("unexpected shim answer '{}'", *line));
    return SpawnedShim{pid, *line};
}

}  // namespace boxlite::vmm

namespace boxlite::detail {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using vmm::agent_answers;
using vmm::default_init_dir;
using vmm::find_shim;
using vmm::reap_if_child;
using vmm::tail_of;

BoxliteResult<void> kvm_engine_available() { return vmm::cached_long_mode_support(); }

BoxliteResult<EngineHandle> kvm_engine_start(const KvmEngineOptions& options, const EngineLaunch& launch) {
    if (!launch.config) return fail(ErrorKind::InvalidArgument, "kvm engine: launch without a box config");
    const auto& box = *launch.config;
    const fs::path box_dir = launch.box_dir;
    BOXLITE_TRY(auto shim, find_shim(options));
    const fs::path kernel = options.kernel.empty() ? default_init_dir() / "vmlinux" : options.kernel;
    fs::path initrd = options.initrd;
    if (initrd.empty() && fs::exists(default_init_dir() / "initramfs.cpio.gz"))
        initrd = default_init_dir() / "initramfs.cpio.gz";
    if (!fs::exists(kernel))
        return fail(ErrorKind::Config, "kvm engine: no guest kernel at '{}' (put vmlinux in <home>/init/)",
                    kernel.string());
    const fs::path disk = box_dir / "disk.qcow2";
    // Refusals first, so a box that cannot run leaves no disk behind.
    BOXLITE_TRY(auto config, vmm::make_shim_config(options, launch, kernel, initrd, disk));
    BOXLITE_TRY_VOID(vmm::prepare_box_disk(disk, launch.rootfs, box.options.disk_size_gb));

    // detach=false: the shim watches a pipe whose write end only this process holds.
    int watchdog[2] = {-1, -1};
    if (!box.options.detach && ::pipe2(watchdog, O_CLOEXEC) != 0)
        return fail_errno(ErrorKind::Engine, "creating the box's watchdog pipe", errno);
    vmm::ShimSpawn spawn;
    spawn.shim = shim;
    spawn.config = vmm::to_json_document(config).dump();
    spawn.log = box_dir / "shim.log";
    spawn.watchdog_read_fd = watchdog[0];
    auto spawned = vmm::spawn_kvm_shim(spawn);
    if (!spawned) {
        if (watchdog[1] >= 0) ::close(watchdog[1]);
        return fail(spawned.error().with_context(fmt::format("starting box {}", config.box_id)));
    }
    const pid_t pid = spawned->pid;
    if (watchdog[1] >= 0) WatchdogRegistry::instance().add(pid, watchdog[1]);

    EngineHandle handle;
    handle.pid = pid;
    handle.pid_start_time = process_start_time(pid).value_or(0);
    const fs::path uds = config.vsock_uds;
    handle.endpoint = fmt::format("vsock-uds:{}:{}", uds.string(), options.agent_port);
    auto give_up = [&](std::string why) -> tl::unexpected<BoxliteError> {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        WatchdogRegistry::instance().release(pid);
        return fail(ErrorKind::Engine, "starting box {}: {}", config.box_id, why);
    };
    const auto deadline = Clock::now() + options.boot_timeout;
    while (Clock::now() < deadline) {
        if (agent_answers(uds, options.agent_port)) return handle;
        reap_if_child(pid);
        if (!process_alive(handle.pid, handle.pid_start_time)) {
            WatchdogRegistry::instance().release(pid);
            return fail(ErrorKind::Engine, "box {}: the VM stopped before its agent answered; console: {}",
                        config.box_id, tail_of(box_dir / "console.log"));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return give_up(fmt::format("the guest agent did not answer on vsock port {} within {} ms; console: {}",
                               options.agent_port, options.boot_timeout.count(), tail_of(box_dir / "console.log")));
}

BoxliteResult<void> kvm_engine_stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    reap_if_child(handle.pid);
    if (process_alive(handle.pid, handle.pid_start_time)) {
        ::kill(handle.pid, SIGTERM);
        const auto deadline = Clock::now() + timeout;
        while (Clock::now() < deadline) {
            reap_if_child(handle.pid);
            if (!process_alive(handle.pid, handle.pid_start_time)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    return kvm_engine_kill(handle);
}

BoxliteResult<void> kvm_engine_kill(const EngineHandle& handle) {
    reap_if_child(handle.pid);
    if (process_alive(handle.pid, handle.pid_start_time)) {
        if (::kill(handle.pid, SIGKILL) != 0 && errno != ESRCH)
            return fail_errno(ErrorKind::Engine, fmt::format("killing boxlite-shim-kvm pid {}", handle.pid), errno);
        bool gone = false;
        for (int i = 0; i < 500 && !gone; ++i) {
            reap_if_child(handle.pid);
            gone = !process_alive(handle.pid, handle.pid_start_time);
            if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (!gone) return fail(ErrorKind::Engine, "boxlite-shim-kvm pid {} survived SIGKILL for a second", handle.pid);
    }
    // The box is gone: its detach=false watchdog has nothing left to watch.
    WatchdogRegistry::instance().release(handle.pid);
    return {};
}

bool kvm_engine_is_alive(const EngineHandle& handle) {
    reap_if_child(handle.pid);
    return process_alive(handle.pid, handle.pid_start_time);
}

BoxliteResult<EngineMetrics> kvm_engine_metrics(const EngineHandle& handle) {
    if (!kvm_engine_is_alive(handle)) return fail(ErrorKind::InvalidState, "box process {} is not running", handle.pid);
    EngineMetrics metrics;
    metrics.process_count = 1;
    std::ifstream status("/proc/" + std::to_string(handle.pid) + "/status");
    std::string key;
    while (status >> key) {
        if (key == "VmRSS:") {
            std::uint64_t kib = 0;
            status >> kib;
            metrics.memory_bytes = kib * 1024;
        }
        std::getline(status, key);
    }
    std::ifstream stat("/proc/" + std::to_string(handle.pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    if (close != std::string::npos) {
        std::istringstream rest(line.substr(close + 2));
        std::string field;
        std::uint64_t utime = 0, stime = 0;
        for (int index = 3; index <= 15 && rest >> field; ++index) {
            if (index == 14) utime = std::stoull(field);
            if (index == 15) stime = std::stoull(field);
        }
        const long ticks = ::sysconf(_SC_CLK_TCK);
        if (ticks > 0) metrics.cpu_time_ns = (utime + stime) * (1000000000ULL / static_cast<std::uint64_t>(ticks));
    }
    return metrics;
}

}  // namespace boxlite::detail
