// NamespaceEngine's members that are not templates and not small (namespace_engine.hpp): compiled
// once here instead of in every file that includes the engine.
#include <boxlite/engine/namespace_engine.hpp>

#include <boxlite/box_config.hpp>

namespace boxlite {

namespace detail {

void sweep_stale_cgroups() {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto now = fs::file_time_type::clock::now();
    for (const char* hierarchy : {"/sys/fs/cgroup/boxlite", "/sys/fs/cgroup/memory/boxlite", "/sys/fs/cgroup/cpu/boxlite",
                                  "/sys/fs/cgroup/cpuacct/boxlite", "/sys/fs/cgroup/pids/boxlite"}) {
        for (const auto& entry : fs::directory_iterator(hierarchy, ec)) {
            if (!entry.is_directory(ec)) continue;
            const auto modified = fs::last_write_time(entry.path(), ec);
            if (ec || now - modified < std::chrono::minutes(1)) continue;
            std::ifstream procs(entry.path() / "cgroup.procs");
            std::string first;
            if (procs >> first) continue;  // still has members
            ::rmdir(entry.path().c_str());
        }
    }
}

}  // namespace detail

BoxliteResult<void> NamespaceEngine::available() const {
    std::vector<std::string> missing;
    if (::geteuid() != 0) missing.emplace_back("root privileges (namespaces, overlayfs and cgroups need CAP_SYS_ADMIN)");
    {
        std::ifstream filesystems("/proc/filesystems");
        std::string line;
        bool overlay = false;
        while (std::getline(filesystems, line)) overlay = overlay || line.find("overlay") != std::string::npos;
        if (!overlay) missing.emplace_back("overlayfs support in the kernel");
    }
    if (::access("/proc/self/ns/pid", F_OK) != 0) missing.emplace_back("PID namespaces");
    if (settings_.shim.empty()) missing.emplace_back("the boxlite-shim binary (set BOXLITE_SHIM)");
    if (settings_.agent.empty()) missing.emplace_back("the boxlite-agent binary (set BOXLITE_AGENT)");
    if (missing.empty()) return {};
    std::string text;
    for (const auto& m : missing) text += (text.empty() ? "" : "; ") + m;
    return fail(ErrorKind::UnsupportedEngine, "namespace engine needs {}", text);
}

BoxliteResult<EngineHandle> NamespaceEngine::start(const EngineLaunch& launch) {
    if (launch.config == nullptr) return fail(ErrorKind::InvalidArgument, "engine launch without a box config");
    BOXLITE_TRY_VOID(supports(*launch.config));
    BOXLITE_TRY_VOID(available());
    detail::sweep_stale_cgroups();
    const auto& config = *launch.config;
    const auto& options = config.options;
    std::error_code ec;
    if (!std::filesystem::is_directory(launch.rootfs, ec)) {
        return fail(ErrorKind::Storage, "rootfs '{}' of box {} is not a directory", launch.rootfs.string(), config.id);
    }
    const auto socket = (launch.box_dir / "agent.sock").string();
    if (socket.size() >= sizeof(sockaddr_un{}.sun_path)) {
        return fail(ErrorKind::Config, "agent socket path '{}' is longer than {} bytes; use a shorter BOXLITE_HOME",
                    socket, sizeof(sockaddr_un{}.sun_path) - 1);
    }

    // The shim's command line, built before fork (the child only makes syscalls).
    std::vector<std::string> args = {settings_.shim.string(), "namespace",
                                     "--box-id", config.id.str(),
                                     "--hostname", config.id.short_id(),
                                     "--box-dir", launch.box_dir.string(),
                                     "--rootfs", launch.rootfs.string(),
                                     "--agent", settings_.agent.string(),
                                     "--socket", socket,
                                     "--ready-fd", "3"};
    const auto& limits = options.resource_limits;
    const auto& security_limits = options.security.resource_limits;
    auto pick = [](const std::optional<std::uint64_t>& a, const std::optional<std::uint64_t>& b) { return a ? a : b; };
    const std::uint64_t memory = limits.max_memory.value_or(static_cast<std::uint64_t>(options.memory_mib) << 20);
    args.insert(args.end(), {"--memory", std::to_string(memory), "--cpus", std::to_string(options.cpus)});
    if (auto v = pick(limits.max_processes, security_limits.max_processes)) args.insert(args.end(), {"--pids", std::to_string(*v)});
    if (auto v = pick(limits.max_open_files, security_limits.max_open_files)) args.insert(args.end(), {"--nofile", std::to_string(*v)});
    if (auto v = pick(limits.max_file_size, security_limits.max_file_size)) args.insert(args.end(), {"--fsize", std::to_string(*v)});
    if (auto v = pick(limits.max_cpu_time, security_limits.max_cpu_time)) args.insert(args.end(), {"--cpu-time", std::to_string(*v)});
    for (const auto& [key, value] : launch.env) args.insert(args.end(), {"--env", key + "=" + value});
    if (!launch.working_dir.empty()) args.insert(args.end(), {"--workdir", launch.working_dir});
    if (!launch.user.empty()) args.insert(args.end(), {"--user", launch.user});
    for (const auto& v : options.volumes) {
        args.insert(args.end(), {"--volume", v.host_path + ":" + v.guest_path + (v.read_only ? ":ro" : "")});
    }
    args.insert(args.end(), {"--capabilities", options.security.jailer_enabled ? "box" : "all",
                             "--seccomp", options.security.seccomp_enabled ? "on" : "off"});
    int ready[2] = {-1, -1};
    int watchdog[2] = {-1, -1};
    // A socket pair rather than a pipe: with record_started the shim waits on it for our word
    // that the box is recorded (--ready-ack), and ends the box if we die first.
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ready) != 0) {
        return fail_errno(ErrorKind::Engine, "creating the shim's ready socket", errno);
    }
    if (launch.record_started) args.insert(args.end(), {"--ready-ack", "on"});
    // The box's lock goes along until the box is recorded (EngineLaunch::box_lock_fd).
    const int box_lock = launch.record_started ? launch.box_lock_fd : -1;
    if (box_lock >= 0) args.insert(args.end(), {"--lock-fd", "5"});
    if (!options.detach) {
        if (::pipe2(watchdog, O_CLOEXEC) != 0) {
            ::close(ready[0]);
            ::close(ready[1]);
            return fail_errno(ErrorKind::Engine, "creating the box's watchdog pipe", errno);
        }
        args.insert(args.end(), {"--watchdog-fd", "4"});
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const auto log_path = (launch.box_dir / "shim.log").string();
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        for (int fd : {ready[0], ready[1], watchdog[0], watchdog[1]}) if (fd >= 0) ::close(fd);
        return fail_errno(ErrorKind::Engine, "opening " + log_path, errno);
    }
    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);

    const pid_t intermediate = ::fork();
    if (intermediate < 0) {
        for (int fd : {ready[0], ready[1], watchdog[0], watchdog[1], log_fd, devnull}) if (fd >= 0) ::close(fd);
        return fail_errno(ErrorKind::Engine, "fork", errno);
    }
    if (intermediate == 0) {
        // Async-signal-safe calls only: the parent may be multi-threaded.
        ::setsid();
        const pid_t shim = ::fork();
        if (shim != 0) ::_exit(shim < 0 ? 1 : 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        // Move the fds the shim keeps to 3 and 4 without clobbering each other.
        const int ready_w = ::fcntl(ready[1], F_DUPFD, 10);
        const int watch_r = watchdog[0] >= 0 ? ::fcntl(watchdog[0], F_DUPFD, 10) : -1;
        const int lock_r = box_lock >= 0 ? ::fcntl(box_lock, F_DUPFD, 10) : -1;
        ::dup2(devnull, 0);
        ::dup2(log_fd, 1);
        ::dup2(log_fd, 2);
        ::dup2(ready_w, 3);
        if (watch_r >= 0) ::dup2(watch_r, 4);
        else ::close(4);
        if (lock_r >= 0) ::dup2(lock_r, 5);
        ::close_range(lock_r >= 0 ? 6 : 5, ~0U, 0);
        ::execv(argv[0], argv.data());
        static const char msg[] = "error cannot execute boxlite-shim\n";
        (void)!::write(3, msg, sizeof msg - 1);
        ::_exit(127);
    }
    ::close(ready[1]);
    ::close(log_fd);
    if (devnull >= 0) ::close(devnull);
    if (watchdog[0] >= 0) ::close(watchdog[0]);
    int status = 0;
    while (::waitpid(intermediate, &status, 0) < 0 && errno == EINTR) {}

    // One line back: "ok <agent-pid> <shim-pid>" or "error <message>".
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + settings_.start_timeout;
    while (line.find('\n') == std::string::npos) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) break;
        pollfd pfd{ready[0], POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
        char buf[512];
        const auto n = ::read(ready[0], buf, sizeof buf);
        if (n <= 0) break;
        line.append(buf, static_cast<std::size_t>(n));
    }
    auto give_up = [&](std::string why) -> BoxliteResult<EngineHandle> {
        ::close(ready[0]);  // a shim waiting for our word sees EOF and ends the box
        if (watchdog[1] >= 0) ::close(watchdog[1]);  // a shim still starting sees EOF and stops
        return fail(ErrorKind::Engine, "starting box {} with the namespace engine: {} (see {})", config.id, why, log_path);
    };
    if (line.rfind("ok ", 0) != 0) {
        if (line.rfind("error ", 0) == 0) return give_up(trim(line.substr(6)));
        return give_up(line.empty() ? "boxlite-shim exited without reporting" : "unexpected shim report '" + trim(line) + "'");
    }
    std::istringstream fields(line.substr(3));
    std::int32_t agent_pid = 0, shim_pid = 0;
    fields >> agent_pid >> shim_pid;
    if (shim_pid <= 0) return give_up("malformed shim report '" + trim(line) + "'");
    EngineHandle handle;
    handle.pid = shim_pid;
    handle.pid_start_time = detail::process_start_time(shim_pid).value_or(0);
    handle.endpoint = "unix:" + socket;
    if (launch.record_started) {
        auto recorded = launch.record_started(handle);
        if (!recorded) {
            (void)give_up("");
            (void)kill(handle);
            return fail(recorded.error().with_context(fmt::format("recording box {} as running", config.id)));
        }
        // The box is recorded: the shim may keep it.
        if (::send(ready[0], "a", 1, MSG_NOSIGNAL) != 1) {
            const int error = errno;
            (void)give_up("");
            (void)kill(handle);
            return fail_errno(ErrorKind::Engine, fmt::format("telling the shim of box {} it is recorded", config.id), error);
        }
    }
    ::close(ready[0]);
    if (watchdog[1] >= 0) detail::WatchdogRegistry::instance().add(shim_pid, watchdog[1]);
    return handle;
}

