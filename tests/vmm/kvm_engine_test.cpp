// The kvm engine policy and boxlite-shim-kvm: capability detection here (fast, with the
// reason), and the shim's whole path — config on a pipe, device set-up, console log, ready
// line, exit on guest power-off or SIGTERM — driven with tiny flat32 guests under real KVM.
#include "guest_helpers.hpp"

#include <boxlite/engine/kvm_engine.hpp>

#include "qcow2/qcow2_image.hpp"
#include "vmm/file.hpp"
#include "engine/common/network_support.hpp"
#include "engine/common/volumes.hpp"
#include "engine/kvm/launch.hpp"
#include "engine/kvm/probe.hpp"
#include "support/support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

namespace boxlite {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static_assert(Engine<KvmEngine>);

bool kvm_pvm() {
    struct stat st {};
    return ::stat("/sys/module/kvm_pvm", &st) == 0;
}

// How fast the probe answers is benchmark/'s to measure; here: a verdict with a reason, the
// same one every time (it is cached).
TEST(KvmEngine, AvailabilityIsAnsweredWithAReason) {
    KvmEngine engine;
    EXPECT_EQ(engine.kind(), "kvm");
    EXPECT_EQ(engine.rootfs_kind(), RootfsKind::Ext4Disk);
    auto first = engine.available();
    auto second = engine.available();
    EXPECT_EQ(first.has_value(), second.has_value());
    if (first) {
        SUCCEED() << "this host's KVM runs 64-bit guests";
        return;
    }
    EXPECT_EQ(first.error().kind(), ErrorKind::UnsupportedEngine) << first.error().to_string();
    const auto& message = first.error().message();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
    // The true reason, judged here from the host: no device, no permission, or the probe guest.
    struct stat st {};
    if (::stat("/dev/kvm", &st) != 0) {
        EXPECT_NE(message.find("no /dev/kvm"), std::string::npos) << message;
    } else if (::access("/dev/kvm", R_OK | W_OK) != 0) {
        EXPECT_NE(message.find("no permission"), std::string::npos) << message;
    } else {
        EXPECT_NE(message.find("64-bit probe guest failed"), std::string::npos) << message;
    }
    EXPECT_EQ(message.find("kvm_pvm"), std::string::npos) << "not a guess from the module's name: " << message;
}

TEST(KvmEngine, StartRefusesWhereLongModeCannotRun) {
    KvmEngine engine;
    if (engine.available())
        GTEST_SKIP() << "precondition: this host runs 64-bit guests (the refusal is checked where it cannot)";
    BoxConfig config;
    EngineLaunch launch;
    launch.config = &config;
    launch.box_dir = fs::temp_directory_path();
    auto started = engine.start(launch);
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().kind(), ErrorKind::UnsupportedEngine);
}

// kvm_pvm runs a tiny long-mode guest but not Linux: the probe guest must fail there, where
// Debian's kernel fails (a CMPXCHG16B that KVM has to emulate).
TEST(KvmEngine, KvmPvmFailsTheProbeGuest) {
    if (!kvm_pvm()) GTEST_SKIP() << "precondition: /dev/kvm is not kvm_pvm here";
    auto verdict = vmm::probe_long_mode_support();
    ASSERT_FALSE(verdict);
    EXPECT_EQ(verdict.error().kind(), ErrorKind::UnsupportedEngine);
    EXPECT_NE(verdict.error().message().find("64-bit probe guest failed"), std::string::npos)
        << verdict.error().message();
    EXPECT_NE(verdict.error().message().find("emulation failure"), std::string::npos) << verdict.error().message();
}

