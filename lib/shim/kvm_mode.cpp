// boxlite-shim kvm mode: assembles a Machine (lib/vmm) with its devices (lib/devices) from the
// config the kvm engine wrote on a pipe, boots Linux (or a tiny flat32 test guest), and runs it
// until the guest powers off, the host sends SIGTERM/SIGINT/SIGHUP, or — detach=false — the
// watchdog pipe closes because the process that started the box is gone.
//
// Volumes: one virtiofsd per volume (lib/engine/common/virtiofsd.hpp, as on the qemu engine),
// started before the machine, each served to the guest as a virtio-fs device whose queues
// virtiofsd runs through our vhost-user frontend (lib/vhost_user/frontend_device.hpp). A
// virtiofsd that exits while the guest runs stops the machine (the guest's mount would hang);
// when the machine is gone each virtiofsd sees EOF and exits, and is reaped here.
//
// Network (docs/networking.md): our virtio-net device (lib/devices/virtio/net) on the VMM's
// virtio-mmio transport, its host end pumped by a thread of this shim through the egress
// firewall to a passt — the same firewall, passt and pump as boxlite-shim-qemu's (network.hpp).
#include "kvm_mode.hpp"

#include "capped_log.hpp"
#include "network.hpp"
#include "vm_shim.hpp"

#include "engine/common/virtiofsd.hpp"
#include "engine/kvm/launch.hpp"  // the shim config and guest launch document
#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/console/device.hpp"
#include "devices/virtio/net/device.hpp"
#include "devices/virtio/rng/device.hpp"
#include "devices/virtio/vsock/device.hpp"
#include "qcow2/qcow2_image.hpp"
#include "qcow2/raw_file.hpp"
#include "vhost_user/frontend_device.hpp"
#include "vmm/acpi.hpp"
#include "vmm/boot.hpp"
#include "vmm/device_manager.hpp"
#include "vmm/file.hpp"
#include "vmm/layout.hpp"
#include "vmm/machine.hpp"
#include "vmm/kvm.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <thread>

