// lib/jailer: the seccomp filter and the capability drop of namespace boxes, and CgroupSet's
// report. Each confinement is applied to a forked child (it cannot be undone) that then makes
// the real system calls and reports what the kernel answered.
#include "jailer/capabilities.hpp"
#include "jailer/cgroup.hpp"
#include "jailer/seccomp_filter.hpp"
#include "jailer/sealed_exec.hpp"

#include "support/support.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>

using namespace boxlite;

namespace {

/// Forks; `child(report_fd)` runs in the child, which then exits 0. Returns what the child wrote
/// to report_fd, followed by how it ended when it did not exit 0.
std::string fork_and_read(const std::function<void(int)>& child) {
    int report[2];
    if (::pipe2(report, O_CLOEXEC) != 0) return "pipe failed";
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(report[0]);
        child(report[1]);
        ::_exit(0);
    }
    ::close(report[1]);
    std::string text;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(report[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::close(report[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) text += "child killed by signal " + std::to_string(WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0) text += "child exited with " + std::to_string(WEXITSTATUS(status));
    return text;
}

/// Runs `body` in a forked child and returns its report: "" when every check passed, the
/// failures otherwise, or how the child died.
std::string in_child(const std::function<std::string()>& body) {
    return fork_and_read([&body](int report) {
        const auto text = body();
        (void)!::write(report, text.data(), text.size());
    });
}

/// "" if the call failed with `expected`, else a line saying what happened. Call it with the
/// system call as an argument: errno is read before anything else can change it.
std::string fails_with(const char* what, long rc, int expected) {
    const int e = errno;
    if (rc == -1 && e == expected) return {};
    return fmt::format("{}: returned {} errno {} ({}), expected {}\n", what, rc, e, std::strerror(e),
                       std::strerror(expected));
}

std::string status_field(const std::string& key) {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind(key + ":", 0) == 0) {
            auto value = line.substr(key.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    }
    return {};
}

/// Root can install the filter the way the box's init does (no no_new_privs, needs
/// CAP_SYS_ADMIN); anyone else only with no_new_privs.
jailer::SeccompOptions filter_options() { return {.no_new_privs = !test::is_root()}; }

TEST(SeccompFilter, DeniedCallsFailWithEperm) {
    const auto report = in_child([] {
        if (auto ok = jailer::install_box_seccomp_filter(filter_options()); !ok) return ok.error().to_string();
        std::string r;
        r += fails_with("kexec_load", ::syscall(SYS_kexec_load, 0, 0, nullptr, 0), EPERM);
        r += fails_with("kexec_file_load", ::syscall(SYS_kexec_file_load, -1, -1, 0, nullptr, 0), EPERM);
        r += fails_with("init_module", ::syscall(SYS_init_module, nullptr, 0, ""), EPERM);
        r += fails_with("finit_module", ::syscall(SYS_finit_module, -1, "", 0), EPERM);
        r += fails_with("delete_module", ::syscall(SYS_delete_module, "boxlite-none", 0), EPERM);
        r += fails_with("bpf", ::syscall(SYS_bpf, 0, nullptr, 0), EPERM);
        r += fails_with("perf_event_open", ::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0), EPERM);
        r += fails_with("userfaultfd", ::syscall(SYS_userfaultfd, 0), EPERM);
        r += fails_with("io_uring_setup", ::syscall(SYS_io_uring_setup, 1, nullptr), EPERM);
        r += fails_with("keyctl", ::syscall(SYS_keyctl, 0, -1, 0), EPERM);
        r += fails_with("add_key", ::syscall(SYS_add_key, "user", "x", "", 0, -1), EPERM);
        r += fails_with("request_key", ::syscall(SYS_request_key, "user", "x", nullptr, 0), EPERM);
        r += fails_with("open_by_handle_at", ::syscall(SYS_open_by_handle_at, -1, nullptr, 0), EPERM);
        r += fails_with("name_to_handle_at", ::syscall(SYS_name_to_handle_at, -1, "", nullptr, nullptr, 0), EPERM);
        r += fails_with("mount", ::syscall(SYS_mount, "none", "/nonexistent", "tmpfs", 0, nullptr), EPERM);
        r += fails_with("umount2", ::syscall(SYS_umount2, "/nonexistent", 0), EPERM);
        r += fails_with("pivot_root", ::syscall(SYS_pivot_root, "/nonexistent", "/nonexistent"), EPERM);
        r += fails_with("fsopen", ::syscall(SYS_fsopen, "tmpfs", 0), EPERM);
        r += fails_with("open_tree", ::syscall(SYS_open_tree, -1, "/", 0), EPERM);
        r += fails_with("move_mount", ::syscall(SYS_move_mount, -1, "", -1, "", 0), EPERM);
        r += fails_with("setns", ::syscall(SYS_setns, -1, 0), EPERM);
        r += fails_with("unshare(CLONE_NEWUSER)", ::syscall(SYS_unshare, CLONE_NEWUSER), EPERM);
        r += fails_with("unshare(CLONE_NEWNS|CLONE_FILES)", ::syscall(SYS_unshare, CLONE_NEWNS | CLONE_FILES), EPERM);
        r += fails_with("unshare(CLONE_NEWNET)", ::syscall(SYS_unshare, CLONE_NEWNET), EPERM);
        r += fails_with("unshare(CLONE_NEWTIME)", ::syscall(SYS_unshare, 0x80), EPERM);
        r += fails_with("clone(CLONE_NEWUSER)",
                        ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr), EPERM);
        r += fails_with("clone(CLONE_NEWPID)",
                        ::syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, nullptr, nullptr, nullptr, nullptr), EPERM);
        r += fails_with("clone3", ::syscall(SYS_clone3, nullptr, 0), ENOSYS);
        // Harmless arguments, should the filter not catch them: a bad magic, a NULL path, an
        // invalid clock, a size query.
        r += fails_with("reboot", ::syscall(SYS_reboot, 0, 0, 0, nullptr), EPERM);
        r += fails_with("swapon", ::syscall(SYS_swapon, nullptr, 0), EPERM);
        r += fails_with("swapoff", ::syscall(SYS_swapoff, nullptr), EPERM);
        r += fails_with("clock_settime", ::syscall(SYS_clock_settime, -1, nullptr), EPERM);
        r += fails_with("settimeofday", ::syscall(SYS_settimeofday, nullptr, nullptr), EPERM);
        r += fails_with("syslog", ::syscall(SYS_syslog, 10, nullptr, 0), EPERM);
        r += fails_with("kcmp", ::syscall(SYS_kcmp, 0, 0, -1, 0, 0), EPERM);
        r += fails_with("iopl", ::syscall(SYS_iopl, 0), EPERM);
        r += fails_with("ioperm", ::syscall(SYS_ioperm, 0, 0, 0), EPERM);
        r += fails_with("quotactl", ::syscall(SYS_quotactl, 0, nullptr, 0, nullptr), EPERM);
        return r;
    });
    EXPECT_EQ(report, "");
}

