// The compiled half of KvmEngine (include/boxlite/engine/kvm_engine.hpp): the disk overlay,
// spawning boxlite-shim-kvm with its config on a pipe, waiting for the guest agent over the
// hybrid vsock socket, and managing the shim process by pid + start time.
#include <boxlite/detail/process.hpp>
#include <boxlite/engine/kvm_engine.hpp>

#include "qcow2/qcow2_image.hpp"
#include "vmm/file.hpp"
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

namespace boxlite::detail {
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
    return vmm::read_file_text(file.string(), bytes);
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

}  // namespace

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

    // The box's disk: a QCOW2 overlay over the image's read-only ext4 base, made once per box.
    const fs::path disk = box_dir / "disk.qcow2";
    if (!fs::exists(disk)) {
        qcow2::CreateOptions create;
        create.backing_file = launch.rootfs.string();
        create.backing_format = "raw";
        if (box.options.disk_size_gb) create.size = std::uint64_t{*box.options.disk_size_gb} << 30;
        BOXLITE_TRY(auto image, qcow2::Qcow2Image::create(disk, create));
        BOXLITE_TRY_VOID(image->close());
    }

    vmm::KvmShimConfig config;
    config.box_id = box.id.str();
    config.cpus = box.options.cpus;
    config.memory_mib = box.options.memory_mib;
    config.kernel = kernel.string();
    config.initrd = initrd.string();
    config.cmdline = fmt::format("console=ttyS0 reboot=k panic=-1 quiet boxlite.box_id={} boxlite.agent_port={}{}{}",
                                 config.box_id, options.agent_port, options.extra_cmdline.empty() ? "" : " ",
                                 options.extra_cmdline);
    config.disk = vmm::ShimDiskConfig{disk.string(), "qcow2", false, "boxlite-root"};
    const fs::path uds = box_dir / "vsock.sock";
    config.vsock_uds = uds.string();
    config.guest_cid = options.guest_cid;
    config.console_log = (box_dir / "console.log").string();
    const std::string document = vmm::to_json_document(config).dump();

    int config_pipe[2], ready_pipe[2];
    if (::pipe2(config_pipe, O_CLOEXEC) != 0) return fail_errno(ErrorKind::Engine, "pipe for the shim config", errno);
    if (::pipe2(ready_pipe, O_CLOEXEC) != 0) {
        ::close(config_pipe[0]);
        ::close(config_pipe[1]);
        return fail_errno(ErrorKind::Engine, "pipe for the shim's ready line", errno);
    }
    const std::string log = (box_dir / "shim.log").string();
    const pid_t pid = ::fork();
    if (pid < 0) return fail_errno(ErrorKind::Engine, "fork for boxlite-shim-kvm", errno);
    if (pid == 0) {
        // Child: own session (signals to the caller's group do not reach the box), fds 3/4.
        ::setsid();
        ::dup2(config_pipe[0], 3);
        ::dup2(ready_pipe[1], 4);
        const int null = ::open("/dev/null", O_RDONLY);
        ::dup2(null, 0);
        const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0640);
        if (out >= 0) {
            ::dup2(out, 1);
            ::dup2(out, 2);
        }
        const std::string path = shim.string();
        char* const argv[] = {const_cast<char*>(path.c_str()), const_cast<char*>("--config-fd"),
                              const_cast<char*>("3"), const_cast<char*>("--ready-fd"), const_cast<char*>("4"),
                              nullptr};
        ::execv(path.c_str(), argv);
        ::_exit(127);
    }
    ::close(config_pipe[0]);
    ::close(ready_pipe[1]);
    const bool written =
        ::write(config_pipe[1], document.data(), document.size()) == static_cast<ssize_t>(document.size());
    ::close(config_pipe[1]);
    auto line = written ? read_line(ready_pipe[0], std::chrono::seconds(30)) : std::nullopt;
    ::close(ready_pipe[0]);
    auto give_up = [&](std::string why) -> tl::unexpected<BoxliteError> {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return fail(ErrorKind::Engine, "starting box {}: {}", config.box_id, why);
    };
    if (!line) return give_up(fmt::format("boxlite-shim-kvm exited without reporting; its log: {}", tail_of(log)));
    if (line->rfind("error ", 0) == 0) return give_up(line->substr(6));
    if (line->rfind("ok ", 0) != 0) return give_up(fmt::format("unexpected shim answer '{}'", *line));

    EngineHandle handle;
    handle.pid = pid;
    handle.pid_start_time = process_start_time(pid).value_or(0);
    handle.endpoint = fmt::format("vsock-uds:{}:{}", uds.string(), options.agent_port);
    const auto deadline = Clock::now() + options.boot_timeout;
    while (Clock::now() < deadline) {
        if (agent_answers(uds, options.agent_port)) return handle;
        reap_if_child(pid);
        if (!process_alive(handle.pid, handle.pid_start_time))
            return fail(ErrorKind::Engine, "box {}: the VM stopped before its agent answered; console: {}",
                        config.box_id, tail_of(box_dir / "console.log"));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return give_up(fmt::format("the guest agent did not answer on vsock port {} within {} ms; console: {}",
                               options.agent_port, options.boot_timeout.count(), tail_of(box_dir / "console.log")));
}

BoxliteResult<void> kvm_engine_stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    reap_if_child(handle.pid);
    if (!process_alive(handle.pid, handle.pid_start_time)) return {};
    ::kill(handle.pid, SIGTERM);
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        reap_if_child(handle.pid);
        if (!process_alive(handle.pid, handle.pid_start_time)) return {};
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return kvm_engine_kill(handle);
}

BoxliteResult<void> kvm_engine_kill(const EngineHandle& handle) {
    reap_if_child(handle.pid);
    if (!process_alive(handle.pid, handle.pid_start_time)) return {};
    if (::kill(handle.pid, SIGKILL) != 0 && errno != ESRCH)
        return fail_errno(ErrorKind::Engine, fmt::format("killing boxlite-shim-kvm pid {}", handle.pid), errno);
    for (int i = 0; i < 500; ++i) {
        reap_if_child(handle.pid);
        if (!process_alive(handle.pid, handle.pid_start_time)) return {};
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return fail(ErrorKind::Engine, "boxlite-shim-kvm pid {} survived SIGKILL for a second", handle.pid);
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