// The long-mode probe guest is set up by the same code as a Linux 64-bit boot (boot.cpp), so
// its reaching the port write proves that set-up (page tables, GDT, EFER, CR0/CR4) executes.
TEST(KvmEngine, LongModeProbeGuestRunsTheBootSetUp) {
    if (auto reason = vmm::testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    // The set-up alone (no CMPXCHG16B on a page table, which kvm_pvm cannot emulate).
    auto ran = vmm::run_long_mode_probe_guest(false);
    // Only kvm_pvm is known not to run 64-bit guests; on any other KVM a failure is the code's.
    if (!ran && kvm_pvm()) {
        GTEST_SKIP() << "precondition: 64-bit guests cannot run under this /dev/kvm (kvm_pvm): "
                     << ran.error().message();
    }
    EXPECT_TRUE(ran) << ran.error().message();
}

TEST(KvmEngine, IsAliveAndKillUsePidAndStartTime) {
    EngineHandle gone;
    gone.pid = 999999;
    EXPECT_FALSE(detail::kvm_engine_is_alive(gone));
    EXPECT_TRUE(detail::kvm_engine_kill(gone)) << "killing a dead box is fine";
    EngineHandle self;
    self.pid = ::getpid();
    self.pid_start_time = 1;  // wrong start time: a different process
    EXPECT_FALSE(detail::kvm_engine_is_alive(self));
    self.pid_start_time = 0;
    EXPECT_TRUE(detail::kvm_engine_is_alive(self));
    auto metrics = detail::kvm_engine_metrics(self);
    ASSERT_TRUE(metrics);
    EXPECT_GT(metrics->memory_bytes, 0u);
}

// ---- boxlite-shim-kvm ---------------------------------------------------------------------------

struct Shim {
    pid_t pid = -1;
    std::string ready;
    int status = -1;
};

/// Runs the shim with `config` on its stdin; returns once it reported a ready line.
/// `via_boxlite_shim` runs `boxlite-shim kvm ...` instead of boxlite-shim-kvm.
Shim spawn_shim(const std::string& config, bool via_boxlite_shim = false) {
    int in[2], ready[2];
    EXPECT_EQ(::pipe(in), 0);
    EXPECT_EQ(::pipe(ready), 0);
    Shim shim;
    shim.pid = ::fork();
    if (shim.pid == 0) {
        ::close(in[1]);
        ::close(ready[0]);
        ::dup2(in[0], 0);
        const std::string ready_fd = std::to_string(ready[1]);
#ifdef BOXLITE_SHIM_PATH
        if (via_boxlite_shim)
            ::execl(BOXLITE_SHIM_PATH, BOXLITE_SHIM_PATH, "kvm", "--ready-fd", ready_fd.c_str(),
                    static_cast<char*>(nullptr));
#endif
        ::execl(BOXLITE_SHIM_KVM_PATH, BOXLITE_SHIM_KVM_PATH, "--ready-fd", ready_fd.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(ready[1]);
    EXPECT_EQ(::write(in[1], config.data(), config.size()), static_cast<ssize_t>(config.size()));
    ::close(in[1]);
    char c;
    while (::read(ready[0], &c, 1) == 1 && c != '\n') shim.ready.push_back(c);
    ::close(ready[0]);
    return shim;
}

/// Long enough that only a hung shim reaches it (tests never bound how fast a shim is).
constexpr std::chrono::seconds kHang{60};

int wait_exit(pid_t pid, std::chrono::seconds timeout = kHang) {
    const auto deadline = Clock::now() + timeout;
    int status = 0;
    while (Clock::now() < deadline) {
        if (::waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
}

/// A scratch directory for the shim; what fails before the shim opens /dev/kvm runs anywhere.
struct ShimWithoutKvm : ::testing::Test {
    fs::path dir = fs::temp_directory_path() / ("boxlite-shim-kvm-" + std::to_string(::getpid()));
    void SetUp() override { fs::create_directories(dir); }
    void TearDown() override { fs::remove_all(dir); }
    std::string read(const fs::path& file) { return vmm::read_file_text(file.string()); }
};

/// The shim running guests: needs /dev/kvm.
struct ShimFixture : ShimWithoutKvm {
    void SetUp() override {
        if (auto reason = vmm::testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
        ShimWithoutKvm::SetUp();
    }
};

TEST_F(ShimFixture, RunsATinyGuestWithEveryDeviceAndExitsOnPowerOff) {
    {
        std::ofstream disk(dir / "disk.raw", std::ios::binary);
        disk.seekp((1 << 20) - 1);
        disk.put('\0');
    }
    vmm::KvmShimConfig config;
    config.box_id = "tiny";
    config.memory_mib = 16;
    config.flat32_image = std::string(BOXLITE_TEST_GUEST_DIR) + "/hello.bin";
    config.disk = vmm::ShimDiskConfig{(dir / "disk.raw").string(), "raw", false, "tiny-disk"};
    config.vsock_uds = (dir / "vsock.sock").string();
    config.console_log = (dir / "console.log").string();
    auto shim = spawn_shim(vmm::to_json_document(config).dump());
    EXPECT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    EXPECT_EQ(wait_exit(shim.pid), 0);
    EXPECT_EQ(read(dir / "console.log"), "hello from a tiny guest\n");
    EXPECT_FALSE(fs::exists(dir / "vsock.sock")) << "the vsock socket is removed on exit";
}

/// The pids of the processes whose command line has `text` (/proc/<pid>/cmdline, NULs and all).
std::vector<pid_t> processes_with(const std::string& text) {
    std::vector<pid_t> pids;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const std::string cmdline = boxlite::test::read_proc_file(entry.path() / "cmdline");
        if (cmdline.find(text) != std::string::npos) pids.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return pids;
}

// A volume through the whole shim: boxlite-shim-kvm starts virtiofsd for the share (read-only
// bind in its private mount namespace), attaches the virtio-fs device through its vhost-user
// frontend, and the tiny guest (tests/guests/virtio_fs.S) reads the file over FUSE and echoes
// it on COM1; when the guest powers off, the shim ends and reaps virtiofsd.
TEST_F(ShimFixture, AVolumeIsServedByVirtiofsdThroughTheShimsVhostUserFrontend) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (virtiofsd needs a private mount namespace)";
    fs::create_directories(dir / "share");
    const std::string contents = "a file in a kvm engine volume\n";
    std::ofstream(dir / "share" / "hello.txt") << contents;
    vmm::KvmShimConfig config;
    config.box_id = "tiny-volume";
    config.memory_mib = 16;
    config.rng = false;  // the volume is then the first virtio-mmio window
    config.flat32_image = std::string(BOXLITE_TEST_GUEST_DIR) + "/virtio_fs.bin";
    config.console_log = (dir / "console.log").string();
    config.volumes = {{"vol0", (dir / "share").string(), true}};
    config.virtiofsd = engine::kDefaultVirtiofsd;
    auto shim = spawn_shim(vmm::to_json_document(config).dump());
    ASSERT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    EXPECT_EQ(wait_exit(shim.pid), 0);
    EXPECT_EQ(read(dir / "console.log"), contents);
    // No virtiofsd is left: the shim reaped its child.
    EXPECT_TRUE(processes_with("source=" + (dir / "share").string()).empty()) << "a virtiofsd still runs";
}

// The network through the whole shim: boxlite-shim-kvm attaches our virtio-net device to its
// virtio-mmio transport and pumps the device's host end through the egress firewall to a real
// passt (the qemu shim's code: lib/shim/network.hpp). The tiny guest (tests/guests/virtio_net.S)
// sends an ARP request for 192.168.127.77 and prints the reply it gets (passt answers ARP
// itself), then a UDP datagram to 192.0.2.1, which the allow list does not name: the firewall
// answers it with an ICMP unreachable and never passes it to passt. No packet leaves the machine.
TEST_F(ShimFixture, ATinyGuestsArpRequestIsAnsweredByPasstThroughThePump) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (passt is started as root and drops to nobody)";
    vmm::KvmShimConfig config;
    config.box_id = "tiny-net";
    config.memory_mib = 16;
    config.rng = false;  // the network device is then the first virtio-mmio window
    config.flat32_image = std::string(BOXLITE_TEST_GUEST_DIR) + "/virtio_net.bin";
    config.console_log = (dir / "console.log").string();
    config.network.enabled = true;
    config.network.allow_net = {"198.51.100.7"};
    auto shim = spawn_shim(vmm::to_json_document(config).dump());
    ASSERT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    EXPECT_EQ(wait_exit(shim.pid), 0);
    const auto console = read(dir / "console.log");
    const std::string arp = "net: ARP reply: 192.168.127.77 is at ";
    const std::string refused = "net: refused: ICMP 3/13 for 192.0.2.1\n";
    ASSERT_EQ(console.rfind(arp, 0), 0u) << console;
    ASSERT_EQ(console.size(), arp.size() + 18 + refused.size()) << console;
    const auto mac = console.substr(arp.size(), 17);  // xx:xx:xx:xx:xx:xx, then a newline
    EXPECT_NE(mac, "5a:94:ef:e4:0c:ee") << "the reply comes from passt, not an echo of the box";
    EXPECT_EQ(console.substr(arp.size() + 17), "\n" + refused);
}

/// A TCP socket on 127.0.0.1: connected to `port` (connect) or listening on it (bind); true if
/// that worked.
bool loopback_tcp(std::uint16_t port, bool connect) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const auto* raw = reinterpret_cast<const sockaddr*>(&address);
    const bool ok = connect ? ::connect(fd, raw, sizeof address) == 0
                            : ::bind(fd, raw, sizeof address) == 0 && ::listen(fd, 1) == 0;
    ::close(fd);
    return ok;
}

/// Retries `done` every 20 ms until it holds or kHang passes.
template <typename F>
bool eventually(F done) {
    const auto deadline = Clock::now() + kHang;
    while (!done()) {
        if (Clock::now() > deadline) return false;
        ::usleep(20000);
    }
    return true;
}

/// A TCP socket bound to a loopback port the kernel picks (listening when `listen`): its fd (-1
/// with errno on failure) and port.
std::pair<int, std::uint16_t> loopback_socket(bool listen) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        (listen && ::listen(fd, 1) != 0) || ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
        const int saved = errno;
        if (fd >= 0) ::close(fd);
        errno = saved;
        return {-1, 0};
    }
    return {fd, ntohs(address.sin_port)};
}

/// A tiny guest that spins (written to `dir`/spin.bin) with the box network on, publishing the
/// host's 127.0.0.1:`port` as the box's port 80.
vmm::KvmShimConfig spinning_guest_publishing(const fs::path& dir, const char* box_id, std::uint16_t port) {
    const unsigned char spin[] = {0xeb, 0xfe};  // jmp .
    std::ofstream(dir / "spin.bin", std::ios::binary).write(reinterpret_cast<const char*>(spin), 2);
    vmm::KvmShimConfig config;
    config.box_id = box_id;
    config.memory_mib = 16;
    config.flat32_image = (dir / "spin.bin").string();
    config.network.enabled = true;
    config.network.publish = {{false, fmt::format("127.0.0.1/{}:80", port)}};
    return config;
}

// A published port on the kvm engine: the shim's passt binds it on the host while the VM runs,
// and it is free again once the shim has stopped (passt is killed and reaped with the box).
TEST_F(ShimFixture, APublishedPortIsBoundWhileTheVmRunsAndFreedAfter) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (passt is started as root and drops to nobody)";
    const auto [fd, port] = loopback_socket(/*listen=*/false);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ::close(fd);
    auto shim = spawn_shim(vmm::to_json_document(spinning_guest_publishing(dir, "tiny-port", port)).dump());
    ASSERT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    // Bound before the shim said ok (as on the namespace engine): no retry.
    EXPECT_TRUE(loopback_tcp(port, /*connect=*/true)) << "nothing listens on the published port " << port;
    ::kill(shim.pid, SIGTERM);
    EXPECT_EQ(wait_exit(shim.pid), 0);
    EXPECT_TRUE(eventually([&] { return loopback_tcp(port, /*connect=*/false); }))
        << "the published port " << port << " is still taken after the shim ended";
}

