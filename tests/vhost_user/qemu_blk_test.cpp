// Our virtio-blk device model over QCOW2, served by our vhost-user back end to a real QEMU running
// Debian's cloud kernel under TCG: the kernel's own virtio_blk driver reads and writes /dev/vda,
// then `qemu-img check` and a read-back through our QCOW2 code check what landed on the disk.
//
// The guest is the bzImage of scripts/setup's kernel (booted through QEMU's option ROM) and a
// test initramfs: busybox-static, the four virtio modules, and a shell script as /init.
#include "support/support.hpp"

#include "devices/virtio/blk/device.hpp"
#include "qcow2/qcow2_image.hpp"
#include "vhost_user/backend.hpp"

#include <gtest/gtest.h>

#include "base/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <thread>

namespace boxlite::vhost_user {
namespace {

namespace fs = std::filesystem;

/// The kernel tree scripts/setup unpacks (boot/vmlinuz-*, lib/modules/<version>/).
fs::path kernel_tree() {
    const char* cache = std::getenv("BOXLITE_KERNEL_CACHE");
    return fs::path(cache && *cache ? cache : "/var/cache/boxlite/kernel") / "current";
}

std::optional<fs::path> find_file(const fs::path& root, const std::string& prefix, const std::string& suffix) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (name.rfind(prefix, 0) == 0 && name.size() >= suffix.size() &&
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
            return it->path();
    }
    return std::nullopt;
}

/// The host's TSC in kHz, from /proc/cpuinfo ("cpu MHz"); DESIGN.md: TCG boots need it.
std::uint64_t host_khz() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("cpu MHz", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos)
                return static_cast<std::uint64_t>(std::atof(line.c_str() + colon + 1) * 1000);
        }
    }
    return 0;
}

constexpr const char* kInit = R"SH(#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_blk; do
  $B insmod /modules/$m.ko || { echo "INSMOD-FAILED $m"; $B poweroff -f; }
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 600 ]; do $B sleep 0.1; i=$((i+1)); done
echo "SECTORS $($B cat /sys/block/vda/size)"
echo "READ $($B dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | $B head -c 16)"
$B dd if=/dev/urandom of=/tmp/blob bs=65536 count=64 2>/dev/null
echo "WROTE $($B md5sum /tmp/blob | $B cut -d' ' -f1)"
$B dd if=/tmp/blob of=/dev/vda bs=65536 seek=128 conv=fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
echo "READBACK $($B dd if=/dev/vda bs=65536 skip=128 count=64 2>/dev/null | $B md5sum | $B cut -d' ' -f1)"
$B sync
echo "GUEST-DONE"
$B poweroff -f
)SH";