BoxliteResult<void> NamespaceEngine::stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    if (!is_alive(handle)) return cleanup(handle);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    {
        // Graceful: the agent stops every process and exits; PID 1's exit ends the box.
        auto stream = UnixTransport{}.connect(handle.endpoint, std::min(timeout, std::chrono::milliseconds(2000)));
        if (stream) {
            // A wedged agent must not hold stop() past its timeout in the handshake either.
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (auto agent = protocol::AgentClient::connect(std::move(*stream),
                                                            std::max(left, std::chrono::milliseconds(1)))) {
                (void)agent->shutdown(timeout);
            }
        }
    }
    if (!detail::wait_for_exit(handle.pid, handle.pid_start_time, deadline)) return kill(handle);
    return cleanup(handle);
}

BoxliteResult<void> NamespaceEngine::kill(const EngineHandle& handle) {
    if (is_alive(handle)) {
        if (::kill(handle.pid, SIGKILL) != 0 && errno != ESRCH) {
            return fail_errno(ErrorKind::Engine, fmt::format("killing boxlite-shim pid {}", handle.pid), errno);
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        if (!detail::wait_for_exit(handle.pid, handle.pid_start_time, deadline)) {
            return fail(ErrorKind::Engine, "boxlite-shim pid {} survived SIGKILL for 10 s", handle.pid);
        }
    }
    return cleanup(handle);
}

BoxliteResult<EngineMetrics> NamespaceEngine::metrics(const EngineHandle& handle) {
    if (!is_alive(handle)) return fail(ErrorKind::InvalidState, "the box behind boxlite-shim pid {} is not running", handle.pid);
    EngineMetrics m;
    const auto info = cgroup_info(handle);
    auto read_u64 = [](const std::string& path) -> std::optional<std::uint64_t> {
        std::ifstream in(path);
        std::uint64_t v = 0;
        if (in >> v) return v;
        return std::nullopt;
    };
    if (auto it = info.find("memory"); it != info.end() && !it->second.empty()) {
        m.memory_bytes = read_u64(it->second + "/memory.usage_in_bytes").value_or(read_u64(it->second + "/memory.current").value_or(0));
    }
    if (auto it = info.find("cpuacct"); it != info.end() && !it->second.empty()) {
        m.cpu_time_ns = read_u64(it->second + "/cpuacct.usage").value_or(0);
    } else if (auto cpu = info.find("cpu"); cpu != info.end() && !cpu->second.empty()) {
        std::ifstream stat(cpu->second + "/cpu.stat");  // v2: usage_usec
        std::string key;
        std::uint64_t value = 0;
        while (stat >> key >> value) {
            if (key == "usage_usec") m.cpu_time_ns = value * 1000;
        }
    }
    // The box's init joined its cgroups after the fork and the shim never did, so every member
    // is one of the box's processes. cgroup.procs lists processes; pids.current would count
    // threads as well.
    for (const char* key : {"pids", "memory", "cpu", "cpuacct"}) {
        auto it = info.find(key);
        if (it == info.end() || it->second.empty()) continue;
        std::ifstream procs(it->second + "/cgroup.procs");
        if (!procs) continue;
        std::uint32_t count = 0;
        std::string pid;
        while (std::getline(procs, pid)) count += pid.empty() ? 0 : 1;
        m.process_count = count;
        break;
    }
    return m;
}

std::map<std::string, std::string> NamespaceEngine::cgroup_info(const EngineHandle& handle) {
    std::map<std::string, std::string> info;
    std::ifstream in(box_dir_of(handle) / "cgroup.info");
    std::string key, value;
    while (in >> key) {
        std::getline(in, value);
        if (!value.empty() && value.front() == ' ') value.erase(0, 1);
        if (key != "applied" && key != "skipped") info[key] = value;
    }
    return info;
}

BoxliteResult<void> NamespaceEngine::cleanup(const EngineHandle& handle) {
    detail::WatchdogRegistry::instance().release(handle.pid);
    const auto dir = box_dir_of(handle);
    std::error_code ec;
    std::filesystem::remove(dir / "agent.sock", ec);
    for (const auto& [key, path] : cgroup_info(handle)) {
        if (path.empty()) continue;
        for (int i = 0; i < 200 && ::rmdir(path.c_str()) != 0 && errno == EBUSY; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    return {};
}

}  // namespace boxlite