// A published port that passt cannot bind (the host's port is taken by another program after
// the engine's own check) fails the start, naming the port, instead of a box without it.
TEST_F(ShimFixture, APublishedPortThatPasstCannotBindFailsTheStartNamingIt) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (passt is started as root and drops to nobody)";
    const auto [taken, port] = loopback_socket(/*listen=*/true);
    ASSERT_GE(taken, 0) << std::strerror(errno);
    auto shim = spawn_shim(vmm::to_json_document(spinning_guest_publishing(dir, "tiny-taken", port)).dump());
    ::close(taken);
    EXPECT_EQ(shim.ready.rfind("error ", 0), 0u) << shim.ready;
    EXPECT_NE(shim.ready.find(fmt::format("did not bind the published TCP port 127.0.0.1/{}:80", port)),
              std::string::npos)
        << shim.ready;
    EXPECT_NE(shim.ready.find("passt ended"), std::string::npos) << shim.ready;
    EXPECT_EQ(wait_exit(shim.pid), 1);
}

// A virtiofsd that dies while the guest runs stops the VM (the guest's mount would hang): the
// shim exits with an error instead of running a box whose volume is gone.
TEST_F(ShimFixture, AVirtiofsdThatDiesStopsTheVm) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (virtiofsd needs a private mount namespace)";
    fs::create_directories(dir / "share");
    const unsigned char spin[] = {0xeb, 0xfe};  // jmp .
    std::ofstream(dir / "spin.bin", std::ios::binary).write(reinterpret_cast<const char*>(spin), 2);
    vmm::KvmShimConfig config;
    config.memory_mib = 16;
    config.flat32_image = (dir / "spin.bin").string();
    config.volumes = {{"vol0", (dir / "share").string(), false}};
    config.virtiofsd = engine::kDefaultVirtiofsd;
    auto shim = spawn_shim(vmm::to_json_document(config).dump());
    EXPECT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    const auto daemons = processes_with("source=" + (dir / "share").string());
    EXPECT_FALSE(daemons.empty()) << "no virtiofsd serves the share";
    for (pid_t daemon : daemons) ::kill(daemon, SIGKILL);
    if (daemons.empty()) ::kill(shim.pid, SIGKILL);  // nothing else would end the spinning guest
    EXPECT_EQ(wait_exit(shim.pid), 1) << "the shim ends the VM with an error";
}

