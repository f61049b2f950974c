// boxlite-shim-qemu: one box as a QEMU microvm whose devices are ours. It reads the config the
// qemu engine wrote on a pipe (lib/engine/qemu/launch.hpp), opens the box disk (QCOW2) behind
// our virtio-blk and binds the box's hybrid vsock socket behind our virtio-vsock, serves both to
// QEMU over vhost-user on socket pairs (QEMU's fds 3 and 4), and runs QEMU as its child with the
// serial console on a pipe it copies into console.log under a cap.
//
// Lifetimes: QEMU dies with the shim (PR_SET_PDEATHSIG), and the shim ends when QEMU exits (guest
// power-off, a crash, kill -9): it stops the back ends, flushes the disk and exits. SIGTERM,
// SIGINT, SIGHUP or — detach=false — the watchdog pipe's EOF make it end QEMU (SIGTERM, then
// SIGKILL). A back end that ends its session with an error (a malformed or hostile message)
// ends QEMU too: the guest would wait on it for ever.
//
// Network (docs/networking.md): our virtio-net device served over vhost-user (on an abstract
// UNIX address QEMU connects to: serve_listening below), its frames pumped by a thread of this
// shim through the egress firewall (lib/net/pump.hpp, the same pump as the namespace engine's
// tap) to a passt started as the namespace shim starts it: on a socket pair, in a PID namespace
// of its own whose keeper dies with this shim (kill -9 included), so no passt outlives the box
// and no published port stays bound.
//
// Volumes: one virtiofsd per volume (lib/engine/common/virtiofsd.hpp: a child of this shim, in
// a private mount namespace where a read-only volume is a read-only bind of its folder).
// QEMU's end of its vhost-user socket is QEMU's fd 5 + i. A virtiofsd that exits
// while QEMU runs ends QEMU (the guest's mount would hang); when QEMU is gone each virtiofsd sees
// EOF and exits, and is reaped here (SIGKILL after a grace period).
#include "capped_log.hpp"
#include "network.hpp"
#include "vm_shim.hpp"

#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/net/device.hpp"
#include "devices/virtio/vsock/device.hpp"
#include "engine/common/virtiofsd.hpp"
#include "engine/qemu/launch.hpp"
#include "net/firewall.hpp"
#include "net/pump.hpp"
#include "qcow2/qcow2_image.hpp"
#include "qcow2/raw_file.hpp"
#include "vhost_user/backend.hpp"

#include "base/fd.hpp"
#include "base/spawn.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace boxlite::shim {
namespace {

/// The launch document in front of the base initramfs, as one file QEMU can load (0600: the
/// box's environment may hold secrets).
BoxliteResult<std::string> write_initrd(const qemu::QemuShimConfig& config, const std::string& path) {
    std::vector<std::byte> bytes;
    if (!config.vm.guest_launch.is_null()) bytes = vmm::guest_launch_archive(config.vm.guest_launch.dump());
    base::OwnedFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) return fail_errno(ErrorKind::Storage, fmt::format("creating the initrd {}", path), errno);
    auto write_all = [&](const void* data, std::size_t size) -> bool {
        const auto* p = static_cast<const char*>(data);
        while (size > 0) {
            const auto n = ::write(out.get(), p, size);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            p += n;
            size -= static_cast<std::size_t>(n);
        }
        return true;
    };
    if (!bytes.empty() && !write_all(bytes.data(), bytes.size()))
        return fail_errno(ErrorKind::Storage, fmt::format("writing the initrd {}", path), errno);
    if (!config.vm.initrd.empty()) {
        std::ifstream in(config.vm.initrd, std::ios::binary);
        if (!in) return fail(ErrorKind::Storage, "cannot read the initramfs {}", config.vm.initrd);
        std::vector<char> chunk(1 << 20);
        while (in) {
            in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
            if (in.gcount() > 0 && !write_all(chunk.data(), static_cast<std::size_t>(in.gcount())))
                return fail_errno(ErrorKind::Storage, fmt::format("writing the initrd {}", path), errno);
        }
    }
    return path;
}