TEST(SeccompFilter, EverydayCallsStillWork) {
    const auto report = in_child([] {
        if (auto ok = jailer::install_box_seccomp_filter(filter_options()); !ok) return ok.error().to_string();
        std::string r;
        // fork (clone without namespace flags), threads (glibc tries clone3, gets ENOSYS, uses
        // clone), unshare of non-namespace state, and exec.
        const pid_t pid = ::fork();
        if (pid == 0) ::_exit(7);
        int status = 0;
        if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 7) {
            r += fmt::format("fork: pid {} status {} ({})\n", pid, status, std::strerror(errno));
        }
        bool ran = false;
        std::thread([&] { ran = true; }).join();
        if (!ran) r += "a thread did not run\n";
        if (::syscall(SYS_unshare, CLONE_FILES | CLONE_FS) != 0)
            r += fmt::format("unshare(CLONE_FILES|CLONE_FS): {}\n", std::strerror(errno));
        if (::syscall(SYS_personality, 0xffffffff) < 0)
            r += fmt::format("personality query: {}\n", std::strerror(errno));
        const pid_t shell = ::fork();
        if (shell == 0) {
            ::execl("/bin/sh", "sh", "-c", "exit 3", nullptr);
            ::_exit(127);
        }
        ::waitpid(shell, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 3) r += fmt::format("exec of /bin/sh: status {}\n", status);
        if (status_field("Seccomp") != "2") r += "Seccomp is '" + status_field("Seccomp") + "', not 2 (filter)\n";
        if (test::is_root() && status_field("NoNewPrivs") != "0") {
            r += "no_new_privs was set although not asked for (setuid programs would stop working)\n";
        }
        return r;
    });
    EXPECT_EQ(report, "");
}

