// Our virtio-blk device model over QCOW2, served by our vhost-user back end to a real QEMU running
// Debian's cloud kernel under TCG: the kernel's own virtio_blk driver reads and writes /dev/vda,
// then `qemu-img check` and a read-back through our QCOW2 code check what landed on the disk.
//
// The guest is the bzImage of scripts/setup's kernel (booted through QEMU's option ROM) and a
// test initramfs: busybox-static, the four virtio modules, and a shell script as /init.
#include "qemu_guest.hpp"

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
using testing::build_initramfs;
using testing::guest_kernel;
using testing::start_qemu;
using testing::wait_qemu;

// After /init loaded the modules and /dev/vda appeared (qemu_guest.hpp).
constexpr const char* kScript = R"SH(echo "SECTORS $($B cat /sys/block/vda/size)"
echo "READ $($B dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | $B head -c 16)"
$B dd if=/dev/urandom of=/tmp/blob bs=65536 count=64 2>/dev/null
echo "WROTE $($B md5sum /tmp/blob | $B cut -d' ' -f1)"
$B dd if=/tmp/blob of=/dev/vda bs=65536 seek=128 conv=fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
echo "READBACK $($B dd if=/dev/vda bs=65536 skip=128 count=64 2>/dev/null | $B md5sum | $B cut -d' ' -f1)")SH";

TEST(VhostUserQemu, DebianKernelReadsAndWritesOurBlockDevice) {
    std::string why;
    const std::string kernel = guest_kernel(why);
    ASSERT_FALSE(kernel.empty()) << why;
    ASSERT_TRUE(test::have_tool("qemu-system-x86_64")) << "scripts/setup installs qemu-system-x86";
    test::TempDir dir("boxlite-vhost-qemu");
    const auto failed = build_initramfs(dir.path(), kScript);
    ASSERT_EQ(failed, "");

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
    auto qemu = start_qemu(dir.path(), kernel,
                           {"-chardev", "socket,id=blk0,fd=3", "-device", "vhost-user-blk,chardev=blk0"},
                           {theirs.get()});
    ASSERT_TRUE(qemu) << qemu.error().message();
    qemu_pid.store(*qemu);
    theirs.reset();  // QEMU's copy is the only one: its exit is our EOF
    const int status = wait_qemu(*qemu);
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
