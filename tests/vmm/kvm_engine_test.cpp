// The kvm engine policy and boxlite-shim-kvm: capability detection here (fast, with the
// reason), and the shim's whole path — config on a pipe, device set-up, console log, ready
// line, exit on guest power-off or SIGTERM — driven with tiny flat32 guests under real KVM.
#include "guest_helpers.hpp"

#include <boxlite/engine/kvm_engine.hpp>

#include "vmm/file.hpp"
#include "vmm/probe.hpp"
#include "vmm/shim_config.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace boxlite {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static_assert(Engine<KvmEngine>);

bool kvm_pvm() {
    struct stat st{};
    return ::stat("/sys/module/kvm_pvm", &st) == 0;
}

TEST(KvmEngine, AvailabilityIsAnsweredFastWithAReason) {
    KvmEngine engine;
    EXPECT_EQ(engine.kind(), "kvm");
    EXPECT_EQ(engine.rootfs_kind(), RootfsKind::Ext4Disk);
    const auto start = Clock::now();
    auto first = engine.available();
    const auto first_took = Clock::now() - start;
    EXPECT_LT(first_took, std::chrono::seconds(3));
    const auto again_start = Clock::now();
    auto second = engine.available();
    EXPECT_LT(Clock::now() - again_start, std::chrono::milliseconds(5)) << "the verdict is cached";
    EXPECT_EQ(first.has_value(), second.has_value());
    if (first) {
        SUCCEED() << "this host's KVM runs 64-bit guests";
        return;
    }
    EXPECT_EQ(first.error().kind(), ErrorKind::UnsupportedEngine) << first.error().to_string();
    EXPECT_NE(first.error().message().find("64-bit"), std::string::npos) << first.error().message();
    if (kvm_pvm()) {
        EXPECT_NE(first.error().message().find("kvm_pvm"), std::string::npos) << first.error().message();
    }
    EXPECT_NE(first.error().message().find("qemu"), std::string::npos) << "says what to use instead";
}

TEST(KvmEngine, StartRefusesWhereLongModeCannotRun) {
    KvmEngine engine;
    if (engine.available()) GTEST_SKIP() << "this host runs 64-bit guests; covered where it cannot";
    BoxConfig config;
    EngineLaunch launch;
    launch.config = &config;
    launch.box_dir = fs::temp_directory_path();
    auto started = engine.start(launch);
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().kind(), ErrorKind::UnsupportedEngine);
}

TEST(KvmEngine, KvmPvmIsRefusedByName) {
    if (!kvm_pvm()) GTEST_SKIP() << "/dev/kvm is not kvm_pvm here";
    auto verdict = vmm::probe_long_mode_support();
    ASSERT_FALSE(verdict);
    EXPECT_EQ(verdict.error().kind(), ErrorKind::UnsupportedEngine);
    EXPECT_NE(verdict.error().message().find("kvm_pvm"), std::string::npos) << verdict.error().message();
}

// The long-mode probe guest is set up by the same code as a Linux 64-bit boot (boot.cpp), so
// its reaching the port write proves that set-up (page tables, GDT, EFER, CR0/CR4) executes.
TEST(KvmEngine, LongModeProbeGuestRunsTheBootSetUp) {
    if (auto reason = vmm::testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    auto ran = vmm::run_long_mode_probe_guest();
    if (!ran && !kvm_pvm()) GTEST_SKIP() << "this host's KVM cannot enter long mode: " << ran.error().message();
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

int wait_exit(pid_t pid, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    int status = 0;
    while (Clock::now() < deadline) {
        if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
}

struct ShimFixture : ::testing::Test {
    fs::path dir = fs::temp_directory_path() / ("boxlite-shim-kvm-" + std::to_string(::getpid()));
    void SetUp() override {
        if (auto reason = vmm::testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
        fs::create_directories(dir);
    }
    void TearDown() override { fs::remove_all(dir); }
    std::string read(const fs::path& file) {
        return vmm::read_file_text(file.string());
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
    EXPECT_EQ(wait_exit(shim.pid, std::chrono::seconds(10)), 0);
    EXPECT_EQ(read(dir / "console.log"), "hello from a tiny guest\n");
    EXPECT_FALSE(fs::exists(dir / "vsock.sock")) << "the vsock socket is removed on exit";
}

TEST_F(ShimFixture, BoxliteShimKvmModeIsTheSameShim) {
#ifndef BOXLITE_SHIM_PATH
    GTEST_SKIP() << "boxlite-shim is not built";
#else
    vmm::KvmShimConfig config;
    config.memory_mib = 16;
    config.flat32_image = std::string(BOXLITE_TEST_GUEST_DIR) + "/hello.bin";
    config.console_log = (dir / "console.log").string();
    auto shim = spawn_shim(vmm::to_json_document(config).dump(), /*via_boxlite_shim=*/true);
    EXPECT_EQ(shim.ready, fmt::format("ok {}", shim.pid));
    EXPECT_EQ(wait_exit(shim.pid, std::chrono::seconds(10)), 0);
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
    const auto sent = Clock::now();
    ::kill(shim.pid, SIGTERM);
    EXPECT_EQ(wait_exit(shim.pid, std::chrono::seconds(5)), 0);
    EXPECT_LT(Clock::now() - sent, std::chrono::seconds(2));
}

TEST_F(ShimFixture, BadConfigIsReportedOnTheReadyLine) {
    auto garbage = spawn_shim("{not json");
    EXPECT_EQ(garbage.ready.rfind("error configuration error", 0), 0u) << garbage.ready;
    EXPECT_EQ(wait_exit(garbage.pid, std::chrono::seconds(5)), 1);
    auto both = spawn_shim(R"({"kernel": "/x", "flat32_image": "/y"})");
    EXPECT_NE(both.ready.find("exactly one of kernel and flat32_image"), std::string::npos) << both.ready;
    EXPECT_EQ(wait_exit(both.pid, std::chrono::seconds(5)), 1);
    auto missing = spawn_shim(R"({"kernel": "/nonexistent/vmlinux", "memory_mib": 16})");
    EXPECT_NE(missing.ready.find("/nonexistent/vmlinux"), std::string::npos) << missing.ready;
    EXPECT_EQ(wait_exit(missing.pid, std::chrono::seconds(5)), 1);
}

}  // namespace
}  // namespace boxlite