#if defined(__x86_64__)
/// An i386 system call through int 0x80 (the 32-bit ABI a 32-bit program in the box uses).
long int80(long nr, long arg) {
    long rc = 0;
    asm volatile("int $0x80" : "=a"(rc) : "a"(nr), "b"(arg) : "memory");
    return rc;
}

TEST(SeccompFilter, CoversThe32BitSystemCallTable) {
    // i386 numbers: getpid 20, unshare 310.
    const auto probe = in_child([] { return int80(20, 0) > 0 ? std::string() : std::string("no getpid"); });
    if (!probe.empty()) GTEST_SKIP() << "precondition: this kernel runs no 32-bit system calls (" << probe << ")";
    const auto report = in_child([] {
        if (auto ok = jailer::install_box_seccomp_filter(filter_options()); !ok) return ok.error().to_string();
        std::string r;
        if (int80(20, 0) <= 0) r += "i386 getpid failed under the filter\n";
        if (const long rc = int80(310, CLONE_NEWUSER); rc != -EPERM)
            r += fmt::format("i386 unshare(CLONE_NEWUSER) gave {}\n", rc);
        return r;
    });
    EXPECT_EQ(report, "");
}
#endif

TEST(SeccompFilter, EveryDeniedNameIsKnownOrObsolete) {
    // A name libseccomp does not know would silently go unfiltered; only calls that no longer
    // exist anywhere may be missing.
    for (const auto name : jailer::denied_syscalls()) {
        const int nr = seccomp_syscall_resolve_name(std::string(name).c_str());
        EXPECT_NE(nr, __NR_SCMP_ERROR) << name << " is unknown to libseccomp " << seccomp_version()->major << "."
                                       << seccomp_version()->minor;
    }
}

TEST(Capabilities, NamesAndTheBoxSet) {
    EXPECT_EQ(jailer::capability_names(jailer::capability_bit(CAP_CHOWN) | jailer::capability_bit(CAP_SYS_ADMIN)),
              "CAP_CHOWN, CAP_SYS_ADMIN");
    EXPECT_EQ(jailer::capability_names(jailer::capability_bit(63)), "CAP_63");
    // Docker's default set (0xa80425fb) without MKNOD and NET_RAW.
    EXPECT_EQ(jailer::kBoxCapabilities,
              0xa80425fbULL & ~jailer::capability_bit(CAP_MKNOD) & ~jailer::capability_bit(CAP_NET_RAW));
    EXPECT_EQ(jailer::capability_names(jailer::kBoxCapabilities),
              "CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP, "
              "CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_AUDIT_WRITE, CAP_SETFCAP");
}

TEST(Capabilities, RestrictLeavesOnlyTheBoxSet) {
    if (!test::is_root()) GTEST_SKIP() << "precondition: not root (dropping capabilities needs CAP_SETPCAP)";
    test::TempDir dir("boxlite-caps");
    const auto report = in_child([&] {
        if (auto ok = jailer::restrict_capabilities(jailer::kBoxCapabilities); !ok) return ok.error().to_string();
        std::string r;
        const auto expected = fmt::format("{:016x}", jailer::kBoxCapabilities);
        for (const char* key : {"CapBnd", "CapPrm", "CapEff"}) {
            if (status_field(key) != expected)
                r += fmt::format("{} is {}, expected {}\n", key, status_field(key), expected);
        }
        for (const char* key : {"CapInh", "CapAmb"}) {
            if (status_field(key) != "0000000000000000") r += fmt::format("{} is {}\n", key, status_field(key));
        }
        if (jailer::bounding_set() != jailer::kBoxCapabilities) r += "bounding_set() disagrees with /proc\n";
        const auto node = (dir.path() / "sda").string();
        r += fails_with("mknod b 8 0", ::mknod(node.c_str(), S_IFBLK | 0600, makedev(8, 0)), EPERM);
        r += fails_with("mount", ::mount("none", dir.path().c_str(), "tmpfs", 0, nullptr), EPERM);
        r += fails_with("sethostname", ::sethostname("x", 1), EPERM);
        // What the agent needs: ownership, other users' files, becoming another user.
        const auto file = (dir.path() / "owned").string();
        std::ofstream(file) << "x";
        if (::chown(file.c_str(), 1000, 1000) != 0) r += fmt::format("chown: {}\n", std::strerror(errno));
        if (::chmod(file.c_str(), 0600) != 0)
            r += fmt::format("chmod of another user's file: {}\n", std::strerror(errno));
        if (::setgid(1000) != 0 || ::setuid(1000) != 0) r += fmt::format("setgid/setuid: {}\n", std::strerror(errno));
        if (status_field("CapEff") != "0000000000000000")
            r += "a non-root uid kept capabilities: " + status_field("CapEff") + "\n";
        return r;
    });
    EXPECT_EQ(report, "");
}