TEST_F(ShimFixture, BoxliteShimKvmModeIsTheSameShim) {
#ifndef BOXLITE_SHIM_PATH
    GTEST_SKIP() << "precondition: this build has no boxlite-shim target";
#else
    vmm::KvmShimConfig config;
    config.memory_mib = 16;
    config.flat32_image = std::string(BOXLITE_TEST_GUEST_DIR) + "/hello.bin";
    config.console_log = (dir / "console.log").string();
    auto shim = spawn_shim(vmm::to_json_document(config).dump(), /*via_boxlite_shim=*/true);
    EXPECT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    EXPECT_EQ(wait_exit(shim.pid), 0);
    EXPECT_EQ(read(dir / "console.log"), "hello from a tiny guest\n");
#endif
}

TEST_F(ShimFixture, SigtermStopsARunningVm) {
    const unsigned char spin[] = {0xeb, 0xfe};  // jmp .
    std::ofstream(dir / "spin.bin", std::ios::binary).write(reinterpret_cast<const char*>(spin), 2);
    vmm::KvmShimConfig config;
    config.memory_mib = 16;
    config.flat32_image = (dir / "spin.bin").string();
    config.vsock_uds = (dir / "vsock.sock").string();
    auto shim = spawn_shim(vmm::to_json_document(config).dump());
    ASSERT_EQ(shim.ready.rfind("ok ", 0), 0u) << shim.ready;
    EXPECT_TRUE(fs::exists(dir / "vsock.sock")) << "the hybrid vsock socket is up while the VM runs";
    ::kill(shim.pid, SIGTERM);
    EXPECT_EQ(wait_exit(shim.pid), 0);
}

// A config the shim cannot parse is refused before /dev/kvm is opened: runs anywhere.
TEST_F(ShimWithoutKvm, BadConfigIsReportedOnTheReadyLine) {
    auto garbage = spawn_shim("{not json");
    EXPECT_EQ(garbage.ready.rfind("error configuration error", 0), 0u) << garbage.ready;
    EXPECT_EQ(wait_exit(garbage.pid), 1);
    auto both = spawn_shim(R"({"kernel": "/x", "flat32_image": "/y"})");
    EXPECT_NE(both.ready.find("exactly one of kernel and flat32_image"), std::string::npos) << both.ready;
    EXPECT_EQ(wait_exit(both.pid), 1);
}

// The kernel is read once the VM exists, after /dev/kvm is opened.
TEST_F(ShimFixture, AMissingKernelIsReportedOnTheReadyLine) {
    auto missing = spawn_shim(R"({"kernel": "/nonexistent/vmlinux", "memory_mib": 16})");
    EXPECT_NE(missing.ready.find("/nonexistent/vmlinux"), std::string::npos) << missing.ready;
    EXPECT_EQ(wait_exit(missing.pid), 1);
}

// ---- the kvm engine's start path, piece by piece ---------------------------------------------

/// Frees fds 3..8 (keeping whatever was there) and then occupies the lowest `taken` of them, so
/// the next descriptors anyone opens are 3 + taken, 4 + taken, ...: where a process that
/// closed its low fds would have the engine's pipes land on the shim's target numbers.
class LowFds {
public:
    explicit LowFds(int taken) {
        for (int fd = 3; fd <= 8; ++fd) {
            const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 100);
            if (copy >= 0) saved_.emplace_back(fd, copy), ::close(fd);
        }
        for (int i = 0; i < taken; ++i) placeholders_.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    }
    ~LowFds() {
        for (int fd : placeholders_) ::close(fd);
        for (auto [fd, copy] : saved_) {
            ::dup3(copy, fd, O_CLOEXEC);
            ::close(copy);
        }
    }
    [[nodiscard]] int lowest_free() const {
        const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        ::close(probe);
        return probe;
    }

private:
    std::vector<std::pair<int, int>> saved_;
    std::vector<int> placeholders_;
};

std::string spin_guest(const fs::path& dir) {
    const unsigned char spin[] = {0xeb, 0xfe};  // jmp .
    std::ofstream(dir / "spin.bin", std::ios::binary).write(reinterpret_cast<const char*>(spin), 2);
    return (dir / "spin.bin").string();
}