/// One vhost-user back end on one end of a socket pair; QEMU gets the other end.
struct ServedDevice {
    std::unique_ptr<vhost_user::Backend> backend;
    base::OwnedFd qemu_end;
    std::thread thread;
    BoxliteResult<void> result;
};

BoxliteResult<std::unique_ptr<ServedDevice>> serve(std::shared_ptr<devices::virtio::VirtioDevice> device,
                                                   std::uint16_t frontend_queues, int failure_fd) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        return fail_errno(ErrorKind::Engine, "socketpair for a vhost-user back end", errno);
    auto served = std::make_unique<ServedDevice>();
    base::OwnedFd ours(pair[0]);
    served->qemu_end.reset(pair[1]);
    vhost_user::BackendOptions options;
    options.frontend_queues = frontend_queues;
    if (std::getenv("BOXLITE_VHOST_TRACE"))
        options.trace = [](std::string_view line) {
            std::fprintf(stderr, "vhost-user: %.*s\n", int(line.size()), line.data());
        };
    served->backend = std::make_unique<vhost_user::Backend>(std::move(device), std::move(options));
    auto* raw = served.get();
    served->thread = std::thread([raw, fd = std::move(ours), failure_fd]() mutable {
        raw->result = raw->backend->serve(std::move(fd));
        if (!raw->result) {
            std::fprintf(stderr, "boxlite-shim-qemu: vhost-user back end: %s\n",
                         raw->result.error().to_string().c_str());
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(failure_fd, &one, sizeof one);
        }
    });
    return served;
}

/// The box network: the device's back end, and the firewall, passt and pump shared with the kvm
/// shim (network.hpp).
struct BoxNetwork {
    std::unique_ptr<ServedDevice> served;
    PasstNetwork link;
    std::promise<pid_t> qemu_pid;  // the only peer the back end serves
    bool qemu_pid_set = false;
    std::string address;        // the abstract UNIX address QEMU connects to
    base::OwnedFd peer_stream;  // benchmark peer only: QEMU's own -netdev stream straight to passt

    BoxNetwork() = default;
    BoxNetwork(const BoxNetwork&) = delete;
    BoxNetwork& operator=(const BoxNetwork&) = delete;
    ~BoxNetwork() { shut_down(); }

    void set_qemu_pid(pid_t pid) {
        if (qemu_pid_set) return;
        qemu_pid.set_value(pid);
        qemu_pid_set = true;
    }
    void shut_down() {
        set_qemu_pid(-1);
        link.signal_stop();
        if (served) {
            served->backend->stop();
            if (served->thread.joinable()) served->thread.join();
        }
        link.shut_down();
    }
};