TEST(CgroupSet, AFailedJoinMovesLimitsToSkipped) {
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    const std::string name = "jailer-test-" + std::to_string(::getpid());
    auto set = jailer::CgroupSet::create(name, {std::uint64_t{256} << 20, std::nullopt, std::uint64_t{64}});
    ASSERT_FALSE(set.applied().empty()) << "this host has writable memory and pids cgroups, yet nothing was applied";
    const auto dirs = set.dirs();
    // No such process: every cgroup refuses it.
    EXPECT_FALSE(set.add(0x3ffffff0));
    EXPECT_TRUE(set.applied().empty());
    std::string skipped;
    for (const auto& s : set.skipped()) skipped += s + "\n";
    EXPECT_NE(skipped.find("memory=268435456 (joining "), std::string::npos) << skipped;
    EXPECT_NE(skipped.find("pids=64 (joining "), std::string::npos) << skipped;
    EXPECT_NE(skipped.find("No such process"), std::string::npos) << skipped;
    EXPECT_EQ(set.memory_dir(), "");
    EXPECT_EQ(set.pids_dir(), "");
    EXPECT_TRUE(set.dirs().empty());
    for (const auto& dir : dirs) EXPECT_FALSE(std::filesystem::exists(dir)) << dir << " was left behind";
}

TEST(CgroupSet, AJoinedProcessKeepsItsLimits) {
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    const std::string name = "jailer-test-ok-" + std::to_string(::getpid());
    auto set = jailer::CgroupSet::create(name, {std::uint64_t{256} << 20, std::nullopt, std::uint64_t{64}});
    ASSERT_FALSE(set.applied().empty()) << "this host has writable memory and pids cgroups, yet nothing was applied";
    ASSERT_NE(set.memory_dir(), "") << "memory limit not applied";
    ASSERT_NE(set.pids_dir(), "") << "pids limit not applied";
    const auto applied = set.applied();
    const pid_t child = ::fork();
    if (child == 0) {
        ::pause();
        ::_exit(0);
    }
    EXPECT_TRUE(set.add(child));
    EXPECT_EQ(set.applied(), applied);
    for (const auto& dir : {set.pids_dir(), set.memory_dir()}) {
        std::ifstream procs(dir + "/cgroup.procs");
        pid_t member = 0;
        procs >> member;
        EXPECT_EQ(member, child) << dir;
    }
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    set.remove();
    for (const auto& dir : set.dirs()) EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
}

/// The cgroup of `pid` in each hierarchy, from /proc/<pid>/cgroup: "<controllers>:<path>" lines.
static std::string cgroups_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
    return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A child made as the shim makes a box's init (fork_self_joined): it joins `set`'s cgroups
/// itself, then waits to be killed. Returns its pid, its report and whether it was born in v2.
static pid_t spawn_self_joining(jailer::CgroupSet& set, bool except_memory, std::string& report, bool& born_in_v2) {
    const auto made = set.fork_self_joined(except_memory);
    if (made.pid == 0) {
        ::pause();
        ::_exit(0);
    }
    report = made.failed_joins;
    born_in_v2 = made.born_in_v2;
    return made.pid;
}