// The shim's config (fd 3), ready line (fd 4) and watchdog (fd 5) arrive whatever numbers the
// engine's own descriptors have — including when one already sits on its target, which with
// dup2 alone left it close-on-exec and the shim found it closed. The guest running proves the
// config arrived, "ok" proves the ready fd, and the VM staying up until the watchdog's write end
// closes, then stopping, proves the watchdog.
TEST_F(ShimFixture, SpawnHandsOverItsFdsWhereverTheyLandAndTheWatchdogStopsTheVm) {
    for (int taken = 0; taken < 3; ++taken) {
        SCOPED_TRACE(fmt::format("{} low fds taken", taken));
        const auto log = dir / fmt::format("shim-{}.log", taken);
        pid_t pid = -1;
        int watchdog_write = -1;
        {
            LowFds low(taken);
            ASSERT_EQ(low.lowest_free(), 3 + taken);
            int watchdog[2];
            ASSERT_EQ(::pipe2(watchdog, O_CLOEXEC), 0);
            if (taken == 2) {
                EXPECT_EQ(watchdog[0], 5) << "the watchdog's read end is on its own target fd";
            }
            vmm::KvmShimConfig config;
            config.box_id = fmt::format("fds-{}", taken);
            config.memory_mib = 16;
            config.flat32_image = spin_guest(dir);
            vmm::ShimSpawn spawn;
            spawn.shim = BOXLITE_SHIM_KVM_PATH;
            spawn.config = vmm::to_json_document(config).dump();
            spawn.log = log;
            spawn.watchdog_read_fd = watchdog[0];
            auto spawned = vmm::spawn_kvm_shim(spawn);
            watchdog_write = watchdog[1];
            ASSERT_TRUE(spawned) << spawned.error().to_string();
            EXPECT_EQ(spawned->ready, fmt::format("ok {}", spawned->pid));
            pid = spawned->pid;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        int status = 0;
        EXPECT_EQ(::waitpid(pid, &status, WNOHANG), 0) << "the VM runs while the watchdog is held; log: " << read(log);
        ::close(watchdog_write);
        EXPECT_EQ(wait_exit(pid), 0);
        EXPECT_NE(read(log).find("detach=false"), std::string::npos) << read(log);
    }
}

TEST_F(ShimWithoutKvm, SpawnReportsWhyTheShimDidNotStart) {
    vmm::ShimSpawn spawn;
    spawn.shim = BOXLITE_SHIM_KVM_PATH;
    spawn.config = "{not json";
    spawn.log = dir / "shim.log";
    auto refused = vmm::spawn_kvm_shim(spawn);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("configuration error"), std::string::npos) << refused.error().message();
    spawn.shim = dir / "no-such-shim";
    spawn.config = "{}";
    // Several tries: the child's failed exec may come before or after the config is sent (a
    // send to a child already gone is EPIPE), and either way the reason must come through.
    for (int i = 0; i < 20; ++i) {
        auto missing = vmm::spawn_kvm_shim(spawn);
        ASSERT_FALSE(missing);
        ASSERT_NE(missing.error().message().find("cannot execute"), std::string::npos)
            << "try " << i << ": " << missing.error().message();
    }
}

struct KvmDisk : ::testing::Test {
    fs::path dir = fs::temp_directory_path() / ("boxlite-kvm-disk-" + std::to_string(::getpid()));
    fs::path base = dir / "base.ext4";
    fs::path overlay = dir / "disk.qcow2";
    void SetUp() override {
        fs::create_directories(dir);
        std::ofstream(base, std::ios::binary).put('x');
        fs::resize_file(base, (3ULL << 30) / 2);  // 1.5 GiB, sparse: a base larger than 1 GB
    }
    void TearDown() override { fs::remove_all(dir); }
    std::uint64_t overlay_size() {
        auto image = qcow2::Qcow2Image::open(overlay, {.read_only = true});
        EXPECT_TRUE(image) << image.error().to_string();
        return image ? (*image)->size() : 0;
    }
};

TEST_F(KvmDisk, NewOverlayIsNeverShorterThanItsBase) {
    auto size = vmm::prepare_box_disk(overlay, base, std::nullopt);
    ASSERT_TRUE(size) << size.error().to_string();
    EXPECT_EQ(*size, fs::file_size(base));
    EXPECT_EQ(overlay_size(), fs::file_size(base));
    fs::remove(overlay);
    auto floored = vmm::prepare_box_disk(overlay, base, 1);
    ASSERT_TRUE(floored);
    EXPECT_EQ(overlay_size(), fs::file_size(base)) << "1 GB < the 1.5 GiB base: floored at the base";
    EXPECT_EQ((*qcow2::Qcow2Image::open(overlay, {.read_only = true}))->info().backing_file, base.string());
}

TEST_F(KvmDisk, ExistingOverlayGrowsToALargerDiskSizeAndNeverShrinks) {
    ASSERT_TRUE(vmm::prepare_box_disk(overlay, base, std::nullopt));
    {  // data the box wrote must survive the growth
        auto image = qcow2::Qcow2Image::open(overlay);
        ASSERT_TRUE(image);
        char data[512] = "written by the box";
        iovec iov{data, sizeof data};
        ASSERT_TRUE((*image)->write(1 << 20, std::span(&iov, 1)));
        ASSERT_TRUE((*image)->close());
    }
    auto grown = vmm::prepare_box_disk(overlay, base, 4);
    ASSERT_TRUE(grown) << grown.error().to_string();
    EXPECT_EQ(*grown, 4ULL << 30);
    EXPECT_EQ(overlay_size(), 4ULL << 30);
    auto kept = vmm::prepare_box_disk(overlay, base, 2);
    ASSERT_TRUE(kept);
    EXPECT_EQ(*kept, 4ULL << 30) << "a smaller disk_size_gb never shrinks the disk";
    auto image = qcow2::Qcow2Image::open(overlay, {.read_only = true});
    ASSERT_TRUE(image);
    char back[512] = {};
    iovec iov{back, sizeof back};
    ASSERT_TRUE((*image)->read(1 << 20, std::span(&iov, 1)));
    EXPECT_STREQ(back, "written by the box");
    auto report = (*image)->check();
    ASSERT_TRUE(report);
    EXPECT_TRUE(report->clean());
}

