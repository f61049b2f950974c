// What a namespace box may not do to its host, end to end: root in a busybox box (real shim,
// agent, kernel) tries what Docker's defaults forbid, and the things the agent and ordinary
// programs need keep working under the same confinement.
#include <boxlite/boxlite.hpp>

#include "namespace_fixture.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

using namespace boxlite;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

class NamespaceIsolation : public test::NamespaceBox {
protected:
    /// `script` through sh -c as root; stdout and stderr together, then "rc=<exit code>".
    std::string sh(LiteBox& box, const std::string& script, const std::string& user = "") {
        auto command = BoxCommand("sh").args({"-c", "(" + script + ") 2>&1; echo rc=$?"});
        if (!user.empty()) command.user(user);
        return run(box, command).stdout_text;
    }

    /// A private copy of the busybox rootfs to put hostile entries into.
    fs::path rootfs_copy() {
        scratch_.emplace("boxlite-rootfs-copy");
        const auto copy = scratch_->path() / "rootfs";
        EXPECT_EQ(std::system(("cp -a '" + rootfs_->string() + "' '" + copy.string() + "'").c_str()), 0);
        return copy;
    }

    std::optional<test::TempDir> scratch_;
};

/// A hexadecimal capability mask as /proc/<pid>/status prints it.
std::string cap_mask(std::uint64_t mask) { return fmt::format("{:016x}", mask); }

/// Docker's default set (0xa80425fb) without CAP_MKNOD (27) and CAP_NET_RAW (13).
constexpr std::uint64_t kExpectedCapabilities = 0xa80425fbULL & ~(1ULL << 27) & ~(1ULL << 13);

TEST_F(NamespaceIsolation, CapabilitiesAreDockersDefaultsWithoutMknodAndNetRaw) {
    auto box = make_box();
    const auto status = run(box, BoxCommand("cat").arg("/proc/self/status")).stdout_text;
    const auto expected = cap_mask(kExpectedCapabilities);
    for (const char* key : {"CapBnd", "CapPrm", "CapEff"}) {
        EXPECT_NE(status.find(fmt::format("{}:\t{}\n", key, expected)), std::string::npos) << key << "\n" << status;
    }
    EXPECT_NE(status.find("CapInh:\t0000000000000000\n"), std::string::npos) << status;
    EXPECT_NE(status.find("CapAmb:\t0000000000000000\n"), std::string::npos) << status;
    EXPECT_NE(status.find("Seccomp:\t2\n"), std::string::npos) << "the seccomp filter is on\n" << status;
    EXPECT_NE(status.find("NoNewPrivs:\t0\n"), std::string::npos) << "setuid programs keep working\n" << status;
    // The agent itself (PID 1) runs under the same bounding set as its commands.
    const auto agent = run(box, BoxCommand("cat").arg("/proc/1/status")).stdout_text;
    EXPECT_NE(agent.find("CapBnd:\t" + expected + "\n"), std::string::npos) << agent;
    // A command as another user has nothing effective, and the same bounding set.
    const auto user = run(box, BoxCommand("cat").arg("/proc/self/status").user("box")).stdout_text;
    EXPECT_NE(user.find("CapEff:\t0000000000000000\n"), std::string::npos) << user;
    EXPECT_NE(user.find("CapBnd:\t" + expected + "\n"), std::string::npos) << user;
}

