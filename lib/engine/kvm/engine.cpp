// KvmEngine's members (include/boxlite/engine/kvm_engine.hpp), but available() (probe.cpp):
// the disk overlay, the shim config from the launch request, spawning boxlite-shim-kvm with its
// config on fd 3, waiting for the guest agent over the hybrid vsock socket, and managing the
// shim process by pid + start time. The pieces tests drive without a guest kernel are declared
// in launch.hpp.
#include "engine/kvm/launch.hpp"

#include <boxlite/detail/process.hpp>
#include <boxlite/engine/kvm_engine.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/vsock_uds_transport.hpp>

#include "base/fd.hpp"
#include "base/unix_address.hpp"
#include "engine/common/guest_assets.hpp"
#include "engine/common/helper_binary.hpp"
#include "engine/common/shim_spawn.hpp"
#include "engine/common/watchdog.hpp"
#include "engine/common/network_support.hpp"
#include "engine/common/volumes.hpp"
#include "qcow2/qcow2_image.hpp"
#include "vmm/file.hpp"

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
    return engine::locate_helper_binary("boxlite-shim-kvm", "BOXLITE_SHIM_KVM", options.shim);
}

std::string tail_of(const fs::path& file, std::size_t bytes = 2000) { return read_file_text(file.string(), bytes); }

/// The hybrid vsock handshake against the shim's socket: "CONNECT <port>\n" → "OK <n>\n".
bool agent_answers(const fs::path& uds, std::uint32_t port) {
    base::OwnedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    base::UnixAddress address;
    if (std::string why; !base::UnixAddress::make(uds.string(), address, why)) return false;
    if (::connect(fd.get(), address.get(), address.size()) != 0) return false;
    const auto request = fmt::format("CONNECT {}\n", port);
    if (::write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) return false;
    auto line = engine::read_line(fd.get(), std::chrono::milliseconds(500));
    return line && line->rfind("OK ", 0) == 0;
}

/// agent_answers(), then the protocol's hello on a connection of its own: the agent's socket
/// listens before its boot ends (guest/vm_init.hpp) and the guest kernel queues the connection,
/// so the hello-ack comes when the agent serves. Waits for it until `deadline`; a VM that dies
/// closes the connection, which ends the wait at once.
bool agent_serves(const fs::path& uds, std::uint32_t port, std::chrono::steady_clock::time_point deadline) {
    if (!agent_answers(uds, port)) return false;
    const auto left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 deadline - std::chrono::steady_clock::now()));
    auto stream = VsockUdsTransport{}.connect(fmt::format("vsock-uds:{}:{}", uds.string(), port),
                                              std::min(left, std::chrono::milliseconds(500)));
    return stream && protocol::AgentClient::connect(std::move(*stream), left).has_value();
}

void reap_if_child(std::int32_t pid) {
    int status;
    ::waitpid(pid, &status, WNOHANG);
}

/// <home> of a box folder <home>/boxes/<id>.
fs::path home_of(const fs::path& box_dir) { return box_dir.lexically_normal().parent_path().parent_path(); }

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
    BOXLITE_TRY_VOID(KvmEngine::supports(*launch.config));
    return make_vm_shim_config(options, launch, kernel, initrd, disk);
}

BoxliteResult<void> add_vm_network(const BoxConfig& box, const std::vector<PortSpec>& published, VmNetwork& network,
                                   nlohmann::json& guest_launch) {
    network.enabled = true;
    network.allow_net = box.options.network.allow_net;
    network.publish.clear();
    for (const auto& port : published)
        network.publish.push_back(VmPublishedPort{port.protocol == PortProtocol::Udp, engine::passt_port_spec(port)});
    if (const char* passt = std::getenv("BOXLITE_PASST"); passt != nullptr && *passt != '\0') network.passt = passt;
    if (const char* dns = std::getenv("BOXLITE_NET_DNS"); dns != nullptr && *dns != '\0') network.dns = dns;
    BOXLITE_TRY(auto guest, parse_guest_launch(guest_launch.dump()));
    guest.network = true;
    guest_launch = to_json_document(guest);
    return {};
}