TEST(CgroupSet, ABoxInitJoinsEveryCgroupItselfAndKeepsItsLimits) {
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    const std::string name = "jailer-test-self-" + std::to_string(::getpid());
    auto set = jailer::CgroupSet::create(name, {std::uint64_t{256} << 20, std::uint32_t{1}, std::uint64_t{64}});
    ASSERT_NE(set.memory_dir(), "") << "memory limit not applied";
    ASSERT_NE(set.pids_dir(), "") << "pids limit not applied";
    const auto applied = set.applied();
    const auto dirs = set.dirs();
    const auto before = cgroups_of(::getpid());
    std::string report;
    bool born_in_v2 = false;
    const pid_t child = spawn_self_joining(set, /*except_memory=*/false, report, born_in_v2);
    ASSERT_GT(child, 0) << std::strerror(errno);
    EXPECT_EQ(report, "");
    EXPECT_EQ(set.applied(), applied);
    EXPECT_EQ(set.dirs(), dirs);
    if (!set.bpf_dir().empty()) {
        EXPECT_TRUE(born_in_v2) << "clone3 into " << set.bpf_dir() << " was refused";
    }
    // In every hierarchy: the cgroup lists the process, and /proc names one box cgroup per
    // hierarchy (memory, pids, cpu, cpuacct and, on a hybrid host, the v2 one).
    for (const auto& dir : set.dirs()) {
        std::ifstream procs(dir + "/cgroup.procs");
        pid_t member = 0;
        procs >> member;
        EXPECT_EQ(member, child) << dir;
    }
    const auto membership = cgroups_of(child);
    std::size_t inside = 0;
    for (std::size_t at = 0; (at = membership.find(":/boxlite/" + name + "\n", at)) != std::string::npos; ++at)
        ++inside;
    EXPECT_EQ(inside, set.dirs().size()) << membership;
    // Only the child moved.
    EXPECT_EQ(cgroups_of(::getpid()), before);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    set.remove();
    for (const auto& dir : dirs) EXPECT_FALSE(std::filesystem::exists(dir)) << dir << " was left behind";
}