/// QEMU 7.2's vhost-user netdev refuses a chardev on an inherited descriptor ("does not support
/// FD passing": only a chardev with a UNIX socket *address* gets that feature), so unlike blk and
/// vsock the net back end listens, on an abstract UNIX address (no file, no sun_path length
/// limit), and QEMU connects. Anyone in the shim's network namespace could connect first, so the
/// back end serves only the connection whose SO_PEERCRED pid is QEMU's, and drops any other.
BoxliteResult<std::unique_ptr<ServedDevice>> serve_listening(std::shared_ptr<devices::virtio::VirtioDevice> device,
                                                             std::uint16_t frontend_queues, int failure_fd,
                                                             BoxNetwork& network, const std::string& box_id) {
    base::OwnedFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) return fail_errno(ErrorKind::Engine, "socket for the vhost-user-net back end", errno);
    network.address = fmt::format("boxlite-net-{}-{}", box_id, ::getpid());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (network.address.size() + 1 >= sizeof address.sun_path)
        return fail(ErrorKind::Engine, "the vhost-user-net address {} is too long", network.address);
    std::memcpy(address.sun_path + 1, network.address.data(), network.address.size());
    // QEMU's abstract=on (tight) names exactly these bytes.
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + network.address.size());
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(listener.get(), 4) != 0)
        return fail_errno(ErrorKind::Engine, fmt::format("listening on @{}", network.address), errno);
    auto served = std::make_unique<ServedDevice>();
    vhost_user::BackendOptions options;
    options.frontend_queues = frontend_queues;
    if (std::getenv("BOXLITE_VHOST_TRACE"))
        options.trace = [](std::string_view line) {
            std::fprintf(stderr, "vhost-user-net: %.*s\n", int(line.size()), line.data());
        };
    served->backend = std::make_unique<vhost_user::Backend>(std::move(device), std::move(options));
    auto* raw = served.get();
    served->thread = std::thread([raw, listener = std::move(listener), stop = network.link.stop.get(),
                                  qemu = network.qemu_pid.get_future().share(), failure_fd]() mutable {
        for (;;) {
            auto connection = vhost_user::accept_one(listener.get(), stop);
            if (!connection) return;  // stopped before QEMU connected
            ucred peer{};
            socklen_t size = sizeof peer;
            const pid_t expected = qemu.get();
            if (::getsockopt(connection->get(), SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 || expected <= 0 ||
                peer.pid != expected) {
                std::fprintf(stderr, "boxlite-shim-qemu: vhost-user-net: dropped a connection from pid %d (not QEMU)\n",
                             peer.pid);
                if (expected <= 0) return;
                continue;
            }
            listener.reset();
            raw->result = raw->backend->serve(std::move(*connection));
            if (!raw->result) {
                std::fprintf(stderr, "boxlite-shim-qemu: vhost-user-net back end: %s\n",
                             raw->result.error().to_string().c_str());
                const std::uint64_t one = 1;
                [[maybe_unused]] auto n = ::write(failure_fd, &one, sizeof one);
            }
            return;
        }
    });
    return served;
}

/// BOXLITE_QEMU_NET_PEER=stream (benchmark/net's qemu peer only): QEMU's own virtio-net on
/// `-netdev stream` straight to the same passt, without our device, pump or firewall, so a
/// benchmark can compare the two paths in one run. Refused for a box with an allow list (it would
/// go unenforced).
bool stream_peer_wanted() {
    const char* peer = std::getenv("BOXLITE_QEMU_NET_PEER");
    return peer != nullptr && std::string_view(peer) == "stream";
}

BoxliteResult<void> start_network(const qemu::QemuShimConfig& config, int failure_fd, BoxNetwork& network) {
    const auto& n = config.network;
    const bool peer = stream_peer_wanted();
    if (peer && !n.allow_net.empty())
        return fail(ErrorKind::Config,
                    "BOXLITE_QEMU_NET_PEER=stream (a benchmark peer) has no firewall; the box "
                    "has an allow list: unset it");
    ShimOptions passt_options;
    passt_options.passt = n.passt;
    passt_options.dns = n.dns;
    for (const auto& p : n.publish) passt_options.publish.push_back(PublishedPort{p.udp, p.spec});
    // passt first: the back end's accept waits on the stop eventfd this makes.
    BOXLITE_TRY(auto ours, start_passt_network(n.allow_net, passt_options, network.link));
    if (peer) {
        network.peer_stream = std::move(ours);
        return {};
    }
    BOXLITE_TRY(auto device, devices::virtio::NetDevice::create(qemu::kBoxMac));
    auto box_end = device->take_host_end();
    BOXLITE_TRY(network.served, serve_listening(device, 2, failure_fd, network, config.vm.box_id));
    start_pump(network.link, std::move(box_end), std::move(ours), "boxlite-shim-qemu");
    return {};
}

void end_qemu(pid_t qemu, bool& terminated) {
    ::kill(qemu, terminated ? SIGKILL : SIGTERM);
    terminated = true;
}

}  // namespace