TEST_F(KvmDisk, AMissingBaseIsAStorageErrorNamingIt) {
    auto missing = vmm::prepare_box_disk(overlay, dir / "gone.ext4", 2);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::Storage);
    EXPECT_NE(missing.error().message().find("gone.ext4"), std::string::npos);
    EXPECT_FALSE(fs::exists(overlay));
}

struct KvmLaunch : ::testing::Test {
    BoxConfig box;
    EngineLaunch launch;
    KvmEngineOptions options;
    void SetUp() override {
        launch.config = &box;
        launch.box_dir = "/tmp/box";
        launch.env = {{"PATH", "/usr/bin:/bin"}, {"GREETING", "hello \"quoted\" world"}, {"with.dot", "x"}};
        launch.working_dir = "/srv/app";
        launch.user = "1000:1000";
    }
    BoxliteResult<vmm::KvmShimConfig> config() {
        return vmm::make_shim_config(options, launch, "/k/vmlinux", "/k/initrd", "/tmp/box/disk.qcow2");
    }
};

TEST_F(KvmLaunch, EnvWorkingDirUserAndLimitsGoToTheGuestLaunchDocument) {
    box.options.cpus = 2;
    box.options.resource_limits.max_open_files = 4096;
    box.options.security.resource_limits.max_processes = 300;
    box.options.resource_limits.max_cpu_time = 60;
    auto c = config();
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_EQ(c->cpus, 2u);
    EXPECT_EQ(c->memory_mib, box.options.memory_mib);
    EXPECT_NE(c->cmdline.find("boxlite.box_id=" + box.id.str()), std::string::npos);
    ASSERT_TRUE(c->guest_launch.is_object());
    auto guest = vmm::parse_guest_launch(c->guest_launch.dump());
    ASSERT_TRUE(guest) << guest.error().to_string();
    EXPECT_EQ(guest->env, launch.env) << "every variable, exactly, in order";
    EXPECT_EQ(guest->working_dir, "/srv/app");
    EXPECT_EQ(guest->user, "1000:1000");
    EXPECT_EQ(guest->agent_port, options.agent_port);
    EXPECT_EQ(guest->rlimits.nofile, 4096u);
    EXPECT_EQ(guest->rlimits.nproc, 300u) << "the security limit applies when the box sets none";
    EXPECT_EQ(guest->rlimits.cpu, 60u);
    EXPECT_FALSE(guest->rlimits.fsize);
    // Through the shim config's JSON and back, as the shim sees it.
    auto parsed = vmm::parse_shim_config(vmm::to_json_document(*c).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_EQ(parsed->guest_launch, c->guest_launch);
}

TEST_F(KvmLaunch, MaxMemoryCapsTheGuestRam) {
    box.options.memory_mib = 1024;
    box.options.resource_limits.max_memory = 256ULL << 20;
    auto c = config();
    ASSERT_TRUE(c);
    EXPECT_EQ(c->memory_mib, 256u);
    box.options.resource_limits.max_memory = 64ULL << 20;
    auto refused = config();
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::Config);
    EXPECT_NE(refused.error().message().find("max_memory"), std::string::npos);
}

// Volumes are served on the kvm engine (virtiofsd through the VMM's vhost-user frontend): each
// becomes a share the shim starts a virtiofsd for, and a mount in the guest launch document.
TEST_F(KvmLaunch, VolumesBecomeVirtiofsdSharesAndGuestMounts) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (volumes on the VM engines need root)";
    const auto folder = std::filesystem::temp_directory_path() / fmt::format("boxlite-kvm-volume-{}", ::getpid());
    std::filesystem::create_directories(folder / "in");
    box.options.volumes = {{(folder / "in").string(), "/data/in", true}, {folder.string(), "/data", false}};
    auto c = config();
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_TRUE(c->volumes.empty()) << "make_shim_config leaves volumes to the engine's start";
    ASSERT_TRUE(engine::add_vm_volumes("kvm", box, folder, c->virtiofsd, c->volumes, c->guest_launch));
    ASSERT_EQ(c->volumes.size(), 2u);
    EXPECT_EQ(c->volumes[0].tag, "vol0");
    EXPECT_EQ(c->volumes[0].host_path, (folder / "in").string());
    EXPECT_TRUE(c->volumes[0].read_only);
    EXPECT_EQ(c->virtiofsd.front(), '/');
    auto parsed = vmm::parse_shim_config(vmm::to_json_document(*c).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    ASSERT_EQ(parsed->volumes.size(), 2u);
    EXPECT_EQ(parsed->volumes[1].tag, "vol1");
    EXPECT_EQ(parsed->virtiofsd, c->virtiofsd);
    auto guest = vmm::parse_guest_launch(parsed->guest_launch.dump());
    ASSERT_TRUE(guest) << guest.error().to_string();
    ASSERT_EQ(guest->volumes.size(), 2u);
    EXPECT_EQ(guest->volumes[0].path, "/data") << "the shallower mount first";
    EXPECT_EQ(guest->volumes[1].path, "/data/in");
    EXPECT_TRUE(guest->volumes[1].read_only);
    // A host path that is a file is refused naming the engine.
    std::ofstream(folder / "file") << "x";
    box.options.volumes = {{(folder / "file").string(), "/f", false}};
    std::string virtiofsd;
    std::vector<engine::VirtiofsShare> shares;
    nlohmann::json document = c->guest_launch;
    auto file = engine::add_vm_volumes("kvm", box, folder, virtiofsd, shares, document);
    ASSERT_FALSE(file);
    EXPECT_NE(file.error().message().find("the kvm engine shares folders"), std::string::npos)
        << file.error().message();
    std::filesystem::remove_all(folder);
}