TEST(CgroupSet, ABoxInitKeptOutOfMemoryJoinsTheRest) {
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    if (std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers"))
        GTEST_SKIP() << "cgroup v2: memory is no hierarchy of its own";
    const std::string name = "jailer-test-self-mem-" + std::to_string(::getpid());
    auto set = jailer::CgroupSet::create(name, {std::uint64_t{256} << 20, std::nullopt, std::uint64_t{64}});
    ASSERT_NE(set.memory_dir(), "");
    ASSERT_NE(set.pids_dir(), "");
    std::string report;
    bool born_in_v2 = false;
    const pid_t child = spawn_self_joining(set, /*except_memory=*/true, report, born_in_v2);
    ASSERT_GT(child, 0) << std::strerror(errno);
    EXPECT_EQ(report, "");
    const auto membership = cgroups_of(child);
    EXPECT_NE(membership.find(":pids:/boxlite/" + name + "\n"), std::string::npos) << membership;
    EXPECT_EQ(membership.find(":memory:/boxlite/" + name), std::string::npos) << membership;
    // What the agent does for each command: a single-threaded process writes "0" to `tasks`.
    const int tasks = ::open((set.memory_dir() + "/tasks").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(tasks, 0);
    const pid_t command = ::fork();
    if (command == 0)
        ::_exit(::write(tasks, "0", 1) == 1 &&
                        cgroups_of(::getpid()).find(":memory:/boxlite/" + name) != std::string::npos
                    ? 0
                    : 1);
    ::close(tasks);
    int status = 0;
    ::waitpid(command, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a command could not move itself into memory";
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    set.remove();
}

TEST(CgroupSet, AJoinTheInitCouldNotMakeMovesItsLimitsToSkipped) {
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    if (std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers")) GTEST_SKIP() << "cgroup v2: no `tasks` files";
    const std::string name = "jailer-test-self-fail-" + std::to_string(::getpid());
    auto set = jailer::CgroupSet::create(name, {std::uint64_t{256} << 20, std::nullopt, std::uint64_t{64}});
    ASSERT_NE(set.pids_dir(), "");
    const auto pids_dir = set.pids_dir();
    // What the init reports when the kernel refuses a join.
    const std::string report = std::to_string(EACCES) + " " + pids_dir + "\n";
    jailer::CgroupSet::SelfJoin join;
    set.open_self_join(join, false);
    const pid_t child = ::fork();
    if (child == 0) {
        ::pause();
        ::_exit(0);
    }
    EXPECT_FALSE(set.settle_self_join(join, child, /*born_in_v2=*/false, false, report));
    EXPECT_EQ(set.pids_dir(), "");
    EXPECT_FALSE(std::filesystem::exists(pids_dir));
    std::string skipped;
    for (const auto& s : set.skipped()) skipped += s + "\n";
    EXPECT_NE(skipped.find("pids=64 (joining " + pids_dir + " failed: Permission denied)"), std::string::npos)
        << skipped;
    EXPECT_NE(set.memory_dir(), "") << "memory was joined: it stays";
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    set.remove();
}

// --- sealed_exec.hpp: the agent binary a box runs and cannot write ---------------------------

/// A copy of /bin/echo in <dir>/bin/echo, and <dir>/spare: the two layers of the overlay.
struct EchoBinary {
    test::TempDir dir{"boxlite-sealed"};
    std::string binary = (dir.path() / "bin" / "echo").string();
    std::string spare = (dir.path() / "spare").string();
    EchoBinary() {
        std::filesystem::create_directories(dir.path() / "bin");
        std::filesystem::create_directories(spare);
        std::filesystem::copy_file("/bin/echo", binary);
        std::filesystem::permissions(binary, std::filesystem::perms::owner_all);
    }
};

/// What the sealed file prints when executed from its descriptor in a child, or why not.
std::string run_sealed(int fd) {
    return fork_and_read([fd](int out) {
        ::dup2(out, 1);
        char arg0[] = "echo";
        char arg1[] = "sealed";
        char* argv[] = {arg0, arg1, nullptr};
        char* envp[] = {nullptr};
        ::syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
        ::_exit(127);
    });
}

std::string fd_target(int fd) {
    std::error_code ec;
    return std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec).string();
}

TEST(SealedExecutable, AReadOnlyOverlayMountedNowhere) {
    EchoBinary echo;
    std::string error;
    auto sealed = jailer::open_sealed_executable(echo.binary, echo.spare, error);
    ASSERT_TRUE(sealed.fd) << error;
    EXPECT_EQ(sealed.method, jailer::SealMethod::ReadOnlyOverlay) << sealed.fallback;
    EXPECT_TRUE(sealed.fallback.empty()) << sealed.fallback;
    // The file is the binary itself (not a copy), seen through a mount that is nowhere in the tree.
    EXPECT_EQ(fd_target(sealed.fd.get()), "/echo");
    const auto path = "/proc/self/fd/" + std::to_string(sealed.fd.get());
    EXPECT_EQ(fails_with("open for writing", ::open(path.c_str(), O_WRONLY | O_CLOEXEC), EROFS), "");
    EXPECT_EQ(fails_with("open for appending", ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC), EROFS), "");
    EXPECT_EQ(fails_with("truncate", ::truncate(path.c_str(), 0), EROFS), "");
    EXPECT_EQ(run_sealed(sealed.fd.get()), "sealed\n");
    // The host's file itself stays writable by the host, and a later seal sees the same bytes.
    EXPECT_EQ(std::filesystem::file_size(echo.binary), std::filesystem::file_size("/bin/echo"));
}

TEST(SealedExecutable, FallsBackToASealedCopyWhereNoOverlayCanBeMade) {
    EchoBinary echo;
    std::string error;
    // The spare folder holds the binary's folder: overlayfs refuses nested layers.
    auto sealed = jailer::open_sealed_executable(echo.binary, echo.dir.path().string(), error);
    ASSERT_TRUE(sealed.fd) << error;
    EXPECT_EQ(sealed.method, jailer::SealMethod::MemfdCopy);
    EXPECT_FALSE(sealed.fallback.empty());
    EXPECT_EQ(fd_target(sealed.fd.get()).rfind("/memfd:boxlite-agent", 0), 0U) << fd_target(sealed.fd.get());
    const int writer = ::open(("/proc/self/fd/" + std::to_string(sealed.fd.get())).c_str(), O_WRONLY | O_CLOEXEC);
    if (writer >= 0) {
        EXPECT_EQ(fails_with("write", ::write(writer, "x", 1), EPERM), "") << "sealed against writes";
        ::close(writer);
    }
    EXPECT_EQ(run_sealed(sealed.fd.get()), "sealed\n");

    // Asked for directly: no overlay is tried, so there is no reason to give.
    auto copied = jailer::open_sealed_executable(echo.binary, echo.spare, error, jailer::SealMethod::MemfdCopy);
    ASSERT_TRUE(copied.fd) << error;
    EXPECT_EQ(copied.method, jailer::SealMethod::MemfdCopy);
    EXPECT_TRUE(copied.fallback.empty());
    EXPECT_EQ(run_sealed(copied.fd.get()), "sealed\n");
}

TEST(SealedExecutable, AMissingBinaryIsAnErrorNamingIt) {
    EchoBinary echo;
    std::string error;
    auto sealed = jailer::open_sealed_executable(echo.binary + "-missing", echo.spare, error);
    EXPECT_FALSE(sealed.fd);
    EXPECT_NE(error.find(echo.binary + "-missing"), std::string::npos) << error;
    EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

}  // namespace