TEST(VhostUserQemu, DebianKernelReadsAndWritesOurBlockDevice) {
    const fs::path tree = kernel_tree();
    const auto kernel = find_file(tree / "boot", "vmlinuz-", "");
    ASSERT_TRUE(kernel) << "no guest kernel under " << (tree / "boot")
                        << ": scripts/setup fetches Debian's linux-image-cloud-amd64 there";
    ASSERT_TRUE(test::have_tool("qemu-system-x86_64")) << "scripts/setup installs qemu-system-x86";
    const auto busybox = test::busybox_binary();
    ASSERT_TRUE(busybox) << "scripts/setup installs busybox-static";

    test::TempDir dir("boxlite-vhost-qemu");
    // The initramfs: busybox, the modules (in their .modinfo dependency order), /init.
    const fs::path staging = dir.path() / "initramfs";
    fs::create_directories(staging / "bin");
    fs::create_directories(staging / "modules");
    fs::copy_file(*busybox, staging / "bin" / "busybox");
    for (const char* module : {"virtio", "virtio_ring", "virtio_mmio", "virtio_blk"}) {
        const auto ko = find_file(tree / "lib" / "modules", std::string(module) + ".ko", "");
        ASSERT_TRUE(ko && ko->filename() == std::string(module) + ".ko") << "module " << module << " in " << tree;
        fs::copy_file(*ko, staging / "modules" / ko->filename());
    }
    test::write_file(staging / "init", kInit);
    fs::permissions(staging / "init", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
    test::shell("cd '" + staging.string() + "' && find . | cpio -o -H newc --quiet > '" + (dir / "initrd.cpio") + "'");

    // The disk: a QCOW2 image of ours with a known sector at 1 MiB.
    qcow2::CreateOptions create;
    create.size = 64 << 20;
    auto created = qcow2::Qcow2Image::create(dir.path() / "disk.qcow2", create);
    ASSERT_TRUE(created) << created.error().message();
    std::shared_ptr<qcow2::Qcow2Image> image(std::move(*created));
    std::string pattern = "BOXLITE-PATTERN!";
    pattern.resize(512, '\0');
    iovec iov{pattern.data(), pattern.size()};
    ASSERT_TRUE(image->write(1 << 20, std::span(&iov, 1)));

    auto device = std::make_shared<devices::virtio::BlockDevice>(image, "boxlite-test");
    BackendOptions options;
    std::string trace_log;
    std::mutex trace_mutex;
    options.trace = [&](std::string_view line) {
        std::lock_guard lock(trace_mutex);
        trace_log.append(line).push_back('\n');
    };
    Backend backend(device, options);
    // A connected socket pair: QEMU gets its end as a descriptor (-chardev socket,fd=3), so no
    // socket path (and no sun_path length limit) is involved.
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    base::OwnedFd ours(pair[0]), theirs(pair[1]);
    BoxliteResult<void> served;
    std::atomic<pid_t> qemu_pid{0};
    std::thread server([&] {
        served = backend.serve(std::move(ours));
        // A session we ended leaves QEMU waiting on us for ever: end it too.
        if (!served && qemu_pid.load() > 0) ::kill(qemu_pid.load(), SIGKILL);
    });

    const fs::path console = dir.path() / "console.log";
    base::OwnedFd qemu_output(::open((dir / "qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_TRUE(qemu_output);
    base::SpawnOptions spawn;
    spawn.argv = {"/usr/bin/qemu-system-x86_64",
                  "-M",
                  "microvm,acpi=on,rtc=off,memory-backend=mem",
                  "-object",
                  "memory-backend-memfd,id=mem,size=256M,share=on",
                  "-m",
                  "256M",
                  "-global",
                  "virtio-mmio.force-legacy=false",
                  "-accel",
                  "tcg",
                  "-cpu",
                  "max",
                  "-smp",
                  "1",
                  "-nodefaults",
                  "-no-user-config",
                  "-display",
                  "none",
                  "-no-reboot",
                  "-sandbox",
                  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                  "-serial",
                  "file:" + console.string(),
                  "-kernel",
                  kernel->string(),
                  "-initrd",
                  dir / "initrd.cpio",
                  "-append",
                  "console=ttyS0 panic=-1 loglevel=4 tsc_early_khz=" + std::to_string(host_khz()) + " tsc=reliable",
                  "-chardev",
                  "socket,id=blk0,fd=3",
                  "-device",
                  "vhost-user-blk,chardev=blk0"};
    base::OwnedFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    spawn.fds = {null.get(), qemu_output.get(), qemu_output.get(), theirs.get()};
    spawn.kill_with_parent = true;
    auto qemu = base::spawn(spawn);
    ASSERT_TRUE(qemu) << qemu.error().message();
    qemu_pid.store(*qemu);
    theirs.reset();  // QEMU's copy is the only one: its exit is our EOF
    // A hang guard, not a timing assertion: a guest that never powers off is killed after 10 min.
    int status = -1;
    for (int waited_ms = 0;; waited_ms += 100) {
        const pid_t done = ::waitpid(*qemu, &status, WNOHANG);
        if (done == *qemu) break;
        if (waited_ms == 600000) ::kill(*qemu, SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    server.join();

    const std::string log = test::read_file(console);
    const std::string qemu_log = test::read_file(dir.path() / "qemu.log");
    SCOPED_TRACE("console:\n" + log + "\nqemu:\n" + qemu_log + "\nvhost-user:\n" + trace_log);
    EXPECT_EQ(status, 0);
    EXPECT_TRUE(served) << (served ? "" : served.error().message());
    ASSERT_NE(log.find("GUEST-DONE"), std::string::npos);
    EXPECT_EQ(log.find("INSMOD-FAILED"), std::string::npos);
    EXPECT_NE(log.find("SECTORS 131072"), std::string::npos);
    EXPECT_NE(log.find("READ BOXLITE-PATTERN!"), std::string::npos);
    const auto wrote = log.find("WROTE ");
    const auto readback = log.find("READBACK ");
    ASSERT_NE(wrote, std::string::npos);
    ASSERT_NE(readback, std::string::npos);
    const std::string guest_md5 = log.substr(wrote + 6, 32);
    EXPECT_EQ(guest_md5, log.substr(readback + 9, 32));
    EXPECT_GT(device->stats().writes, 0u);
    EXPECT_GT(device->stats().reads, 0u);

    // What the guest wrote is on the disk, and the image is consistent.
    std::vector<char> blob(4 << 20);
    iovec back{blob.data(), blob.size()};
    ASSERT_TRUE(image->read(8 << 20, std::span(&back, 1)));
    ASSERT_TRUE(image->close());
    image.reset();
    test::write_file(dir.path() / "blob", std::string(blob.data(), blob.size()));
    EXPECT_EQ(test::shell("md5sum < '" + (dir / "blob") + "' | cut -d' ' -f1").substr(0, 32), guest_md5);
    EXPECT_NO_THROW(test::shell("qemu-img check -q '" + (dir / "disk.qcow2") + "' 2>&1"));
}

}  // namespace
}  // namespace boxlite::vhost_user