// The network on the kvm engine: ports and allow_net are taken, not refused. The engine's start
// binds the ports (engine::publish_ports) and then puts them, the allow list and network=true for
// the agent into the shim config (add_vm_network, the same as the qemu engine's).
TEST_F(KvmLaunch, NetworkGoesToTheShimConfigAndTheGuestLaunchDocument) {
    box.options.ports = {PortSpec{8080, 80}, PortSpec{5353, 53, PortProtocol::Udp, "127.0.0.1"}};
    box.options.network.allow_net = {"example.com", "192.0.2.0/24"};
    auto c = config();
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_FALSE(c->network.enabled) << "added by the engine's start, once the ports are bound";
    ASSERT_TRUE(vmm::add_vm_network(box, box.options.ports, c->network, c->guest_launch));
    EXPECT_TRUE(c->network.enabled);
    EXPECT_EQ(c->network.allow_net, box.options.network.allow_net);
    ASSERT_EQ(c->network.publish.size(), 2u);
    EXPECT_EQ(c->network.publish[0], (vmm::VmPublishedPort{false, engine::passt_port_spec(box.options.ports[0])}));
    EXPECT_EQ(c->network.publish[1], (vmm::VmPublishedPort{true, engine::passt_port_spec(box.options.ports[1])}));
    // Through the shim config's JSON and back, as boxlite-shim-kvm sees it.
    auto parsed = vmm::parse_shim_config(vmm::to_json_document(*c).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_TRUE(parsed->network.enabled);
    EXPECT_EQ(parsed->network.allow_net, c->network.allow_net);
    EXPECT_EQ(parsed->network.publish, c->network.publish);
    auto guest = vmm::parse_guest_launch(parsed->guest_launch.dump());
    ASSERT_TRUE(guest) << guest.error().to_string();
    EXPECT_TRUE(guest->network) << "the agent brings up eth0";
    // Without a network there is no device: the document has no network object.
    auto plain = *c;
    plain.network = {};
    const auto document = vmm::to_json_document(plain);
    EXPECT_FALSE(document.contains("network"));
    auto back = vmm::parse_shim_config(document.dump());
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_FALSE(back->network.enabled);
}

TEST_F(KvmLaunch, NetworkOptionsThatCannotWorkAreConfigErrors) {
    box.options.network.allow_net = {"10.0.0.1/8"};  // bits set past the prefix
    auto malformed = config();
    ASSERT_FALSE(malformed);
    EXPECT_EQ(malformed.error().kind(), ErrorKind::Config);
    EXPECT_NE(malformed.error().message().find("10.0.0.1/8"), std::string::npos) << malformed.error().message();
    box.options.network.allow_net.clear();
    box.options.network.mode = NetworkMode::Disabled;
    box.options.ports = {PortSpec{8080, 80}};
    auto disabled = config();
    ASSERT_FALSE(disabled);
    EXPECT_EQ(disabled.error().kind(), ErrorKind::Config);
    EXPECT_NE(disabled.error().message().find("network is disabled"), std::string::npos) << disabled.error().message();
}

TEST(KvmShimConfig, AMalformedNetworkIsAConfigErrorNamingIt) {
    const std::string base = R"("flat32_image": "/x.bin", )";
    for (const auto& [network, what] : std::vector<std::pair<std::string, std::string>>{
             {R"("network": 5)", "network must be an object"},
             {R"("network": {"publish": [{"spec": ""}]})", "published port"},
             {R"("network": {"publish": [{"spec": "1:2 --x"}]})", "published port"},
             {R"("network": {"passt": "passt"})", "passt 'passt' is not an absolute path"},
             {R"("network": {"publish": [{"udp": true}]})", "shim config"}}) {
        auto parsed = vmm::parse_shim_config("{" + base + network + "}");
        ASSERT_FALSE(parsed) << network;
        EXPECT_EQ(parsed.error().kind(), ErrorKind::Config) << network;
        EXPECT_NE(parsed.error().message().find(what), std::string::npos) << parsed.error().message();
    }
}

TEST(GuestLaunch, ArchiveIsANewcCpioWithTheDocumentPrivate) {
    vmm::GuestLaunchConfig guest;
    guest.box_id = "b";
    guest.env = {{"A", "1"}};
    const auto document = vmm::to_json_document(guest).dump();
    const auto archive = vmm::guest_launch_archive(document);
    EXPECT_EQ(archive.size() % 4, 0u) << "another archive can follow";
    auto entries = vmm::read_newc_archive(archive);
    ASSERT_TRUE(entries) << entries.error().to_string();
    ASSERT_EQ(entries->size(), 2u);
    EXPECT_EQ((*entries)[0].name, "boxlite");
    EXPECT_EQ((*entries)[0].mode, 040755u);
    EXPECT_EQ((*entries)[1].name, "boxlite/launch.json");
    EXPECT_EQ((*entries)[1].mode, 0100600u) << "the environment may hold secrets";
    EXPECT_EQ((*entries)[1].data, document);
    if (std::system("command -v cpio > /dev/null 2>&1") == 0) {  // a second opinion
        const fs::path file = fs::temp_directory_path() / fmt::format("boxlite-launch-{}.cpio", ::getpid());
        std::ofstream(file, std::ios::binary)
            .write(reinterpret_cast<const char*>(archive.data()), static_cast<std::streamsize>(archive.size()));
        EXPECT_EQ(std::system(("cpio -it --quiet < " + file.string() + " > /dev/null").c_str()), 0);
        fs::remove(file);
    }
    for (std::size_t cut : {std::size_t{130}, archive.size() - 200}) {
        std::vector<std::byte> truncated(archive.begin(), archive.begin() + static_cast<std::ptrdiff_t>(cut));
        EXPECT_FALSE(vmm::read_newc_archive(truncated)) << "cut at " << cut;
    }
}

// The guest assets come first: a kernel that is missing or corrupt is refused naming the path
// and where the setting came from, before any disk or shim exists. No KVM needed.
TEST_F(ShimFixture, StartWithAMissingOrCorruptKernelSaysWhereItLooked) {
    const fs::path box_dir = dir / "box-nokernel";
    fs::create_directories(box_dir);
    KvmEngineOptions options;
    options.shim = BOXLITE_SHIM_KVM_PATH;
    BoxConfig box;
    box.options.detach = true;
    EngineLaunch launch;
    launch.config = &box;
    launch.box_dir = box_dir;
    launch.rootfs = dir / "base.ext4";
    launch.kernel = dir / "no-such-vmlinuz";
    auto missing = detail::kvm_engine_start(options, launch);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find(launch.kernel.string()), std::string::npos) << missing.error().message();
    EXPECT_NE(missing.error().message().find("kernel option"), std::string::npos) << missing.error().message();
    EXPECT_FALSE(fs::exists(box_dir / "disk.qcow2"));
    std::ofstream(dir / "corrupt-vmlinuz", std::ios::binary) << std::string(8192, 'k');
    launch.kernel = dir / "corrupt-vmlinuz";
    auto corrupt = detail::kvm_engine_start(options, launch);
    ASSERT_FALSE(corrupt);
    EXPECT_NE(corrupt.error().message().find("not a bzImage"), std::string::npos) << corrupt.error().message();
    EXPECT_NE(corrupt.error().message().find(launch.kernel.string()), std::string::npos) << corrupt.error().message();
}