// The agent binary the box runs cannot be written through /proc/<agent>/exe (runc's
// CVE-2019-5736), seen from the host, where nothing of the box's confinement applies: it is the
// host's file through a read-only overlay that is mounted nowhere (jailer/sealed_exec.hpp), not a
// copy; from inside, the box cannot even open it.
TEST_F(NamespaceIsolation, TheAgentBinaryCannotBeWrittenThroughItsExe) {
    auto box = make_box();
    ASSERT_EQ(sh(box, "true"), "rc=0\n");  // started
    std::ifstream pid_file(home_->path() / "boxes" / box.id().str() / "agent.pid");
    int agent = 0;
    pid_file >> agent;
    ASSERT_GT(agent, 0);
    const auto exe = fmt::format("/proc/{}/exe", agent);
    std::error_code ec;
    const auto target = fs::read_symlink(exe, ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(target.filename(), "boxlite-agent") << target;
    EXPECT_EQ(target.string().find("memfd:"), std::string::npos) << "not a copy: " << target;
    errno = 0;
    EXPECT_LT(::open(exe.c_str(), O_WRONLY | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EROFS) << std::strerror(errno);
    EXPECT_LT(::open(exe.c_str(), O_RDWR | O_APPEND | O_CLOEXEC), 0);
    // From inside: the agent is not dumpable, so its exe cannot even be opened.
    EXPECT_NE(sh(box, "echo x >> /proc/1/exe").find("rc=1"), std::string::npos);
    // Still the same program: commands keep running.
    EXPECT_EQ(sh(box, "echo alive"), "alive\nrc=0\n");
}

TEST_F(NamespaceIsolation, NoWayToADeviceNode) {
    auto box = make_box();
    EXPECT_EQ(sh(box, "mknod /tmp/sda b 8 0"), "mknod: /tmp/sda: Operation not permitted\nrc=1\n");
    EXPECT_EQ(sh(box, "mknod /root/zero c 1 5"), "mknod: /root/zero: Operation not permitted\nrc=1\n");
    // /dev holds exactly the minimal set.
    EXPECT_EQ(run(box, BoxCommand("ls").args({"-A", "/dev"})).stdout_text,
              "fd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n");
    EXPECT_EQ(sh(box, "head -c 3 /dev/zero | wc -c; echo x > /dev/null"), "3\nrc=0\n");
}

TEST_F(NamespaceIsolation, DeviceNodesOutsideDevCannotBeOpened) {
    // Nodes that exist anyway — in a rootfs directory, in a volume — are on nodev mounts. A
    // harmless node (/dev/zero's numbers) stands in for a disk.
    const auto rootfs = rootfs_copy();
    ASSERT_EQ(::mknod((rootfs / "root/zero").c_str(), S_IFCHR | 0666, makedev(1, 5)), 0) << std::strerror(errno);
    test::TempDir volume("boxlite-volume-dev");
    ASSERT_EQ(::mknod((volume.path() / "zero").c_str(), S_IFCHR | 0666, makedev(1, 5)), 0) << std::strerror(errno);
    auto o = options();
    o.rootfs = RootfsSpec::path(rootfs);
    o.volumes = {VolumeSpec{volume.path().string(), "/vol", false}};
    auto box = runtime_->create(o);
    ASSERT_TRUE(box) << box.error().to_string();
    EXPECT_EQ(sh(*box, "head -c 1 /root/zero"), "head: /root/zero: Permission denied\nrc=1\n");
    EXPECT_EQ(sh(*box, "head -c 1 /vol/zero"), "head: /vol/zero: Permission denied\nrc=1\n");
    EXPECT_EQ(sh(*box, "echo written > /vol/file && cat /vol/file"), "written\nrc=0\n") << "the volume itself works";
}

TEST_F(NamespaceIsolation, ProcIsMaskedAndPartlyReadOnly) {
    auto box = make_box();
    int masked_files = 0;
    for (const char* path : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/timer_stats",
                             "/proc/latency_stats"}) {
        if (!fs::exists(path)) continue;  // this kernel has no such file
        ++masked_files;
        EXPECT_EQ(sh(box, fmt::format("wc -c < {}", path)), "0\nrc=0\n") << path << " is not masked";
    }
    EXPECT_GT(masked_files, 0) << "none of the masked files exists on this kernel; the check proved nothing";
    if (fs::exists("/proc/timer_list")) {
        EXPECT_GT(test::read_file("/proc/timer_list").size(), 0U) << "on the host it has content";
    }
    for (const char* dir : {"/proc/acpi", "/proc/scsi", "/proc/asound"}) {
        if (!fs::exists(dir)) continue;
        EXPECT_EQ(sh(box, fmt::format("ls -A {}; touch {}/x", dir, dir)),
                  fmt::format("touch: {}/x: Read-only file system\nrc=1\n", dir));
    }
    // Writable /proc/sys would be the host's sysctls; sysrq-trigger checks no capability at all.
    // (hostname is per UTS namespace: even a successful write would not touch the host.)
    EXPECT_EQ(sh(box, "echo boxname > /proc/sys/kernel/hostname"),
              "sh: can't create /proc/sys/kernel/hostname: Read-only file system\nrc=1\n");
    if (fs::exists("/proc/sysrq-trigger")) {
        // 'h' only prints help into the kernel log, should the write get through.
        EXPECT_EQ(sh(box, "echo h > /proc/sysrq-trigger"),
                  "sh: can't create /proc/sysrq-trigger: Read-only file system\nrc=1\n");
    }
    const auto mounts = run(box, BoxCommand("cat").arg("/proc/mounts")).stdout_text;
    for (const char* path : {"/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"}) {
        if (fs::exists(path)) {
            EXPECT_NE(mounts.find(fmt::format("proc {} proc ro,", path)), std::string::npos) << mounts;
        }
    }
    EXPECT_EQ(sh(box, "sysctl -w kernel.domainname=box >/dev/null"),
              "sysctl: error setting key 'kernel.domainname': Read-only file system\nrc=1\n");
    // What programs read from /proc still works.
    EXPECT_EQ(sh(box, "grep -c MemTotal /proc/meminfo; cat /proc/1/comm"), "1\nboxlite-agent\nrc=0\n");
}

TEST_F(NamespaceIsolation, SysIsReadOnly) {
    auto box = make_box();
    const auto mounts = run(box, BoxCommand("cat").arg("/proc/mounts")).stdout_text;
    ASSERT_NE(mounts.find("sysfs /sys sysfs ro,"), std::string::npos) << mounts;
    EXPECT_EQ(sh(box, "touch /sys/boxlite"), "touch: /sys/boxlite: Read-only file system\nrc=1\n");
    EXPECT_EQ(sh(box, "echo 1 > /sys/kernel/profiling"),
              "sh: can't create /sys/kernel/profiling: Read-only file system\nrc=1\n");
    if (fs::exists("/sys/firmware")) {
        EXPECT_EQ(sh(box, "ls -A /sys/firmware"), "rc=0\n") << "masked";
    }
    EXPECT_EQ(sh(box, "test -d /sys/kernel"), "rc=0\n") << "the rest is readable";
}

TEST_F(NamespaceIsolation, TmpIsAWritableTmpfsForEveryone) {
    auto box = make_box();
    const auto mounts = run(box, BoxCommand("cat").arg("/proc/mounts")).stdout_text;
    EXPECT_NE(mounts.find("tmpfs /tmp tmpfs rw,nosuid,nodev"), std::string::npos) << mounts;
    EXPECT_EQ(sh(box, "stat -c %a /tmp"), "1777\nrc=0\n");
    EXPECT_EQ(sh(box, "echo mine > /tmp/by-box && cat /tmp/by-box && stat -c %U /tmp/by-box", "box"),
              "mine\nbox\nrc=0\n");
}

TEST_F(NamespaceIsolation, KernelMountsAndNamespacesAreOutOfReach) {
    auto box = make_box();
    EXPECT_EQ(sh(box, "mount -t tmpfs none /mnt"), "mount: permission denied (are you root?)\nrc=1\n");
    EXPECT_EQ(sh(box, "umount /proc/sys"), "umount: can't unmount /proc/sys: Operation not permitted\nrc=1\n");
    EXPECT_EQ(sh(box, "unshare -n true"), "unshare: unshare(0x40000000): Operation not permitted\nrc=1\n");
    EXPECT_EQ(sh(box, "unshare -U true"), "unshare: unshare(0x10000000): Operation not permitted\nrc=1\n");
    // The agent is not dumpable (issue 17): its /proc/1/ns cannot even be opened. A command's can,
    // and setns into it is refused all the same.
    EXPECT_EQ(sh(box, "nsenter -t 1 -n true"), "nsenter: can't open '/proc/1/ns/net': Permission denied\nrc=1\n");
    EXPECT_EQ(sh(box, "sleep 5 & nsenter -t $! -n true; r=$?; kill $!; exit $r"),
              "nsenter: setns(): can't reassociate to namespace 'net': Operation not permitted\nrc=1\n");
    // An image of garbage: without the filter and the capability the kernel would answer "Exec
    // format error" (or "Function not implemented" without module support).
    EXPECT_EQ(sh(box, "head -c 4096 /dev/zero > /tmp/m.ko; insmod /tmp/m.ko"),
              "insmod: can't insert '/tmp/m.ko': Operation not permitted\nrc=1\n");
    EXPECT_EQ(sh(box, "date -s 2001-01-01 >/dev/null"), "date: can't set date: Operation not permitted\nrc=0\n")
        << "busybox date reports the failure and exits 0";
    EXPECT_EQ(sh(box, "hostname other"), "hostname: sethostname: Operation not permitted\nrc=1\n");
    EXPECT_EQ(sh(box, "dmesg > /dev/null"), "dmesg: klogctl: Operation not permitted\nrc=1\n")
        << "the host's kernel log";
}

TEST_F(NamespaceIsolation, TheSeccompFilterIsWhatStopsUserNamespaces) {
    // A user namespace needs no capability, so only the filter stops it. With the filter off
    // (SecurityOptions::seccomp_enabled = false) the same command succeeds where the host allows
    // user namespaces.
    auto filtered = make_box();
    EXPECT_EQ(sh(filtered, "unshare -U true"), "unshare: unshare(0x10000000): Operation not permitted\nrc=1\n");
    std::ifstream max_file("/proc/sys/user/max_user_namespaces");
    long max = 0;
    max_file >> max;
    if (max <= 0) GTEST_SKIP() << "precondition: this host allows no user namespaces";
    auto o = options();
    o.security.seccomp_enabled = false;
    auto unfiltered = runtime_->create(o);
    ASSERT_TRUE(unfiltered) << unfiltered.error().to_string();
    EXPECT_EQ(sh(*unfiltered, "grep Seccomp: /proc/self/status"), "Seccomp:\t0\nrc=0\n");
    EXPECT_EQ(sh(*unfiltered, "unshare -U true"), "rc=0\n");
    // Capabilities are still dropped without the filter.
    EXPECT_EQ(sh(*unfiltered, "grep CapBnd: /proc/self/status"),
              "CapBnd:\t" + cap_mask(kExpectedCapabilities) + "\nrc=0\n");
}

TEST_F(NamespaceIsolation, DevelopmentPresetKeepsEveryCapabilityAndNoFilter) {
    auto o = options();
    o.security = SecurityOptions::development();
    auto box = runtime_->create(o);
    ASSERT_TRUE(box) << box.error().to_string();
    std::string host_bounding;
    {
        std::ifstream status("/proc/self/status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("CapBnd:", 0) == 0) host_bounding = line;
        }
    }
    EXPECT_EQ(sh(*box, "grep -E 'CapBnd|Seccomp:' /proc/self/status"), host_bounding + "\nSeccomp:\t0\nrc=0\n");
}

TEST_F(NamespaceIsolation, IpcNamespaceIsPrivate) {
    // A System V segment of the host's IPC namespace is invisible in the box.
    const key_t key = 0x626f786c;  // "boxl"
    const int segment = ::shmget(key, 4096, IPC_CREAT | 0600);
    ASSERT_GE(segment, 0) << std::strerror(errno);
    struct Remove {
        int id;
        ~Remove() { ::shmctl(id, IPC_RMID, nullptr); }
    } remove{segment};
    ASSERT_NE(test::read_file("/proc/sysvipc/shm").find(std::to_string(key)), std::string::npos);
    auto box = make_box();
    const auto in_box = run(box, BoxCommand("cat").arg("/proc/sysvipc/shm")).stdout_text;
    EXPECT_EQ(in_box.find(std::to_string(key)), std::string::npos) << in_box;
    EXPECT_NE(run(box, BoxCommand("readlink").arg("/proc/self/ns/ipc")).stdout_text,
              fs::read_symlink("/proc/self/ns/ipc").string() + "\n");
    // ... and so is one box's from another's: each box has its own namespace.
    auto other = make_box();
    EXPECT_NE(run(box, BoxCommand("readlink").arg("/proc/self/ns/ipc")).stdout_text,
              run(other, BoxCommand("readlink").arg("/proc/self/ns/ipc")).stdout_text);
}

TEST_F(NamespaceIsolation, WhatTheAgentNeedsStillWorks) {
    auto box = make_box();
    // Other users: su (root needs no password), and a command run as a user by the agent.
    EXPECT_EQ(sh(box, "su -s /bin/sh box -c 'id -u; id -g'"), "1000\n1000\nrc=0\n");
    // Signals to another user's processes (CAP_KILL): from a root shell and from the agent.
    auto sleeper = box.exec(BoxCommand("sh").args({"-c", "echo $$; exec sleep 100"}).user("box"));
    ASSERT_TRUE(sleeper);
    auto out = sleeper->stdout();
    auto pid = out->read_line();
    ASSERT_TRUE(pid && *pid);
    EXPECT_EQ(sh(box, "kill -TERM " + **pid), "rc=0\n");
    EXPECT_EQ(sleeper->wait()->exit_code, -SIGTERM);
    auto second = box.exec(BoxCommand("sleep").arg("100").user("box"));
    ASSERT_TRUE(second);
    ASSERT_TRUE(second->kill());
    EXPECT_EQ(second->wait()->exit_code, -SIGKILL);
    // Ownership and modes of copied-in files (CHOWN, FOWNER).
    test::TempDir src("boxlite-owned");
    test::write_file(src.path() / "owned.txt", "x");
    ASSERT_EQ(::chown((src.path() / "owned.txt").c_str(), 1000, 1000), 0);
    ::chmod((src.path() / "owned.txt").c_str(), 0640);
    ASSERT_TRUE(box.copy_in((src.path() / "owned.txt").string(), "/root/owned.txt"));
    EXPECT_EQ(sh(box, "stat -c '%u %g %a' /root/owned.txt"), "1000 1000 640\nrc=0\n");
    // Files of another user: root may read and change them (DAC_OVERRIDE, FOWNER).
    EXPECT_EQ(sh(box,
                 "echo private > /home/box/p && chown box:box /home/box/p && chmod 600 /home/box/p && "
                 "cat /home/box/p && chmod 644 /home/box/p"),
              "private\nrc=0\n");
    // chroot (SYS_CHROOT) and binding a low port (NET_BIND_SERVICE) on loopback.
    EXPECT_EQ(sh(box, "chroot / true"), "rc=0\n");
    EXPECT_EQ(sh(box, "nc -l -p 80 & sleep 0.2; kill $!"), "rc=0\n") << "nc still listening, so the bind worked";
    auto metrics = box.metrics();
    ASSERT_TRUE(metrics) << metrics.error().to_string();
    auto agent = box.open_agent();
    ASSERT_TRUE(agent);
    auto guest = agent->metrics();
    ASSERT_TRUE(guest) << guest.error().to_string();
    EXPECT_GT(guest->memory_total_bytes, 0U);
    EXPECT_GE(guest->process_count, 1U);
}

TEST_F(NamespaceIsolation, SymlinksInTheRootfsStayInsideIt) {
    // A hostile rootfs: /proc a dangling absolute symlink, /data one that names a real host
    // directory. Followed as host paths before the pivot they would put the box's /proc beside
    // its masks and create a volume's mount point on the host.
    test::TempDir host("boxlite-escape");
    const auto rootfs = rootfs_copy();
    fs::remove(rootfs / "proc");
    fs::create_symlink("/elsewhere/proc", rootfs / "proc");
    fs::create_symlink(host.path(), rootfs / "data");
    test::TempDir volume("boxlite-volume");
    test::write_file(volume.path() / "content", "from the volume\n");
    auto o = options();
    o.rootfs = RootfsSpec::path(rootfs);
    o.volumes = {VolumeSpec{(volume.path() / "content").string(), "/data/sub/file", true}};
    auto box = runtime_->create(o);
    ASSERT_TRUE(box) << box.error().to_string();
    EXPECT_EQ(sh(*box, "cat /data/sub/file"), "from the volume\nrc=0\n");
    EXPECT_TRUE(fs::is_empty(host.path())) << "a mount point was created on the host";
    EXPECT_EQ(sh(*box, "cat /proc/1/comm; readlink /proc"), "boxlite-agent\n/elsewhere/proc\nrc=0\n");
    if (fs::exists("/proc/timer_list")) {
        EXPECT_EQ(sh(*box, "wc -c < /proc/timer_list"), "0\nrc=0\n") << "masked";
    }
    EXPECT_EQ(sh(*box, "echo x > /proc/sys/kernel/hostname"),
              "sh: can't create /proc/sys/kernel/hostname: Read-only file system\nrc=1\n");
}

}  // namespace