namespace boxlite::shim {
namespace {

BoxliteResult<std::vector<std::byte>> read_file(const std::string& path, const char* what) {
    auto bytes = vmm::read_file_bytes(path);
    if (!bytes) return fail(bytes.error().with_context(fmt::format("the {}", what)));
    return bytes;
}

/// Everything between "config parsed" and "vCPUs running", with errors as values.
struct Vm {
    std::unique_ptr<vmm::Machine> machine;
    std::unique_ptr<vmm::DeviceManager> devices;
    std::shared_ptr<block::BlockBackend> disk;
};

/// console.log, capped and rotated; written by the UART (vCPU threads) and the virtio console.
struct ConsoleLog {
    std::mutex mutex;
    CappedLog log;
};

BoxliteResult<Vm> build_vm(const vmm::KvmShimConfig& config, const std::shared_ptr<ConsoleLog>& console,
                           std::vector<engine::Virtiofsd>& daemons,
                           const std::shared_ptr<devices::virtio::NetDevice>& net_device) {
    Vm vm;
    vmm::MachineConfig machine_config;
    machine_config.vcpus = config.cpus;
    machine_config.memory_bytes = config.memory_mib << 20;
    // kvm_pvm cannot emulate CMPXCHG16B; hiding it lets a Linux guest get further (docs/vmm.md).
    machine_config.hide_cmpxchg16b = vmm::kvm_is_pvm();
    BOXLITE_TRY(vm.machine, vmm::Machine::create(machine_config));
    vm.devices = std::make_unique<vmm::DeviceManager>(*vm.machine);
    auto sink = [console](std::span<const std::byte> bytes) {
        if (!console) return;
        const std::lock_guard lock(console->mutex);
        console->log.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    };
    BOXLITE_TRY_VOID(vm.devices->add_legacy_devices(sink));
    if (config.disk) {
        BOXLITE_TRY(vm.disk, open_disk(*config.disk));
        auto blk = std::make_shared<devices::virtio::BlockDevice>(vm.disk, config.disk->serial, config.disk->read_only);
        BOXLITE_TRY_VOID(vm.devices->add_virtio_device(blk));
    }
    if (!config.vsock_uds.empty()) {
        BOXLITE_TRY(auto vsock, devices::virtio::VsockDevice::create(config.guest_cid, config.vsock_uds));
        BOXLITE_TRY_VOID(vm.devices->add_virtio_device(vsock));
    }
    // The network device next: a tiny test guest without disk and vsock finds it in the first
    // window (tests/guests/virtio_net.S).
    if (net_device) BOXLITE_TRY_VOID(vm.devices->add_virtio_device(net_device));
    // Volumes before the rng and the console: a tiny test guest without disk, vsock and network
    // finds the first one in the first window (tests/guests/virtio_fs.S); Linux mounts them by tag.
    for (std::size_t i = 0; i < config.volumes.size() && i < daemons.size(); ++i) {
        BOXLITE_TRY(auto options, vhost_user::virtio_fs_options(config.volumes[i].tag));
        auto fs = vhost_user::FrontendDevice::create(vhost_user::Frontend(std::move(daemons[i].frontend_end)),
                                                     std::move(options));
        if (!fs)
            return fail(fs.error().with_context(
                fmt::format("virtiofsd for volume {} ({})", config.volumes[i].tag, config.volumes[i].host_path)));
        BOXLITE_TRY_VOID(vm.devices->add_virtio_device(*fs));
    }
    if (config.rng) BOXLITE_TRY_VOID(vm.devices->add_virtio_device(std::make_shared<devices::virtio::RngDevice>()));
    BOXLITE_TRY_VOID(vm.devices->add_virtio_device(std::make_shared<devices::virtio::ConsoleDevice>(sink)));

    vmm::AcpiConfig acpi;
    acpi.vcpus = config.cpus;
    for (const auto& slot : vm.devices->virtio_slots()) acpi.virtio_mmio.push_back({slot.base, slot.size, slot.gsi});
    BOXLITE_TRY(auto rsdp, vmm::write_acpi_tables(vm.machine->memory(), acpi));

    if (!config.flat32_image.empty()) {
        BOXLITE_TRY(auto image, read_file(config.flat32_image, "flat32 image"));
        if (!vm.machine->memory().write_bytes(vmm::layout::kTestGuestLoad, image))
            return fail(ErrorKind::Config, "flat32 image {} does not fit in guest memory", config.flat32_image);
        BOXLITE_TRY_VOID(vm.machine->setup_flat32(0, vmm::layout::kTestGuestLoad));
        return vm;
    }
    BOXLITE_TRY(auto kernel, read_file(config.kernel, "guest kernel"));
    std::vector<std::byte> initrd;
    if (!config.guest_launch.is_null()) initrd = vmm::guest_launch_archive(config.guest_launch.dump());
    if (!config.initrd.empty()) {
        BOXLITE_TRY(auto base, read_file(config.initrd, "initrd"));
        initrd.insert(initrd.end(), base.begin(), base.end());
    }
    BOXLITE_TRY(auto boot, vmm::load_linux(vm.machine->memory(), kernel, initrd, config.cmdline, rsdp));
    BOXLITE_TRY_VOID(vmm::setup_boot_vcpu(vm.machine->vcpu(0), vm.machine->memory(), boot));
    return vm;
}

/// Waits for a termination signal, the watchdog pipe's EOF (detach=false), or `done`, and
/// stops the machine for the first two. One thread, so no vCPU thread ever takes a signal.
/// Also stops it, as an error, when a virtiofsd exits (`daemons`: a pidfd and its folder each).
void watch_for_stop(vmm::Machine& machine, const std::string& box_id, int signal_fd, int watchdog_fd, int done_fd,
                    std::vector<std::pair<int, std::string>> daemons) {
    for (;;) {
        std::vector<pollfd> fds = {{done_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}, {watchdog_fd, POLLIN, 0}};
        for (const auto& d : daemons) fds.push_back({d.first, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[0].revents) return;
        if (fds[1].revents & POLLIN) {
            signalfd_siginfo info{};
            if (::read(signal_fd, &info, sizeof(info)) == sizeof(info))
                machine.request_stop(vmm::StopReason::HostStop, fmt::format("signal {} from the host", info.ssi_signo));
        }
        if (watchdog_fd >= 0 && fds[2].revents) {
            char byte;
            // Nobody writes to the watchdog: readable means its last writer is gone (EOF).
            if (::read(watchdog_fd, &byte, 1) <= 0) {
                std::fprintf(stderr,
                             "boxlite-shim: box %s: the process that started it exited (detach=false); stopping\n",
                             box_id.c_str());
                machine.request_stop(vmm::StopReason::HostStop,
                                     "the process that started the box exited (detach=false)");
                watchdog_fd = -1;
            }
        }
        for (std::size_t i = 0; i < daemons.size(); ++i) {
            if (daemons[i].first < 0 || !fds[3 + i].revents) continue;
            std::fprintf(stderr, "boxlite-shim: box %s: virtiofsd for %s exited; stopping\n", box_id.c_str(),
                         daemons[i].second.c_str());
            machine.request_stop(vmm::StopReason::Error,
                                 fmt::format("virtiofsd for volume {} exited while the box ran", daemons[i].second));
            daemons[i].first = -1;  // poll ignores negative fds
        }
    }
}

/// The box network: the device (its host end to the pump), the firewall, passt and the pump.
BoxliteResult<void> start_network(const vmm::KvmShimConfig& config, PasstNetwork& network,
                                  std::shared_ptr<devices::virtio::NetDevice>& device) {
    ShimOptions passt_options;
    passt_options.passt = config.network.passt;
    passt_options.dns = config.network.dns;
    for (const auto& p : config.network.publish) passt_options.publish.push_back(PublishedPort{p.udp, p.spec});
    BOXLITE_TRY(auto passt_end, start_passt_network(config.network.allow_net, passt_options, network));
    BOXLITE_TRY(device, devices::virtio::NetDevice::create(vmm::kBoxMac));
    start_pump(network, device->take_host_end(), std::move(passt_end), "boxlite-shim-kvm");
    return {};
}

}  // namespace

int run_kvm_mode(int config_fd, int ready_fd, int watchdog_fd) {
    auto text = read_config(config_fd);
    ::close(config_fd);
    if (!text) {
        say(ready_fd, "error " + text.error().to_string());
        return 1;
    }
    auto config = vmm::parse_shim_config(*text);
    if (!config) {
        say(ready_fd, "error " + config.error().to_string());
        return 1;
    }
    std::shared_ptr<ConsoleLog> console;
    if (!config->console_log.empty()) {
        console = std::make_shared<ConsoleLog>();
        if (!console->log.open(config->console_log, config->console_log_max_bytes, 0640)) {
            say(ready_fd, fmt::format("error storage error: opening console log {}: {}", config->console_log,
                                      std::strerror(errno)));
            return 1;
        }
    }
    // Termination requests are taken by one thread (a signalfd), never by a vCPU thread: the
    // signals stay blocked in every thread created from here on.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, s);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    const int signal_fd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC);
    const int done_fd = ::eventfd(0, EFD_CLOEXEC);
    if (signal_fd < 0 || done_fd < 0) {
        say(ready_fd,
            fmt::format("error engine error: signalfd/eventfd for the stop watcher: {}", std::strerror(errno)));
        return 1;
    }

    std::vector<engine::Virtiofsd> daemons;
    std::vector<std::pair<int, std::string>> daemon_exits;  // pidfds, closed at the end
    auto end_daemons = [&] {
        for (auto& d : daemons) d.frontend_end.reset();
        engine::reap_virtiofsd(daemons, std::chrono::seconds(5));
        for (auto& [fd, path] : daemon_exits) ::close(fd);
    };
    for (const auto& volume : config->volumes) {
        auto started = engine::start_virtiofsd(config->virtiofsd, volume);
        if (!started) {
            end_daemons();
            say(ready_fd, "error " + started.error().with_context(fmt::format("box {}", config->box_id)).to_string());
            return 1;
        }
        std::fprintf(stderr, "boxlite-shim: box %s: virtiofsd pid %d serves %s as %s (%s)\n", config->box_id.c_str(),
                     started->pid, volume.host_path.c_str(), volume.tag.c_str(), volume.read_only ? "ro" : "rw");
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, started->pid, 0));
        if (pidfd >= 0) daemon_exits.emplace_back(pidfd, volume.host_path);
        daemons.push_back(std::move(*started));
    }