int run_qemu_mode(int config_fd, int ready_fd, int watchdog_fd) {
    auto text = read_config(config_fd);
    ::close(config_fd);
    if (!text) {
        say(ready_fd, "error " + text.error().to_string());
        return 1;
    }
    auto config = qemu::parse_qemu_shim_config(*text);
    if (!config) {
        say(ready_fd, "error " + config.error().to_string());
        return 1;
    }
    const auto& vm = config->vm;
    auto error = [&](const BoxliteError& e) {
        say(ready_fd, "error " + e.with_context(fmt::format("box {}", vm.box_id)).to_string());
        return 1;
    };
    CappedLog console;
    if (!vm.console_log.empty() && !console.open(vm.console_log, vm.console_log_max_bytes, 0640))
        return error(BoxliteError(ErrorKind::Storage,
                                  fmt::format("opening console log {}: {}", vm.console_log, std::strerror(errno))));

    // Signals are taken by this thread's signalfd only; every thread made from here on blocks them.
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&signals, s);
    ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    base::OwnedFd signal_fd(::signalfd(-1, &signals, SFD_CLOEXEC));
    base::OwnedFd failure_fd(::eventfd(0, EFD_CLOEXEC));
    if (!signal_fd || !failure_fd)
        return error(BoxliteError(ErrorKind::Engine, fmt::format("signalfd/eventfd: {}", std::strerror(errno))));

    std::shared_ptr<block::BlockBackend> disk;
    std::unique_ptr<ServedDevice> blk, vsock;
    if (vm.disk) {
        auto opened = open_disk(*vm.disk);
        if (!opened) return error(opened.error());
        disk = *opened;
        auto device = std::make_shared<devices::virtio::BlockDevice>(disk, vm.disk->serial, vm.disk->read_only);
        auto served = serve(device, 1, failure_fd.get());
        if (!served) return error(served.error());
        blk = std::move(*served);
    }
    if (!vm.vsock_uds.empty()) {
        auto device = devices::virtio::VsockDevice::create(vm.guest_cid, vm.vsock_uds);
        if (!device) return error(device.error());
        // QEMU's vhost-user-vsock-device keeps the event queue: it drives rx and tx only.
        auto served = serve(*device, 2, failure_fd.get());
        if (!served) return error(served.error());
        vsock = std::move(*served);
    }
    BoxNetwork network;
    if (config->network.enabled) {
        if (stream_peer_wanted())
            std::fprintf(stderr,
                         "boxlite-shim-qemu: box %s: BOXLITE_QEMU_NET_PEER=stream: QEMU's own virtio-net on "
                         "-netdev stream to passt, no pump and no firewall (a benchmark peer)\n",
                         vm.box_id.c_str());
        if (auto started = start_network(*config, failure_fd.get(), network); !started) {
            network.shut_down();
            return error(started.error());
        }
        std::fprintf(stderr,
                     "boxlite-shim-qemu: box %s: network through passt (pid %d), %zu allow rule(s), %zu port(s)\n",
                     vm.box_id.c_str(), network.link.passt, config->network.allow_net.size(),
                     config->network.publish.size());
    }
    std::string initrd;
    if (!vm.initrd.empty() || !vm.guest_launch.is_null()) {
        const auto dir = std::filesystem::path(vm.vsock_uds.empty() ? vm.console_log : vm.vsock_uds).parent_path();
        auto written = write_initrd(*config, (dir / "initrd.cpio").string());
        if (!written) return error(written.error());
        initrd = *written;
    }

    std::vector<engine::Virtiofsd> daemons;
    for (const auto& volume : config->volumes) {
        auto started = engine::start_virtiofsd(config->virtiofsd, volume);
        if (!started) {
            engine::reap_virtiofsd(daemons, std::chrono::milliseconds(0));
            return error(started.error());
        }
        std::fprintf(stderr, "boxlite-shim-qemu: box %s: virtiofsd pid %d serves %s as %s (%s)\n", vm.box_id.c_str(),
                     started->pid, volume.host_path.c_str(), volume.tag.c_str(), volume.read_only ? "ro" : "rw");
        daemons.push_back(std::move(*started));
    }

    int console_pipe[2];
    if (::pipe2(console_pipe, O_CLOEXEC) != 0)
        return error(BoxliteError(ErrorKind::Engine, fmt::format("console pipe: {}", std::strerror(errno))));
    base::OwnedFd console_read(console_pipe[0]), console_write(console_pipe[1]);
    base::OwnedFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    base::SpawnOptions spawn;
    spawn.argv = qemu::qemu_argv(*config, initrd, network.address);
    if (network.peer_stream) {
        const auto peer = qemu::qemu_stream_netdev_argv(qemu::kStreamPeerFd);
        spawn.argv.insert(spawn.argv.end(), peer.begin(), peer.end());
    }
    // 0 /dev/null, 1 the console pipe, 2 our stderr (shim.log), 3 vsock, 4 blk.
    spawn.fds = {null.get(), console_write.get(), 2, vsock ? vsock->qemu_end.get() : -1,
                 blk ? blk->qemu_end.get() : -1};
    for (const auto& d : daemons) spawn.fds.push_back(d.frontend_end.get());  // 5, 6, ...
    if (network.peer_stream) {
        spawn.fds.resize(qemu::kStreamPeerFd, -1);
        spawn.fds.push_back(network.peer_stream.get());
    }

    spawn.new_session = false;
    spawn.kill_with_parent = true;
    auto qemu = base::spawn(spawn);
    if (!qemu) {
        for (auto& d : daemons) d.frontend_end.reset();
        engine::reap_virtiofsd(daemons, std::chrono::milliseconds(0));
        network.shut_down();
        return error(qemu.error().with_context("starting QEMU"));
    }
    if (network.served) network.set_qemu_pid(*qemu);
    network.peer_stream.reset();  // QEMU's copy is passt's peer now
    const pid_t qemu_pid = *qemu;
    console_write.reset();
    if (vsock) vsock->qemu_end.reset();  // QEMU's copy is the only one: its exit is the back end's EOF
    if (blk) blk->qemu_end.reset();
    for (auto& d : daemons) d.frontend_end.reset();
    std::fprintf(stderr, "boxlite-shim-qemu: box %s: QEMU pid %d (%s)\n", vm.box_id.c_str(), qemu_pid,
                 config->accel.c_str());
    // Published ports take connections once the box is reported ready, as on the namespace
    // engine: passt bound them long before QEMU got this far (a few /proc reads), or failed to.
    if (std::string unbound; !wait_for_passt_ports(network.link, unbound)) {
        ::kill(qemu_pid, SIGKILL);
        while (::waitpid(qemu_pid, nullptr, 0) < 0 && errno == EINTR) {}
        engine::reap_virtiofsd(daemons, std::chrono::milliseconds(0));
        network.shut_down();
        return error(BoxliteError(ErrorKind::Engine, unbound));
    }
    say(ready_fd, fmt::format("ok {}", ::getpid()));

    int status = 0;
    bool exited = false, terminated = false;
    bool console_open = true;
    while (!exited) {
        pollfd fds[4] = {{signal_fd.get(), POLLIN, 0},
                         {console_open ? console_read.get() : -1, POLLIN, 0},
                         {failure_fd.get(), POLLIN, 0},
                         {watchdog_fd, POLLIN, 0}};
        // After SIGTERM, QEMU has a few seconds to go before SIGKILL.
        const int n = ::poll(fds, 4, terminated ? 5000 : -1);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 && terminated) end_qemu(qemu_pid, terminated);
        if (fds[1].revents) {
            char buffer[4096];
            const auto got = ::read(console_read.get(), buffer, sizeof buffer);
            if (got > 0) console.write(buffer, static_cast<std::size_t>(got));
            else if (got == 0 || errno != EINTR) console_open = false;
        }
        if (fds[0].revents & POLLIN) {
            signalfd_siginfo info{};
            if (::read(signal_fd.get(), &info, sizeof info) == sizeof info && info.ssi_signo != SIGCHLD) {
                std::fprintf(stderr, "boxlite-shim-qemu: box %s: signal %u from the host: ending QEMU\n",
                             vm.box_id.c_str(), info.ssi_signo);
                end_qemu(qemu_pid, terminated);
            }
        }
        if (fds[2].revents & POLLIN) {
            std::uint64_t count;
            [[maybe_unused]] auto got = ::read(failure_fd.get(), &count, sizeof count);
            end_qemu(qemu_pid, terminated);
        }
        if (watchdog_fd >= 0 && fds[3].revents) {
            char byte;
            if (::read(watchdog_fd, &byte, 1) <= 0) {
                std::fprintf(stderr, "boxlite-shim-qemu: box %s: the process that started it exited (detach=false)\n",
                             vm.box_id.c_str());
                ::close(watchdog_fd);
                watchdog_fd = -1;
                end_qemu(qemu_pid, terminated);
            }
        }
        const pid_t done = ::waitpid(qemu_pid, &status, WNOHANG);
        if (done == qemu_pid) exited = true;
        for (auto& d : daemons) {
            if (d.exited || ::waitpid(d.pid, nullptr, WNOHANG) != d.pid) continue;
            d.exited = true;
            if (!exited) {
                std::fprintf(stderr, "boxlite-shim-qemu: box %s: virtiofsd for %s exited: ending QEMU\n",
                             vm.box_id.c_str(), d.host_path.c_str());
                end_qemu(qemu_pid, terminated);
            }
        }
    }
    engine::reap_virtiofsd(daemons, std::chrono::seconds(5));
    // The rest of the console.
    for (char buffer[4096]; console_open;) {
        const auto got = ::read(console_read.get(), buffer, sizeof buffer);
        if (got <= 0) break;
        console.write(buffer, static_cast<std::size_t>(got));
    }
    int code = 0;
    if (WIFSIGNALED(status) && !terminated) {
        std::fprintf(stderr, "boxlite-shim-qemu: box %s: QEMU died of signal %d\n", vm.box_id.c_str(),
                     WTERMSIG(status));
        code = 1;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "boxlite-shim-qemu: box %s: QEMU exited with %d\n", vm.box_id.c_str(),
                     WEXITSTATUS(status));
        code = 1;
    }
    // QEMU is gone: each back end sees EOF, resets its device and returns.
    for (auto* served : {blk.get(), vsock.get(), network.served.get()}) {
        if (!served) continue;
        served->backend->stop();
        if (served->thread.joinable()) served->thread.join();
    }
    network.shut_down();
    if (disk) {
        if (auto flushed = disk->flush(); !flushed) {
            std::fprintf(stderr, "boxlite-shim-qemu: flushing the disk: %s\n", flushed.error().to_string().c_str());
            code = 1;
        }
    }
    if (!initrd.empty()) ::unlink(initrd.c_str());
    return code;
}

int run_qemu_shim(int argc, char** argv) {
    int config_fd = 0, ready_fd = -1, watchdog_fd = -1;
    for (int i = 0; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "boxlite-shim-qemu: option %s needs a value\n", flag.c_str());
            return 2;
        }
        char* end = nullptr;
        const long value = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || value < 0 || value > 65535) {
            std::fprintf(stderr, "boxlite-shim-qemu: option %s needs a file descriptor number\n", flag.c_str());
            return 2;
        }
        if (flag == "--config-fd") config_fd = static_cast<int>(value);
        else if (flag == "--ready-fd") ready_fd = static_cast<int>(value);
        else if (flag == "--watchdog-fd") watchdog_fd = static_cast<int>(value);
        else {
            std::fprintf(stderr,
                         "boxlite-shim-qemu: unknown option %s (allowed: --config-fd, --ready-fd, --watchdog-fd)\n",
                         flag.c_str());
            return 2;
        }
    }
    return run_qemu_mode(config_fd, ready_fd, watchdog_fd);
}

}  // namespace boxlite::shim

int main(int argc, char** argv) { return boxlite::shim::run_qemu_shim(argc - 1, argv + 1); }