// The whole start path up to the agent, under real KVM: a PVH "kernel" (tests/guests/pvh_dump.S)
// prints the command line and the initrd it was given to the console, then powers off. So start()
// fails at "waiting for the agent" — and the console shows what the guest got: our command line,
// the launch archive in front of the base initramfs, the environment exactly as launched.
TEST_F(ShimFixture, StartBootsThroughPvhWithTheLaunchDocumentInFrontOfTheInitrd) {
    const fs::path box_dir = dir / "box";
    fs::create_directories(box_dir);
    const fs::path base = dir / "base.ext4";
    std::ofstream(base, std::ios::binary).put('x');
    fs::resize_file(base, 4 << 20);
    const std::string base_initrd = "BASE-INITRAMFS-BYTES";
    std::ofstream(dir / "initramfs.cpio.gz", std::ios::binary) << base_initrd;

    KvmEngineOptions options;
    options.shim = BOXLITE_SHIM_KVM_PATH;
    options.kernel = std::string(BOXLITE_TEST_GUEST_DIR) + "/pvh_dump.elf";
    options.initrd = dir / "initramfs.cpio.gz";
    options.boot_timeout = std::chrono::seconds(20);
    BoxConfig box;
    box.options.memory_mib = 128;
    box.options.detach = true;
    box.options.disk_size_gb = 1;
    EngineLaunch launch;
    launch.config = &box;
    launch.box_dir = box_dir;
    launch.rootfs = base;
    launch.env = {{"PATH", "/bin"}, {"GREETING", "hello world"}};
    launch.working_dir = "/work";
    launch.user = "nobody";
    auto started = detail::kvm_engine_start(options, launch);
    ASSERT_FALSE(started) << "the PVH guest has no agent";
    EXPECT_NE(started.error().message().find("stopped before its agent answered"), std::string::npos)
        << started.error().message();

    const std::string console = read(box_dir / "console.log");
    const auto newline = console.find('\n');
    ASSERT_NE(newline, std::string::npos) << console;
    EXPECT_NE(console.substr(0, newline).find("boxlite.box_id=" + box.id.str()), std::string::npos) << console;
    const std::string initrd = console.substr(newline + 1);
    ASSERT_GE(initrd.size(), base_initrd.size());
    EXPECT_EQ(initrd.substr(initrd.size() - base_initrd.size()), base_initrd) << "the base initramfs follows";
    auto entries = vmm::read_newc_archive(std::as_bytes(std::span(initrd.data(), initrd.size())));
    ASSERT_TRUE(entries) << entries.error().to_string();
    ASSERT_EQ(entries->size(), 2u);
    EXPECT_EQ((*entries)[1].name, "boxlite/launch.json");
    auto guest = vmm::parse_guest_launch((*entries)[1].data);
    ASSERT_TRUE(guest) << guest.error().to_string();
    EXPECT_EQ(guest->env, launch.env);
    EXPECT_EQ(guest->working_dir, "/work");
    EXPECT_EQ(guest->user, "nobody");
    EXPECT_EQ(guest->box_id, box.id.str());
    EXPECT_EQ((*qcow2::Qcow2Image::open(box_dir / "disk.qcow2", {.read_only = true}))->size(), 1ULL << 30)
        << "disk_size_gb applied to the overlay";
}

}  // namespace
}  // namespace boxlite
