// The agent as PID 1 of a real VM: Debian's cloud kernel and our initramfs (guest_assets.hpp)
// under QEMU microvm with TCG and QEMU's own virtio-blk device on a busybox ext4 disk smaller than
// the disk image. Asserted from the serial console and the disk afterwards: the modules loaded,
// the filesystem grew to the disk, the root switched, the agent listened on vsock, and — told so
// by the test-only launch option — powered the VM off by itself.
#include "engine/common/guest_assets.hpp"
#include "engine/kvm/launch.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;
using boxlite::test::TempDir;

/// Runs argv, waiting at most `guard` (a hang guard, not a timing bound); nullopt when killed.
std::optional<int> run_with_guard(const std::vector<std::string>& argv, std::chrono::seconds guard) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + guard;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > until) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return std::nullopt;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::uint64_t ext4_block_count(const fs::path& disk) {
    const auto out = boxlite::test::shell("dumpe2fs -h '" + disk.string() + "' 2>/dev/null");
    const auto at = out.find("Block count:");
    return at == std::string::npos ? 0 : std::stoull(out.substr(at + 12));
}

TEST(VmBoot, AgentBootsAsPid1GrowsTheDiskListensOnVsockAndPowersOff) {
    if (!boxlite::test::have_tool("qemu-system-x86_64")) GTEST_SKIP() << "precondition: qemu-system-x86_64 missing";
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup) is missing";
    TempDir dir("boxlite-vmboot");
    engine::GuestAssetOptions options;
    options.home = dir.path();
    options.agent = boxlite::test::built_binary("boxlite-agent");
    auto assets = engine::prepare_guest_assets(options);
    ASSERT_TRUE(assets) << assets.error().message();

    // The box disk: a 64 MiB ext4 on a 128 MiB image, which the agent must grow.
    const fs::path disk = dir.path() / "disk.img";
    boxlite::test::shell("mke2fs -q -t ext4 -d '" + rootfs->string() + "' '" + disk.string() + "' 64M 2>&1");
    fs::resize_file(disk, 128U << 20);
    const std::uint64_t blocks_before = ext4_block_count(disk);
    ASSERT_GT(blocks_before, 0U);

    vmm::GuestLaunchConfig launch;
    launch.box_id = "vmboot-test";
    launch.agent_port = 2695;
    launch.power_off_when_ready = true;
    const auto archive = vmm::guest_launch_archive(vmm::to_json_document(launch).dump());
    const fs::path initrd = dir.path() / "initrd.cpio";
    {
        std::ofstream out(initrd, std::ios::binary);
        out.write(reinterpret_cast<const char*>(archive.data()), static_cast<std::streamsize>(archive.size()));
        out << boxlite::test::read_file(assets->initramfs);
    }
    const fs::path console = dir.path() / "console.log";
    const std::string cmdline = "console=ttyS0 reboot=k panic=-1 quiet " + engine::guest_boot_cmdline();
    const auto status = run_with_guard({"qemu-system-x86_64",
                                        "-M",
                                        "microvm,acpi=on,x-option-roms=off,rtc=on",
                                        "-accel",
                                        "tcg",
                                        "-cpu",
                                        "max",
                                        "-m",
                                        "256",
                                        "-smp",
                                        "1",
                                        "-nodefaults",
                                        "-no-user-config",
                                        "-nographic",
                                        "-no-reboot",
                                        "-global",
                                        "virtio-mmio.force-legacy=false",
                                        "-serial",
                                        "file:" + console.string(),
                                        "-kernel",
                                        assets->vmlinux.string(),
                                        "-initrd",
                                        initrd.string(),
                                        "-append",
                                        cmdline,
                                        "-drive",
                                        "id=box,file=" + disk.string() + ",format=raw,if=none",
                                        "-device",
                                        "virtio-blk-device,drive=box"},
                                       std::chrono::seconds(300));
    const auto log = boxlite::test::read_file(console);
    ASSERT_TRUE(status) << "QEMU still ran after 300 s; console:\n" << log;
    {  // the agent's boot lines, with the guest's uptime at each step
        std::istringstream lines(log);
        for (std::string line; std::getline(lines, line);)
            if (line.rfind("boxlite-agent: ", 0) == 0) std::printf("%s\n", line.c_str());
    }
    EXPECT_EQ(*status, 0) << log;
    EXPECT_NE(log.find("boxlite-agent: "), std::string::npos) << log;
    EXPECT_NE(log.find(" modules for the transport in "), std::string::npos) << log;
    {  // what this box needs; a box without volumes and network loads no fuse/virtiofs/net/overlay
        // Each boot step loads its own ("loaded N modules for the transport in T ms: ..."): all of them.
        std::string modules;
        for (auto at = log.find(" modules for the "); at != std::string::npos;
             at = log.find(" modules for the ", at + 1)) {
            const auto list = log.find(": ", at);
            if (list == std::string::npos) break;
            modules += log.substr(list + 1, log.find('\n', list) - list - 1) + " ";
        }
        std::replace(modules.begin(), modules.end(), '\r', ' ');  // the serial console's line ends
        for (const char* module : {"virtio_mmio", "virtio_blk", "vsock", "vmw_vsock_virtio_transport"})
            EXPECT_NE(modules.find(std::string(" ") + module + " "), std::string::npos) << module << "\n" << log;
        for (const char* module : {"fuse", "virtiofs", "virtio_net", "overlay"})
            EXPECT_EQ(modules.find(std::string(" ") + module + " "), std::string::npos) << module << "\n" << log;
    }
    EXPECT_EQ(log.find("cannot load module"), std::string::npos) << log;
    EXPECT_NE(log.find("read /boxlite/launch.json (box vmboot-test)"), std::string::npos) << log;
    EXPECT_NE(log.find("mounted /dev/vda"), std::string::npos) << log;
    EXPECT_NE(log.find("resized /dev/vda"), std::string::npos) << log;
    EXPECT_NE(log.find("switched root to /dev/vda"), std::string::npos) << log;
    EXPECT_NE(log.find("listening on vsock port 2695 (host name vmboot-test)"), std::string::npos) << log;
    EXPECT_NE(log.find("powering off"), std::string::npos) << log;
    EXPECT_EQ(ext4_block_count(disk), 2 * blocks_before) << log;
}

}  // namespace