BoxliteResult<KvmShimConfig> make_vm_shim_config(const KvmEngineOptions& options, const EngineLaunch& launch,
                                                 const fs::path& kernel, const fs::path& initrd, const fs::path& disk) {
    if (!launch.config) return fail(ErrorKind::InvalidArgument, "VM engine: launch without a box config");
    const auto& box = *launch.config;
    const auto& o = box.options;

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
    // The TSC words (a guest that calibrates its TSC against the PIT can hang when the host is
    // busy) and no crypto self-tests at boot: guest_assets.hpp.
    const std::string tsc = engine::guest_boot_cmdline();
    config.cmdline = fmt::format("console=ttyS0 reboot=k panic=-1 quiet boxlite.box_id={} boxlite.agent_port={}{}{}{}{}",
                                 config.box_id, options.agent_port, tsc.empty() ? "" : " ", tsc,
                                 options.extra_cmdline.empty() ? "" : " ", options.extra_cmdline);
    config.disk = ShimDiskConfig{disk.string(), "qcow2", false, "boxlite-root"};
    config.vsock_uds = (launch.box_dir / "vsock.sock").string();
    config.guest_cid = options.guest_cid;
    config.console_log = (launch.box_dir / "console.log").string();
    if (launch.log_max_bytes) config.console_log_max_bytes = *launch.log_max_bytes;

    GuestLaunchConfig guest;
    guest.box_id = config.box_id;
    guest.agent_port = options.agent_port;
    guest.env = launch.env;
    guest.working_dir = launch.working_dir.empty() ? "/" : launch.working_dir;
    guest.user = launch.user;
    guest.rlimits.nofile = pick(limits.max_open_files, security_limits.max_open_files);
    guest.rlimits.fsize = pick(limits.max_file_size, security_limits.max_file_size);
    guest.rlimits.cpu = pick(limits.max_cpu_time, security_limits.max_cpu_time);
    // Untested: no real guest runs on this engine yet.
    guest.rlimits.nproc = effective_max_processes(limits, security_limits);
    config.guest_launch = to_json_document(guest);
    return config;
}

BoxliteResult<SpawnedShim> spawn_kvm_shim(const ShimSpawn& spawn) {
    engine::ShimProcessSpawn process;
    process.shim = spawn.shim;
    process.config = spawn.config;
    process.log = spawn.log;
    process.watchdog_read_fd = spawn.watchdog_read_fd;
    process.ready_timeout = spawn.ready_timeout;
    BOXLITE_TRY(auto started, engine::spawn_shim_process(process));
    const pid_t pid = started.pid;
    auto give_up = [&](std::string why) -> tl::unexpected<BoxliteError> {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
        return fail(ErrorKind::Engine, "{}", why);
    };
    const auto& line = started.ready;
    if (!line)
        return give_up(
            fmt::format("boxlite-shim-kvm exited or went silent without reporting; its log: {}", tail_of(spawn.log)));
    if (line->rfind("error ", 0) == 0) return give_up(line->substr(6));
    if (line->rfind("ok ", 0) != 0) return give_up(fmt::format("unexpected shim answer '{}'", *line));
    return SpawnedShim{pid, *line};
}

}  // namespace boxlite::vmm

