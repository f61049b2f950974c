// lib/base: OwnedFd closes what it owns, FileLock's modes and release, spawn's descriptor
// hand-over and detached children.
#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "base/spawn.hpp"
#include "base/unix_address.hpp"

#include "support/support.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

namespace {

using namespace boxlite;
using base::FileLock;
using base::OwnedFd;

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(OwnedFd, ClosesOnDestructionResetAndMoveAssignment) {
    int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(raw, 0);
    {
        OwnedFd fd(raw);
        EXPECT_TRUE(fd.valid());
        EXPECT_EQ(fd.get(), raw);
    }
    EXPECT_FALSE(fd_is_open(raw));

    OwnedFd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    OwnedFd b(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    const int first = a.get();
    a = std::move(b);
    EXPECT_FALSE(fd_is_open(first)) << "the descriptor replaced by move assignment is closed";
    EXPECT_FALSE(b.valid());
    const int kept = a.release();
    EXPECT_FALSE(a.valid());
    EXPECT_TRUE(fd_is_open(kept)) << "release() hands the descriptor over unclosed";
    ::close(kept);
}

TEST(FileLock, ExclusiveExcludesEveryOtherHolderUntilReleased) {
    test::TempDir dir("boxlite-base-lock");
    const auto path = dir.path() / "lock";
    auto held = FileLock::acquire(path, FileLock::Mode::Exclusive);
    ASSERT_TRUE(held) << held.error().to_string();
    // flock belongs to the open file description: a second FileLock in this process conflicts.
    auto shared = FileLock::try_acquire(path, FileLock::Mode::Shared);
    ASSERT_TRUE(shared);
    EXPECT_FALSE(shared->has_value());
    { auto released = std::move(*held); }
    auto again = FileLock::try_acquire(path, FileLock::Mode::Exclusive);
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->has_value()) << "destroying the holder released the lock";
}

TEST(FileLock, SharedHoldersCoexistAndBlockAWriter) {
    test::TempDir dir("boxlite-base-lock");
    const auto path = dir.path() / "lock";
    auto one = FileLock::acquire(path, FileLock::Mode::Shared);
    auto two = FileLock::acquire(path, FileLock::Mode::Shared);
    ASSERT_TRUE(one && two);
    auto writer = FileLock::open(path);
    ASSERT_TRUE(writer);
    auto got = writer->try_lock(FileLock::Mode::Exclusive);
    ASSERT_TRUE(got);
    EXPECT_FALSE(*got);
    one->unlock();
    two->unlock();
    got = writer->try_lock(FileLock::Mode::Exclusive);
    ASSERT_TRUE(got);
    EXPECT_TRUE(*got);
}

TEST(FileLock, AnUnopenableLockFileIsAStorageErrorNamingIt) {
    auto lock = FileLock::acquire("/nonexistent-dir/lock", FileLock::Mode::Exclusive);
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().kind(), ErrorKind::Storage);
    EXPECT_NE(lock.error().message().find("/nonexistent-dir/lock"), std::string::npos) << lock.error().message();
}

