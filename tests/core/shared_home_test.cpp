// One home, many writers: threads sharing one runtime, and processes (fork) sharing one
// SQLite file. Nothing may be lost, duplicated or left half-written.
#include <boxlite/boxlite.hpp>

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include <support/support.hpp>

namespace boxlite {
namespace {

using test::TempDir;

BoxOptions rootfs_options(const std::filesystem::path& rootfs) {
    BoxOptions o;
    o.rootfs = RootfsSpec::path(rootfs);
    o.auto_remove = false;
    return o;
}

RuntimeSettings small_host() {
    RuntimeSettings s;
    s.host_cpus = 2;
    return s;
}

TEST(Concurrency, ThreadsShareOneRuntime) {
    TempDir dir;
    MockEngine engine;
    BasicRuntime<MockEngine, PipeTransport, MemoryStorage> runtime(BoxliteOptions{dir.path(), {}, EngineKind::Mock},
                                                                   engine, PipeTransport{}, MemoryStorage{},
                                                                   small_host());
    constexpr int kThreads = 8;
    constexpr int kBoxesPerThread = 25;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kBoxesPerThread; ++i) {
                auto box = runtime.create(rootfs_options(dir.path()), fmt::format("t{}-b{}", t, i));
                if (!box || !box->start() || !runtime.list_info() || !box->stop()) ++failures;
                if (i % 2 == 0 && box && !runtime.remove(box->id().str())) ++failures;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(failures.load(), 0);
    auto boxes = runtime.list_info();
    ASSERT_TRUE(boxes);
    EXPECT_EQ(boxes->size(), static_cast<std::size_t>(kThreads * (kBoxesPerThread / 2)));
    EXPECT_EQ(engine.starts(), static_cast<std::size_t>(kThreads * kBoxesPerThread));
    EXPECT_EQ(engine.running(), 0U);
    EXPECT_EQ(runtime.metrics()->boxes_created_total, static_cast<std::uint64_t>(kThreads * kBoxesPerThread));
}

TEST(Concurrency, ConcurrentStartsOfOneBoxStartItOnce) {
    TempDir dir;
    MockEngine engine;
    BasicRuntime<MockEngine, PipeTransport, MemoryStorage> runtime(BoxliteOptions{dir.path(), {}, EngineKind::Mock},
                                                                   engine, PipeTransport{}, MemoryStorage{},
                                                                   small_host());
    auto box = runtime.create(rootfs_options(dir.path()), "once");
    ASSERT_TRUE(box);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            auto handle = runtime.get("once");
            if (!handle || !handle->start()) ++failures;
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(engine.starts(), 1U);
}

TEST(Concurrency, SameNameFromManyThreadsWinsOnce) {
    TempDir dir;
    auto runtime = open_runtime(BoxliteOptions{dir.path() / "home", {}, EngineKind::Mock}, small_host());
    ASSERT_TRUE(runtime);
    std::atomic<int> created{0}, already{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            auto box = runtime->create(rootfs_options(dir.path()), "contended");
            if (box) ++created;
            else if (box.error().kind() == ErrorKind::AlreadyExists) ++already;
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(created.load(), 1);
    EXPECT_EQ(already.load(), 7);
}

/// Forks `count` children running `body(index)`; returns how many exited 0 (and says how the
/// others ended).
template <class F>
int fork_children(int count, F body) {
    std::vector<pid_t> pids;
    for (int i = 0; i < count; ++i) {
        const pid_t pid = ::fork();
        if (pid == 0) ::_exit(body(i));
        pids.push_back(pid);
    }
    int ok = 0;
    for (pid_t pid : pids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            ++ok;
        } else if (WIFSIGNALED(status)) {
            ADD_FAILURE() << "child " << pid << " was killed by signal " << WTERMSIG(status);
        } else {
            ADD_FAILURE() << "child " << pid << " exited with " << WEXITSTATUS(status);
        }
    }
    return ok;
}

TEST(Concurrency, TwoProcessesCreatingInOneHomeLoseNothing) {
    TempDir dir;
    const auto home = dir.path() / "home";
    constexpr int kProcesses = 2;
    constexpr int kBoxesEach = 40;
    // Each child opens its own runtime (its own SQLite connection) on the same fresh home, so
    // home creation, migration and inserts all race.
    const int ok = fork_children(kProcesses, [&](int index) {
        auto runtime = open_runtime(BoxliteOptions{home, {}, EngineKind::Mock}, small_host());
        if (!runtime) {
            fmt::print(stderr, "child {}: {}\n", index, runtime.error());
            return 10;
        }
        for (int i = 0; i < kBoxesEach; ++i) {
            auto box = runtime->create(rootfs_options(dir.path()), fmt::format("p{}-{}", index, i));
            if (!box) {
                fmt::print(stderr, "child {}: {}\n", index, box.error());
                return 11;
            }
        }
        // Both also race for one name; exactly one may win.
        auto shared = runtime->create(rootfs_options(dir.path()), "shared");
        if (!shared && shared.error().kind() != ErrorKind::AlreadyExists) {
            fmt::print(stderr, "child {}: {}\n", index, shared.error());
            return 12;
        }
        return 0;
    });
    ASSERT_EQ(ok, kProcesses);

    auto runtime = open_runtime(BoxliteOptions{home, {}, EngineKind::Mock}, small_host());
    ASSERT_TRUE(runtime);
    auto boxes = runtime->list_info();
    ASSERT_TRUE(boxes);
    EXPECT_EQ(boxes->size(), static_cast<std::size_t>(kProcesses * kBoxesEach + 1));
    std::set<std::string> names;
    for (const auto& info : *boxes) names.insert(info.name.value_or(""));
    EXPECT_EQ(names.size(), boxes->size());
    EXPECT_TRUE(names.contains("shared"));
    for (const auto& info : *boxes) {
        EXPECT_TRUE(std::filesystem::exists(home / "boxes" / info.id.str() / "config.json")) << info.id.str();
    }
}

TEST(Concurrency, AnotherProcessSeesStateChangesAndDeadEnginesAreStopped) {
    TempDir dir;
    const auto home = dir.path() / "home";
    // The child creates and starts a box with the mock engine, then exits: its "engine" is gone.
    const int ok = fork_children(1, [&](int) {
        auto runtime = open_runtime(BoxliteOptions{home, {}, EngineKind::Mock}, small_host());
        if (!runtime) return 10;
        auto box = runtime->create(rootfs_options(dir.path()), "left-running");
        if (!box || !box->start()) return 11;
        auto options = rootfs_options(dir.path());
        options.detach = true;
        auto detached = runtime->create(options, "detached");
        if (!detached || !detached->start()) return 12;
        ::_exit(0);  // no destructors: the box stays Running in the database
    });
    ASSERT_EQ(ok, 1);
    auto storage = SqliteStorage::open(home);
    ASSERT_TRUE(storage);
    EXPECT_EQ(storage->lookup("left-running")->state.status, BoxStatus::Running);

    auto runtime = open_runtime(BoxliteOptions{home, {}, EngineKind::Mock}, small_host());
    ASSERT_TRUE(runtime);
    // This process's mock engine never ran it, so the box is dead: Stopped, and persisted so.
    EXPECT_EQ(runtime->get_info("left-running")->status, BoxStatus::Stopped);
    EXPECT_EQ(storage->lookup("left-running")->state.status, BoxStatus::Stopped);
    EXPECT_FALSE(storage->lookup("left-running")->state.handle);
    ASSERT_TRUE(runtime->remove("left-running"));
    ASSERT_TRUE(runtime->remove("detached"));
}

TEST(Concurrency, LifecycleWaitsForTheBoxLockOtherProcessesHold) {
    TempDir dir;
    auto runtime = open_runtime(BoxliteOptions{dir.path() / "home", {}, EngineKind::Mock}, small_host());
    ASSERT_TRUE(runtime);
    auto box = runtime->create(rootfs_options(dir.path()), "locked");
    ASSERT_TRUE(box);
    // Another open file description on the lock file behaves as another process would.
    const auto lock_path = dir.path() / "home" / "boxes" / box->id().str() / ".lock";
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX), 0);
    std::atomic<bool> started{false};
    std::thread starter([&] { started = static_cast<bool>(box->start()); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(started.load());  // still waiting for the lock
    EXPECT_EQ(box->info()->status, BoxStatus::Configured);
    ::close(fd);  // releases the lock
    starter.join();
    EXPECT_TRUE(started.load());
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
    ASSERT_TRUE(runtime->remove("locked", true));
}

TEST(Concurrency, AttachedBoxesStopWithTheirRuntime) {
    TempDir dir;
    MockEngine engine;
    {
        BasicRuntime<MockEngine, PipeTransport, MemoryStorage> runtime(BoxliteOptions{dir.path(), {}, EngineKind::Mock},
                                                                       engine, PipeTransport{}, MemoryStorage{},
                                                                       small_host());
        auto attached = runtime.create(rootfs_options(dir.path()), "attached");
        auto options = rootfs_options(dir.path());
        options.detach = true;
        auto detached = runtime.create(options, "detached");
        ASSERT_TRUE(attached && detached);
        ASSERT_TRUE(attached->start());
        ASSERT_TRUE(detached->start());
        EXPECT_EQ(engine.running(), 2U);
    }
    EXPECT_EQ(engine.running(), 1U);  // the detached one lives on
}

}  // namespace
}  // namespace boxlite