namespace boxlite::detail {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using engine::WatchdogRegistry;
using vmm::agent_serves;
using vmm::find_shim;
using vmm::home_of;
using vmm::reap_if_child;
using vmm::tail_of;

BoxliteResult<EngineHandle> kvm_engine_start(const KvmEngineOptions& options, const EngineLaunch& launch) {
    if (!launch.config) return fail(ErrorKind::InvalidArgument, "kvm engine: launch without a box config");
    const auto& box = *launch.config;
    const fs::path box_dir = launch.box_dir;
    BOXLITE_TRY(auto shim, find_shim(options));
    // An explicit kernel + initrd pair is booted as given; otherwise the guest assets (the kernel
    // search order, and the vmlinux and initramfs cached under <home>/init/: guest_assets.hpp).
    fs::path kernel = options.kernel;
    fs::path initrd = options.initrd;
    auto since = [](Clock::time_point start) { return std::chrono::nanoseconds(Clock::now() - start); };
    const auto t_assets = Clock::now();
    if (kernel.empty() || initrd.empty()) {
        engine::GuestAssetOptions wanted;
        wanted.kernel = !options.kernel.empty() ? options.kernel : launch.kernel;
        wanted.home = home_of(box_dir);
        auto assets = engine::prepare_guest_assets(wanted);
        if (!assets) return fail(assets.error().with_context(fmt::format("starting box {}", box.id)));
        kernel = assets->vmlinux;
        initrd = assets->initramfs;
    }
    const fs::path disk = box_dir / "disk.qcow2";
    // Refusals first, so a box that cannot run leaves no disk behind.
    BOXLITE_TRY(auto config, vmm::make_shim_config(options, launch, kernel, initrd, disk));
    // Volumes: a virtiofsd each, behind a virtio-fs device of our VMM (the shim starts them).
    BOXLITE_TRY_VOID(
        engine::add_vm_volumes("kvm", box, box_dir, config.virtiofsd, config.volumes, config.guest_launch));
    // The network: our virtio-net on the VMM's virtio-mmio transport, pumped by the shim to passt
    // (the same as the qemu engine's); host ports checked or picked now.
    std::vector<PortSpec> published;
    if (box.options.network.mode == NetworkMode::Enabled) {
        BOXLITE_TRY(published, engine::publish_ports(box));
        BOXLITE_TRY_VOID(vmm::add_vm_network(box, published, config.network, config.guest_launch));
    }
    if (launch.timings) launch.timings->guest_assets = since(t_assets);
    const auto t_disk = Clock::now();
    BOXLITE_TRY_VOID(vmm::prepare_box_disk(disk, launch.rootfs, box.options.disk_size_gb));
    if (launch.timings) launch.timings->disk = since(t_disk);

    // detach=false: the shim watches a pipe whose write end only this process holds.
    engine::WatchdogPipe watchdog;
    if (!box.options.detach) {
        BOXLITE_TRY(watchdog, engine::make_watchdog_pipe());
    }
    vmm::ShimSpawn spawn;
    spawn.shim = shim;
    spawn.config = vmm::to_json_document(config).dump();
    spawn.log = box_dir / "shim.log";
    spawn.watchdog_read_fd = watchdog.read_end;
    auto spawned = vmm::spawn_kvm_shim(spawn);
    if (!spawned) {
        if (watchdog.write_end >= 0) ::close(watchdog.write_end);
        return fail(spawned.error().with_context(fmt::format("starting box {}", config.box_id)));
    }
    const pid_t pid = spawned->pid;
    if (watchdog.write_end >= 0) WatchdogRegistry::instance().add(pid, watchdog.write_end);

    EngineHandle handle;
    handle.pid = pid;
    handle.pid_start_time = process_start_time(pid).value_or(0);
    const fs::path uds = config.vsock_uds;
    handle.endpoint = fmt::format("vsock-uds:{}:{}", uds.string(), options.agent_port);
    handle.ports = published;  // as bound: `ls`, `inspect` and BoxInfo show the picked host ports
    auto give_up = [&](std::string why) -> tl::unexpected<BoxliteError> {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        WatchdogRegistry::instance().release(pid);
        return fail(ErrorKind::Engine, "starting box {}: {}", config.box_id, why);
    };
    // The shim answered "ok" once the VM runs: from here on it is the guest booting.
    const auto t_boot = Clock::now();
    const auto deadline = t_boot + options.boot_timeout;
    while (Clock::now() < deadline) {
        if (agent_serves(uds, options.agent_port, deadline)) {
            if (launch.timings) launch.timings->guest_boot = since(t_boot);
            return handle;
        }
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

namespace boxlite {

KvmEngine::KvmEngine() = default;
KvmEngine::KvmEngine(KvmEngineOptions options) : options_(std::move(options)) {}

BoxliteResult<void> KvmEngine::supports(const BoxConfig& box) {
    // Ports and allow_net work (the VM has our virtio-net, pumped to passt); what cannot work
    // together is a Config error.
    return engine::check_network_options(box);
}

BoxliteResult<EngineHandle> KvmEngine::start(const EngineLaunch& launch) {
    BOXLITE_TRY_VOID(available());
    return detail::kvm_engine_start(options_, launch);
}
BoxliteResult<void> KvmEngine::stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    return detail::kvm_engine_stop(handle, timeout);
}
BoxliteResult<void> KvmEngine::kill(const EngineHandle& handle) { return detail::kvm_engine_kill(handle); }
bool KvmEngine::is_alive(const EngineHandle& handle) const { return detail::kvm_engine_is_alive(handle); }
BoxliteResult<EngineMetrics> KvmEngine::metrics(const EngineHandle& handle) {
    return detail::kvm_engine_metrics(handle);
}

}  // namespace boxlite