TEST(Spawn, HandsDescriptorsOnAtTheirTargetNumbersAndClosesTheRest) {
    test::TempDir dir("boxlite-base-spawn");
    const auto out_path = dir.path() / "out";
    OwnedFd out(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    OwnedFd unrelated(::open("/dev/null", O_RDONLY));  // not close-on-exec, not handed on
    ASSERT_TRUE(out && unrelated);
    base::SpawnOptions options;
    // fd 3 is the output file (O_CLOEXEC in this process: the hand-over must clear that).
    options.argv = {"/bin/sh", "-c", "echo hello >&3; ls /proc/self/fd >&3"};
    options.fds = {-1, -1, -1, out.get()};
    auto pid = base::spawn(options);
    ASSERT_TRUE(pid) << pid.error().to_string();
    ASSERT_GT(*pid, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    std::ifstream in(out_path);
    std::string first;
    std::getline(in, first);
    EXPECT_EQ(first, "hello");
    std::string fd;
    while (std::getline(in, fd)) {
        EXPECT_NE(fd, std::to_string(unrelated.get())) << "an unrelated descriptor leaked into the child";
    }
}

/// The caller's handler for SIGUSR2 in the tests below (never to run outside this process).
static void count_usr2(int) {}

/// Spawns `sh -c script`, its descriptor 3 writing into the file `path`.
static BoxliteResult<std::int32_t> spawn_shell_writing_to(const std::string& script, const std::filesystem::path& path,
                                                          bool detach) {
    OwnedFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!out) return fail_errno(ErrorKind::Storage, "opening " + path.string(), errno);
    base::SpawnOptions options;
    options.argv = {"/bin/sh", "-c", script};
    options.fds = {-1, -1, -1, out.get()};
    options.detach = detach;
    return base::spawn(options);
}

TEST(Spawn, TheProgramStartsWithNoBlockedSignalsAndTheCallersStateIsRestored) {
    // The caller blocks SIGUSR1 and catches SIGUSR2; spawn() blocks everything while a process
    // shares its memory. The program must see neither, detached or not, and the caller must get
    // its own mask and handler back.
    struct sigaction action {};
    action.sa_handler = count_usr2;
    struct sigaction old_action {};
    ASSERT_EQ(::sigaction(SIGUSR2, &action, &old_action), 0);
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask), 0);
    for (const bool detach : {false, true}) {
        test::TempDir dir("boxlite-base-spawn");
        const auto out_path = dir.path() / "status";
        // The program itself reads its mask (`exec`: a shell blocks every signal around its forks).
        auto pid = spawn_shell_writing_to("exec grep -E '^(SigBlk|SigCgt):' /proc/self/status >&3", out_path, detach);
        ASSERT_TRUE(pid) << pid.error().to_string();
        if (!detach) {
            ASSERT_EQ(::waitpid(*pid, nullptr, 0), *pid);
        }
        std::string text;
        for (int i = 0; i < 500 && text.find("SigCgt") == std::string::npos; ++i) {
            if (detach) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            std::ifstream in(out_path);
            text.assign(std::istreambuf_iterator<char>(in), {});
        }
        EXPECT_NE(text.find("SigBlk:\t0000000000000000\n"), std::string::npos) << "detach=" << detach << "\n" << text;
        sigset_t now;
        ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, nullptr, &now), 0);
        EXPECT_EQ(sigismember(&now, SIGUSR1), 1) << "the caller's mask was not restored";
        EXPECT_EQ(sigismember(&now, SIGTERM), 0) << "the caller was left with everything blocked";
        struct sigaction current {};
        ASSERT_EQ(::sigaction(SIGUSR2, nullptr, &current), 0);
        EXPECT_EQ(current.sa_handler, &count_usr2) << "the caller's handler was reset";
    }
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGUSR2, &old_action, nullptr);
}

TEST(Spawn, ReportsAnExecFailureOnTheChosenDescriptor) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    OwnedFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    base::SpawnOptions options;
    options.argv = {"/nonexistent/program"};
    options.fds = {-1, -1, -1, write_end.get()};
    options.exec_failure_fd = 3;
    options.exec_failure_line = "error cannot execute program\n";
    auto pid = base::spawn(options);
    ASSERT_TRUE(pid);
    write_end.reset();
    int status = 0;
    ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 127);
    char buffer[64] = {};
    const auto n = ::read(read_end.get(), buffer, sizeof buffer - 1);
    EXPECT_EQ(std::string(buffer, n > 0 ? static_cast<std::size_t>(n) : 0), "error cannot execute program\n");
}

TEST(Spawn, ADetachedProgramIsNotOurChild) {
    test::TempDir dir("boxlite-base-spawn");
    const auto pid_file = dir.path() / "pid";
    auto pid = spawn_shell_writing_to("echo $$ >&3", pid_file, /*detach=*/true);
    ASSERT_TRUE(pid) << pid.error().to_string();
    EXPECT_EQ(*pid, 0);
    std::string text;
    for (int i = 0; i < 500 && text.empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::ifstream in(pid_file);
        std::getline(in, text);
    }
    ASSERT_FALSE(text.empty()) << "the detached program never ran";
    const int detached = std::stoi(text);
    EXPECT_EQ(::waitpid(detached, nullptr, WNOHANG), -1) << "only a child could be waited for";
    EXPECT_EQ(errno, ECHILD);
}

