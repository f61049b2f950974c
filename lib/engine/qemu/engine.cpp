// QemuEngine's members (include/boxlite/engine/qemu_engine.hpp), but available() (probe.cpp).
// The steps the kvm engine has already (disk overlay, shim config and guest launch document,
// spawning a shim with its config on fd 3, pid + start-time identity) are its own functions,
// reused here (lib/engine/kvm/launch.hpp); what differs is the shim, the "qemu" part of its
// config, and stop(): a guest shutdown through the agent first.
#include "engine/qemu/launch.hpp"
#include "engine/qemu/probe.hpp"

#include <boxlite/detail/process.hpp>
#include <boxlite/engine/qemu_engine.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/vsock_uds_transport.hpp>

#include "base/fd.hpp"
#include "base/unix_address.hpp"
#include "engine/common/guest_assets.hpp"
#include "engine/common/helper_binary.hpp"
#include "engine/common/network_support.hpp"
#include "engine/common/shim_spawn.hpp"
#include "engine/common/volumes.hpp"
#include "engine/common/watchdog.hpp"
#include "vmm/file.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace boxlite::qemu {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using detail::process_alive;
using detail::process_start_time;
using engine::WatchdogRegistry;

namespace {

/// Whether the agent serves: the hybrid vsock handshake against the shim's socket ("CONNECT
/// <port>" → "OK <n>", retried while the guest refuses, for up to half a second), then the
/// protocol's hello. The agent's socket listens before its boot ends (guest/vm_init.hpp) and the
/// guest kernel queues the connection, so the hello-ack comes the moment the agent serves: no
/// polling interval between the guest being ready and the host knowing it. The hello waits
/// until `deadline`; a VM that dies closes the connection, which ends the wait at once.
bool agent_serves(const std::string& endpoint, Clock::time_point deadline) {
    const auto left = [&] {
        return std::max(std::chrono::milliseconds(1),
                        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    };
    auto stream = VsockUdsTransport{}.connect(endpoint, std::min(left(), std::chrono::milliseconds(500)));
    if (!stream) return false;
    return protocol::AgentClient::connect(std::move(*stream), left()).has_value();
}

std::string console_tail(const fs::path& box_dir) {
    return vmm::read_file_text((box_dir / "console.log").string(), 2000);
}

/// The guest's boot until its agent listened and, within it, the agent's own set-up (from the
/// init's first line to listening), in guest time, from the box's console; nullopt where absent.
/// The agent writes the line before it serves, but the shim copies the console into the file on
/// its own schedule: a line not there yet gets a few more looks (a console without it, e.g. one
/// past its cap, costs 20 ms once).
void guest_boot_from_console(const fs::path& box_dir, EngineStartTimings& timings) {
    std::string text;
    std::optional<std::uint64_t> ready;
    for (int look = 0; look < 10 && !ready; ++look) {
        if (look > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        text = vmm::read_file_text((box_dir / "console.log").string(), 64 * 1024);
        ready = guest_console_ms(text, "listening on vsock port");
    }
    const auto first = guest_console_ms(text, "VM boot:");
    if (!ready) return;
    timings.guest_boot = std::chrono::milliseconds(*ready);
    if (first && *first <= *ready) timings.container_init = std::chrono::milliseconds(*ready - *first);
}

fs::path home_of(const fs::path& box_dir) { return box_dir.lexically_normal().parent_path().parent_path(); }

void reap_if_child(std::int32_t pid) { ::waitpid(pid, nullptr, WNOHANG); }

}  // namespace

BoxliteResult<EngineHandle> start(const QemuEngineOptions& options, const EngineLaunch& launch) {
    if (!launch.config) return fail(ErrorKind::InvalidArgument, "qemu engine: launch without a box config");
    const auto& box = *launch.config;
    const fs::path box_dir = launch.box_dir;
    // Network options that cannot work are Config errors before anything is made.
    BOXLITE_TRY_VOID(engine::check_network_options(box));
    BOXLITE_TRY(auto host, resolve_qemu_host(options));
    BOXLITE_TRY(auto shim, engine::locate_helper_binary("boxlite-shim-qemu", "BOXLITE_SHIM_QEMU", options.shim));
    auto since = [](Clock::time_point start) { return std::chrono::nanoseconds(Clock::now() - start); };

    const auto t_assets = Clock::now();
    fs::path kernel = options.kernel;
    fs::path initrd = options.initrd;
    if (kernel.empty() || initrd.empty()) {
        engine::GuestAssetOptions wanted;
        wanted.kernel = !options.kernel.empty() ? options.kernel : launch.kernel;
        wanted.home = home_of(box_dir);
        auto assets = engine::prepare_guest_assets(wanted);
        if (!assets) return fail(assets.error());  // the runtime names the box
        kernel = assets->vmlinux;
        initrd = assets->initramfs;
    }
    KvmEngineOptions vm_options;
    vm_options.agent_port = options.agent_port;
    vm_options.guest_cid = options.guest_cid;
    // make_shim_config puts the TSC words and the boot speed-ups on the command line
    // (guest_boot_cmdline(): without the TSC words a TCG guest on a busy host can hang for good).
    vm_options.extra_cmdline = options.extra_cmdline;
    const fs::path disk = box_dir / "disk.qcow2";
    QemuShimConfig config;
    BOXLITE_TRY(config.vm, vmm::make_vm_shim_config(vm_options, launch, kernel, initrd, disk));
    BOXLITE_TRY_VOID(
        engine::add_vm_volumes("qemu", box, box_dir, config.virtiofsd, config.volumes, config.vm.guest_launch));
    std::vector<PortSpec> published;
    if (box.options.network.mode == NetworkMode::Enabled) {
        BOXLITE_TRY(published, engine::publish_ports(box));
        BOXLITE_TRY_VOID(vmm::add_vm_network(box, published, config.network, config.vm.guest_launch));
    }
    config.qemu = host.qemu.string();
    config.accel = host.accel;
    if (launch.timings) launch.timings->guest_assets = since(t_assets);
    const auto t_disk = Clock::now();
    BOXLITE_TRY_VOID(vmm::prepare_box_disk(disk, launch.rootfs, box.options.disk_size_gb));
    if (launch.timings) launch.timings->disk = since(t_disk);

    engine::WatchdogPipe watchdog;
    if (!box.options.detach) {
        BOXLITE_TRY(watchdog, engine::make_watchdog_pipe());
    }
    vmm::ShimSpawn spawn;
    spawn.shim = shim;
    spawn.config = to_json_document(config).dump();
    spawn.log = box_dir / "shim.log";
    spawn.watchdog_read_fd = watchdog.read_end;
    auto spawned = vmm::spawn_kvm_shim(spawn);
    if (!spawned) {
        if (watchdog.write_end >= 0) ::close(watchdog.write_end);
        return fail(spawned.error().with_context(fmt::format("starting box {} (qemu, {})", box.id, host.accel)));
    }
    const pid_t pid = spawned->pid;
    if (watchdog.write_end >= 0) WatchdogRegistry::instance().add(pid, watchdog.write_end);

    EngineHandle handle;
    handle.pid = pid;
    handle.pid_start_time = process_start_time(pid).value_or(0);
    const fs::path uds = config.vm.vsock_uds;
    handle.endpoint = fmt::format("vsock-uds:{}:{}", uds.string(), options.agent_port);
    handle.ports = published;  // as bound: `ls`, `inspect` and BoxInfo show the picked host ports
    const auto t_boot = Clock::now();
    const auto deadline = t_boot + options.boot_timeout;
    while (Clock::now() < deadline) {
        if (agent_serves(handle.endpoint, deadline)) {
            if (launch.timings) {
                // The guest's own clock when the console says so (TCG or KVM alike); else the
                // host's, from the shim's spawn (which then includes QEMU's start-up).
                launch.timings->guest_boot = since(t_boot);
                guest_boot_from_console(box_dir, *launch.timings);
            }
            return handle;
        }
        reap_if_child(pid);
        if (!process_alive(handle.pid, handle.pid_start_time)) {
            WatchdogRegistry::instance().release(pid);
            return fail(ErrorKind::Engine,
                        "box {}: the VM (qemu, {}) stopped before its agent answered; shim log: {}; console: {}",
                        box.id, host.accel, vmm::read_file_text(spawn.log.string(), 1000), console_tail(box_dir));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    WatchdogRegistry::instance().release(pid);
    return fail(ErrorKind::Engine,
                "starting box {}: the guest agent did not answer on vsock port {} within {} ms (qemu, {}); console: {}",
                box.id, options.agent_port, options.boot_timeout.count(), host.accel, console_tail(box_dir));
}

BoxliteResult<void> stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    reap_if_child(handle.pid);
    if (process_alive(handle.pid, handle.pid_start_time)) {
        // A clean guest shutdown: the agent stops every process, syncs and powers off; QEMU exits
        // and the shim with it. Best effort: a hung guest is what SIGTERM/SIGKILL are for.
        VsockUdsTransport transport;
        const auto budget = std::max(std::chrono::milliseconds(1), timeout / 2);
        if (auto stream = transport.connect(handle.endpoint, budget)) {
            if (auto client = protocol::AgentClient::connect(std::move(*stream), budget))
                (void)client->shutdown(budget);
        }
        while (Clock::now() < deadline) {
            reap_if_child(handle.pid);
            if (!process_alive(handle.pid, handle.pid_start_time)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    // SIGTERM (the shim ends QEMU and flushes the disk), then SIGKILL.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return detail::kvm_engine_stop(handle, std::max(left, std::chrono::milliseconds(1000)));
}

}  // namespace boxlite::qemu

namespace boxlite {

QemuEngine::QemuEngine() = default;
QemuEngine::QemuEngine(QemuEngineOptions options) : options_(std::move(options)) {}

BoxliteResult<EngineHandle> QemuEngine::start(const EngineLaunch& launch) { return qemu::start(options_, launch); }
BoxliteResult<void> QemuEngine::stop(const EngineHandle& handle, std::chrono::milliseconds timeout) {
    return qemu::stop(handle, timeout);
}
BoxliteResult<void> QemuEngine::kill(const EngineHandle& handle) { return detail::kvm_engine_kill(handle); }
bool QemuEngine::is_alive(const EngineHandle& handle) const { return detail::kvm_engine_is_alive(handle); }
BoxliteResult<EngineMetrics> QemuEngine::metrics(const EngineHandle& handle) {
    return detail::kvm_engine_metrics(handle);
}

}  // namespace boxlite