    // The network before the machine: passt and the pump are up before the guest runs.
    PasstNetwork network;
    std::shared_ptr<devices::virtio::NetDevice> net_device;
    if (config->network.enabled) {
        auto started = start_network(*config, network, net_device);
        if (!started) {
            network.shut_down();
            end_daemons();
            say(ready_fd, "error " + started.error().with_context(fmt::format("box {}", config->box_id)).to_string());
            return 1;
        }
        std::fprintf(stderr, "boxlite-shim: box %s: network through passt (pid %d), %zu allow rule(s), %zu port(s)\n",
                     config->box_id.c_str(), network.passt, config->network.allow_net.size(),
                     config->network.publish.size());
    }

    auto vm = build_vm(*config, console, daemons, net_device);
    if (!vm) {
        network.shut_down();
        end_daemons();
        say(ready_fd, "error " + vm.error().with_context(fmt::format("box {}", config->box_id)).to_string());
        return 1;
    }
    // Published ports take connections once the box is reported ready, as on the namespace
    // engine: passt bound them while the machine was built (a few /proc reads), or failed to.
    if (std::string unbound; !wait_for_passt_ports(network, unbound)) {
        network.shut_down();
        end_daemons();
        say(ready_fd, "error " + BoxliteError(ErrorKind::Engine, unbound)
                                     .with_context(fmt::format("box {}", config->box_id))
                                     .to_string());
        return 1;
    }
    std::thread stop_watcher(
        [&] { watch_for_stop(*vm->machine, config->box_id, signal_fd, watchdog_fd, done_fd, daemon_exits); });
    say(ready_fd, fmt::format("ok {}", ::getpid()));
    auto outcome = vm->machine->run();
    // No device may still be running a request on the event loop while the disk is flushed.
    vm->devices->stop_event_loop();
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(done_fd, &one, sizeof(one));
    stop_watcher.join();
    ::close(signal_fd);
    ::close(done_fd);
    if (watchdog_fd >= 0) ::close(watchdog_fd);
    int code = 0;
    if (!outcome) {
        std::fprintf(stderr, "boxlite-shim: %s\n", outcome.error().to_string().c_str());
        code = 1;
    } else if (outcome->reason == vmm::StopReason::Error) {
        std::fprintf(stderr, "boxlite-shim: box %s: %s\n", config->box_id.c_str(), outcome->detail.c_str());
        code = 1;
    }
    if (vm->disk) {
        if (auto flushed = vm->disk->flush(); !flushed) {
            std::fprintf(stderr, "boxlite-shim: flushing the disk: %s\n", flushed.error().to_string().c_str());
            code = 1;
        }
    }
    // The devices (and their vhost-user sessions) go before the virtiofsd processes are reaped:
    // each sees EOF and exits.
    network.shut_down();
    vm->devices.reset();
    vm->machine.reset();
    end_daemons();
    return code;
}

int run_kvm_shim(int argc, char** argv) {
    int config_fd = 0;
    int ready_fd = -1;
    int watchdog_fd = -1;
    for (int i = 0; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "boxlite-shim kvm: option %s needs a value\n", flag.c_str());
            return 2;
        }
        char* end = nullptr;
        const long value = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || value < 0 || value > 65535) {
            std::fprintf(stderr, "boxlite-shim kvm: option %s needs a file descriptor number\n", flag.c_str());
            return 2;
        }
        if (flag == "--config-fd") {
            config_fd = static_cast<int>(value);
        } else if (flag == "--ready-fd") {
            ready_fd = static_cast<int>(value);
        } else if (flag == "--watchdog-fd") {
            watchdog_fd = static_cast<int>(value);
        } else {
            std::fprintf(stderr,
                         "boxlite-shim kvm: unknown option %s (allowed: --config-fd, --ready-fd, --watchdog-fd)\n",
                         flag.c_str());
            return 2;
        }
    }
    return run_kvm_mode(config_fd, ready_fd, watchdog_fd);
}

}  // namespace boxlite::shim
