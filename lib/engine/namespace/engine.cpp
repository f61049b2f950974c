// NamespaceEngine's members (include/boxlite/engine/namespace_engine.hpp), but available()
// (probe.cpp) and the shim's command line (launch.cpp).
#include <boxlite/engine/namespace_engine.hpp>

#include "engine/common/helper_binary.hpp"
#include "engine/common/network_support.hpp"
#include "engine/common/shim_spawn.hpp"
#include "engine/common/watchdog.hpp"
#include "engine/namespace/launch.hpp"
#include "jailer/cgroup.hpp"
#include "net/firewall.hpp"

#include <boxlite/box_config.hpp>
#include <boxlite/detail/process.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/unix_transport.hpp>

#include <fmt/ranges.h>

#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>
#include <thread>

namespace boxlite {

namespace {

using engine::WatchdogRegistry;

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

std::filesystem::path box_dir_of(const EngineHandle& handle) {
    std::string_view endpoint = handle.endpoint;
    if (endpoint.rfind("unix:", 0) == 0) endpoint.remove_prefix(5);
    return std::filesystem::path(std::string(endpoint)).parent_path();
}

std::map<std::string, std::string> cgroup_info(const EngineHandle& handle) {
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

/// Waits (2 s at most) for the box's init, the agent, when a SIGKILLed shim left it behind for a
/// moment: its PDEATHSIG arrives asynchronously, and as the init of the box's PID namespace it
/// ends only after the kernel has killed and reaped every other process of the box. Its cgroups
/// may already be empty by then (a task leaves them early in its exit). agent.pid names it; a
/// pid that is no longer an agent is not waited for.
void wait_for_agent(const std::filesystem::path& dir) {
    std::int32_t pid = 0;
    if (!(std::ifstream(dir / "agent.pid") >> pid) || pid <= 0) return;
    std::string name;
    if (!std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), name) || name != "boxlite-agent") return;
    (void)detail::wait_for_exit(pid, 0, std::chrono::steady_clock::now() + std::chrono::seconds(2));
}

/// What a SIGKILLed shim could not undo: the socket and the cgroup directories. Returns once no
/// process of the box is left.
BoxliteResult<void> cleanup(const EngineHandle& handle) {
    WatchdogRegistry::instance().release(handle.pid);
    const auto dir = box_dir_of(handle);
    wait_for_agent(dir);
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

/// Removes box cgroups left behind by shims that were SIGKILLed while nobody cleaned up after
/// them (their box records may be gone already). Only empty cgroups untouched for a minute are
/// removed, so a shim that has just created its cgroup and not yet joined it is never raced.
void sweep_stale_cgroups() {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto now = fs::file_time_type::clock::now();
    for (const char* hierarchy :
         {"/sys/fs/cgroup/boxlite", "/sys/fs/cgroup/memory/boxlite", "/sys/fs/cgroup/cpu/boxlite",
          "/sys/fs/cgroup/cpuacct/boxlite", "/sys/fs/cgroup/pids/boxlite", "/sys/fs/cgroup/unified/boxlite"}) {
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

}  // namespace

NamespaceEngine::NamespaceEngine() : NamespaceEngine(NamespaceEngineOptions{}) {}

NamespaceEngine::NamespaceEngine(NamespaceEngineOptions options) : options_(std::move(options)) {
    // Located once; what is missing is reported by available(), which start() asks first.
    auto shim = engine::locate_helper_binary("boxlite-shim", "BOXLITE_SHIM", options_.shim);
    auto agent = engine::locate_helper_binary("boxlite-agent", "BOXLITE_AGENT", options_.agent);
    options_.shim = shim ? *shim : std::filesystem::path();
    options_.agent = agent ? *agent : std::filesystem::path();
    if (!shim) missing_helpers_ = shim.error().message();
    if (!agent) missing_helpers_ += (missing_helpers_.empty() ? "" : "; ") + agent.error().message();
}

BoxliteResult<void> NamespaceEngine::supports(const BoxConfig& config) {
    const auto& options = config.options;
    BOXLITE_TRY_VOID(engine::check_network_options(config));
    if (options.disk_size_gb) {
        // The disk limit is an ext4 image on a loop device (lib/shim/namespace_mode.cpp); never
        // silently ignored.
        if (::access("/dev/loop-control", R_OK | W_OK) != 0) {
            return fail(ErrorKind::Unsupported,
                        "disk_size_gb ({} GB) of box {} needs a loop device, and /dev/loop-control cannot be "
                        "opened here; leave the disk size unset (no limit) or load the loop module",
                        *options.disk_size_gb, config.id);
        }
        if (::access("/usr/sbin/mkfs.ext4", X_OK) != 0 && ::access("/sbin/mkfs.ext4", X_OK) != 0) {
            return fail(ErrorKind::Unsupported,
                        "disk_size_gb ({} GB) of box {} needs mkfs.ext4 (e2fsprogs), which is not installed; "
                        "leave the disk size unset (no limit) or install e2fsprogs",
                        *options.disk_size_gb, config.id);
        }
    }
    return {};
}

bool NamespaceEngine::is_alive(const EngineHandle& handle) const {
    return detail::process_alive(handle.pid, handle.pid_start_time);
}

BoxliteResult<EngineHandle> NamespaceEngine::start(const EngineLaunch& launch) {
    if (launch.config == nullptr) return fail(ErrorKind::InvalidArgument, "engine launch without a box config");
    BOXLITE_TRY_VOID(supports(*launch.config));
    BOXLITE_TRY_VOID(available());
    // Housekeeping, in parallel with this start (it reads every box cgroup on the host: about
    // 0.5 ms with 40 of them) and never racing it: only cgroups untouched for a minute go.
    std::jthread sweeper;
    try {
        sweeper = std::jthread(sweep_stale_cgroups);
    } catch (const std::system_error&) {
        sweep_stale_cgroups();  // no thread to be had: do it here
    }
    const auto& config = *launch.config;
    std::error_code ec;
    if (!std::filesystem::is_directory(launch.rootfs, ec)) {
        return fail(ErrorKind::Storage, "rootfs '{}' of box {} is not a directory", launch.rootfs.string(), config.id);
    }
    // Anonymous volumes: the box's own folders, made at the first start and kept until rm.
    for (std::size_t i = 0; i < config.options.volumes.size(); ++i) {
        if (!config.options.volumes[i].anonymous()) continue;
        const auto dir = anonymous_volume_path(launch.box_dir, i);
        std::filesystem::create_directories(dir, ec);
        if (ec) {
            return fail(ErrorKind::Storage, "creating the anonymous volume {} of box {} for {}: {}", dir.string(),
                        config.id, config.options.volumes[i].guest_path, ec.message());
        }
    }
    const auto socket = (launch.box_dir / "agent.sock").string();

    engine::ShimProcessSpawn spawn;
    spawn.shim = options_.shim;
    spawn.args = engine::ns::shim_arguments(options_, launch, socket);
    spawn.log = launch.box_dir / "shim.log";
    spawn.log_mode = 0600;
    spawn.detach = true;  // the shim is nobody's child: it outlives this process unless watched
    spawn.ready_timeout = options_.start_timeout;
    if (launch.record_started) {
        // The shim waits for our word that the box is recorded, and ends the box if we die first;
        // until then it shares the box's lock, so nobody works on a box still being set up.
        spawn.args.insert(spawn.args.end(), {"--ready-ack", "on"});
        spawn.keep_ready_channel = true;
        if (launch.box_lock_fd >= 0) spawn.extra_fds.emplace_back("lock-fd", launch.box_lock_fd);
    }
    BOXLITE_TRY(const auto published, engine::publish_ports(config));
    for (const auto& port : published) {
        spawn.args.insert(spawn.args.end(), {port.protocol == PortProtocol::Udp ? "--publish-udp" : "--publish-tcp",
                                             engine::passt_port_spec(port)});
    }
    engine::WatchdogPipe watchdog;
    if (!config.options.detach) {
        BOXLITE_TRY(watchdog, engine::make_watchdog_pipe());
        spawn.watchdog_read_fd = watchdog.read_end;
    }
    const auto log_path = spawn.log.string();
    auto give_up = [&](std::string why) -> BoxliteResult<EngineHandle> {
        if (watchdog.write_end >= 0) ::close(watchdog.write_end);  // a shim still starting sees EOF and stops
        return fail(ErrorKind::Engine, "starting box {} with the namespace engine: {} (see {})", config.id, why,
                    log_path);
    };
    auto spawned = engine::spawn_shim_process(spawn);
    if (!spawned) return give_up(spawned.error().message());

    // One line back: "ok <agent-pid> <shim-pid>" or "error <message>".
    const std::string line = spawned->ready.value_or("");
    if (line.rfind("ok ", 0) != 0) {
        if (line.rfind("error ", 0) == 0) return give_up(trim(line.substr(6)));
        return give_up(line.empty() ? "boxlite-shim exited without reporting"
                                    : "unexpected shim report '" + trim(line) + "'");
    }
    std::istringstream fields(line.substr(3));
    std::int32_t agent_pid = 0, shim_pid = 0;
    fields >> agent_pid >> shim_pid;
    if (shim_pid <= 0) return give_up("malformed shim report '" + trim(line) + "'");
    EngineHandle handle;
    handle.pid = shim_pid;
    handle.pid_start_time = detail::process_start_time(shim_pid).value_or(0);
    handle.endpoint = "unix:" + socket;
    handle.ports = published;  // as bound: `ls`, `inspect` and BoxInfo show the picked host ports
    if (launch.record_started) {
        auto recorded = launch.record_started(handle);
        if (!recorded) {
            spawned->ready_channel.reset();  // the shim sees EOF and ends the box
            (void)give_up("");
            (void)kill(handle);
            return fail(recorded.error().with_context(fmt::format("recording box {} as running", config.id)));
        }
        // The box is recorded: the shim may keep it.
        if (::send(spawned->ready_channel.get(), "a", 1, MSG_NOSIGNAL) != 1) {
            const int error = errno;
            spawned->ready_channel.reset();
            (void)give_up("");
            (void)kill(handle);
            return fail_errno(ErrorKind::Engine, fmt::format("telling the shim of box {} it is recorded", config.id),
                              error);
        }
        spawned->ready_channel.reset();
    }
    if (watchdog.write_end >= 0) WatchdogRegistry::instance().add(shim_pid, watchdog.write_end);
    return handle;
}

BoxliteResult<void> NamespaceEngine::stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    if (!is_alive(handle)) return cleanup(handle);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    {
        // Graceful: the agent stops every process and exits; PID 1's exit ends the box.
        // A socket that is missing or refuses is retried only while the shim lives: the agent is
        // then gone or going (asked to shut down on another connection already, as `run` does once
        // its command has ended), and the shim unlinks the socket before it exits, so waiting the
        // whole connect budget for it would only delay the stop (by 2 s when it raced the unlink).
        const auto connect_deadline = std::chrono::steady_clock::now() +
                                      std::min(timeout, std::chrono::milliseconds(2000));
        auto stream = UnixTransport{}.connect(handle.endpoint, std::chrono::milliseconds(0));
        for (auto delay = std::chrono::microseconds(200);
             !stream && std::chrono::steady_clock::now() < connect_deadline;
             delay = std::min(delay * 2, std::chrono::microseconds(20000))) {
            // The pause between attempts ends as soon as the shim does (pidfd).
            if (detail::wait_for_exit(handle.pid, handle.pid_start_time, std::chrono::steady_clock::now() + delay)) {
                break;
            }
            stream = UnixTransport{}.connect(handle.endpoint, std::chrono::milliseconds(0));
        }
        if (stream) {
            // A wedged agent must not hold stop() past its timeout in the handshake either.
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                    std::chrono::steady_clock::now());
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
    if (!is_alive(handle))
        return fail(ErrorKind::InvalidState, "the box behind boxlite-shim pid {} is not running", handle.pid);
    EngineMetrics m;
    const auto info = cgroup_info(handle);
    auto read_u64 = [](const std::string& path) -> std::optional<std::uint64_t> {
        std::ifstream in(path);
        std::uint64_t v = 0;
        if (in >> v) return v;
        return std::nullopt;
    };
    if (auto it = info.find("memory"); it != info.end() && !it->second.empty()) {
        m.memory_bytes = read_u64(it->second + "/memory.usage_in_bytes")
                             .value_or(read_u64(it->second + "/memory.current").value_or(0));
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

}  // namespace boxlite