TEST(Spawn, KillWithParentEndsTheProgramWhenItsParentDies) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    OwnedFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    // An intermediate process spawns the program, reports its pid and dies.
    const pid_t middle = ::fork();
    ASSERT_GE(middle, 0);
    if (middle == 0) {
        base::SpawnOptions options;
        options.argv = {"/bin/sleep", "1000"};
        options.kill_with_parent = true;
        auto pid = base::spawn(options);
        const int value = pid ? *pid : -1;
        [[maybe_unused]] auto n = ::write(write_end.get(), &value, sizeof value);
        ::_exit(0);
    }
    write_end.reset();
    int program = -1;
    ASSERT_EQ(::read(read_end.get(), &program, sizeof program), static_cast<ssize_t>(sizeof program));
    ASSERT_GT(program, 0);
    ASSERT_EQ(::waitpid(middle, nullptr, 0), middle);
    // The orphan is reparented and killed; /proc/<pid> goes once its new parent reaps it, so a
    // zombie ("Z") counts as gone too.
    auto alive = [&] {
        std::ifstream stat("/proc/" + std::to_string(program) + "/stat");
        std::string line;
        if (!std::getline(stat, line)) return false;
        const auto close = line.rfind(')');
        return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
    };
    for (int i = 0; i < 500 && alive(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_FALSE(alive()) << "sleep " << program << " outlived the process that spawned it";
}

}  // namespace

namespace {

// A socket path longer than sockaddr_un can hold still binds and connects, through its folder.
TEST(UnixAddress, PathsLongerThanSunPathBindAndConnect) {
    test::TempDir dir("boxlite-base-unix");
    const auto deep = dir.path() / std::string(150, 'd');
    std::filesystem::create_directories(deep);
    const auto path = (deep / "agent.sock").string();
    ASSERT_GT(path.size(), sizeof(sockaddr_un{}.sun_path));

    base::UnixAddress address;
    std::string why;
    ASSERT_TRUE(base::UnixAddress::make(path, address, why)) << why;
    EXPECT_TRUE(address.indirect());
    OwnedFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::bind(listener.get(), address.get(), address.size()), 0) << std::strerror(errno);
    ASSERT_EQ(::listen(listener.get(), 1), 0);
    EXPECT_TRUE(std::filesystem::is_socket(path)) << "the socket is made in its real folder";

    base::UnixAddress again;
    ASSERT_TRUE(base::UnixAddress::make(path, again, why)) << why;
    OwnedFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(client.get(), again.get(), again.size()), 0) << std::strerror(errno);
    OwnedFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(accepted.valid());
    ASSERT_EQ(::write(client.get(), "x", 1), 1);
    char byte = 0;
    ASSERT_EQ(::read(accepted.get(), &byte, 1), 1);
    EXPECT_EQ(byte, 'x');
}

TEST(UnixAddress, ShortPathsAreUsedAsTheyAreAndBadOnesNamed) {
    base::UnixAddress address;
    std::string why;
    ASSERT_TRUE(base::UnixAddress::make("/tmp/x.sock", address, why));
    EXPECT_FALSE(address.indirect());
    EXPECT_FALSE(base::UnixAddress::make("", address, why));
    EXPECT_NE(why.find("non-empty"), std::string::npos) << why;
    EXPECT_FALSE(base::UnixAddress::make("/no/such/folder/" + std::string(120, 'n') + "/s.sock", address, why));
    EXPECT_NE(why.find("opening the folder"), std::string::npos) << why;
    EXPECT_FALSE(base::UnixAddress::make("/tmp/" + std::string(120, 'n'), address, why));
    EXPECT_NE(why.find("name of Unix socket"), std::string::npos) << why;
}

}  // namespace
