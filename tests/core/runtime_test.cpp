// The runtime's state machine, lookups and lifecycle rules over MockEngine + MemoryStorage
// (compile-time policies), and the agent seam over PipeTransport.
#include <boxlite/engine/any_engine.hpp>
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/image/image_store.hpp>
#include <boxlite/runtime.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/storage/sqlite_storage.hpp>
#include <boxlite/transport/pipe_transport.hpp>

#include <gtest/gtest.h>

#include <support/support.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace boxlite {
namespace {

using TestRuntime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;

using test::TempDir;

/// A fake image store: every reference is "pulled" to the fixture's rootfs directory except
/// those starting with "missing", which fail as a registry's 404 would. It records its calls.
struct FakeImages {
    std::mutex mutex;
    std::vector<std::pair<std::string, std::string>> prepared;  // (box id, reference)
    std::vector<std::string> released;                          // box ids
};

/// One-shot callbacks a test arms to run at an exact point inside the runtime: that is how the
/// races below are reproduced deterministically, in one thread.
struct Hooks {
    std::mutex mutex;
    std::function<void()> alive_probed;        // inside Engine::is_alive, after the probe
    std::function<void()> record_read;         // inside Storage::get, after the read
    std::optional<EngineStartTimings> report;  // what start() reports through EngineLaunch::timings

    void run(std::function<void()> Hooks::*slot) {
        std::function<void()> hook;
        {
            std::lock_guard lock(mutex);
            hook.swap(this->*slot);
        }
        if (hook) hook();
    }
};

/// MockEngine, with Hooks::alive_probed and Hooks::report.
class HookedEngine {
public:
    HookedEngine(MockEngine inner, std::shared_ptr<Hooks> hooks) : inner_(std::move(inner)), hooks_(std::move(hooks)) {}
    [[nodiscard]] std::string_view kind() const noexcept { return inner_.kind(); }
    [[nodiscard]] RootfsKind rootfs_kind() const noexcept { return inner_.rootfs_kind(); }
    [[nodiscard]] BoxliteResult<void> available() const { return inner_.available(); }
    BoxliteResult<EngineHandle> start(const EngineLaunch& launch) {
        {
            std::lock_guard lock(hooks_->mutex);
            if (launch.timings != nullptr && hooks_->report) *launch.timings = *hooks_->report;
        }
        return inner_.start(launch);
    }
    BoxliteResult<void> stop(const EngineHandle& h, std::chrono::milliseconds timeout) {
        return inner_.stop(h, timeout);
    }
    BoxliteResult<void> kill(const EngineHandle& h) { return inner_.kill(h); }
    [[nodiscard]] bool is_alive(const EngineHandle& h) const {
        const bool alive = inner_.is_alive(h);
        hooks_->run(&Hooks::alive_probed);  // the answer is already given: whatever happens now is a race
        return alive;
    }
    BoxliteResult<EngineMetrics> metrics(const EngineHandle& h) { return inner_.metrics(h); }

private:
    MockEngine inner_;
    std::shared_ptr<Hooks> hooks_;
};
static_assert(Engine<HookedEngine>);

/// MemoryStorage, with Hooks::record_read.
class HookedStorage {
public:
    HookedStorage(MemoryStorage inner, std::shared_ptr<Hooks> hooks)
        : inner_(std::move(inner)), hooks_(std::move(hooks)) {}
    BoxliteResult<void> insert(const BoxConfig& c, const BoxState& s) { return inner_.insert(c, s); }
    BoxliteResult<BoxRecord> get(const BoxID& id) {
        auto record = inner_.get(id);
        hooks_->run(&Hooks::record_read);
        return record;
    }
    BoxliteResult<BoxRecord> lookup(std::string_view key) { return inner_.lookup(key); }
    BoxliteResult<std::vector<BoxRecord>> list() { return inner_.list(); }
    BoxliteResult<void> update_state(const BoxID& id, const BoxState& s) { return inner_.update_state(id, s); }
    BoxliteResult<bool> update_state_if(const BoxID& id, const BoxState& expected, const BoxState& s) {
        return inner_.update_state_if(id, expected, s);
    }
    BoxliteResult<void> remove(const BoxID& id, RemoveSync sync = RemoveSync::Durable) {
        return inner_.remove(id, sync);
    }

private:
    MemoryStorage inner_;
    std::shared_ptr<Hooks> hooks_;
};
static_assert(Storage<HookedStorage>);

using HookedRuntime = BasicRuntime<HookedEngine, PipeTransport, HookedStorage>;

class RuntimeTest : public ::testing::Test {
protected:
    RuntimeTest()
        : engine_(MockEngine::Options{RootfsKind::Directory, "pipe"}),
          runtime_(BoxliteOptions{home_.path() / "home", {}, EngineKind::Mock}, engine_, transport_, storage_,
                   settings()) {
        std::filesystem::create_directories(rootfs_dir());
    }

    RuntimeSettings settings() {
        RuntimeSettings s;
        s.host_cpus = 4;
        s.connect_timeout = std::chrono::milliseconds(2000);
        // Unit tests never reach a registry: image references go to the fake store above.
        s.image_provider.prepare =
            [images = images_, dir = rootfs_dir()](const RootfsSpec::Image& image, RootfsKind, const BoxliteOptions&,
                                                   const BoxID& box) -> BoxliteResult<PreparedRootfs> {
            std::lock_guard lock(images->mutex);
            if (image.reference.starts_with("missing")) {
                return fail(ErrorKind::Image, "image '{}' not found in the fake registry", image.reference);
            }
            // As the image store: the box's first call resolves (and here "builds") the image,
            // later calls use the pinned, cached one.
            bool first = true;
            for (const auto& call : images->prepared) first = first && call.first != box.str();
            images->prepared.emplace_back(box.str(), image.reference);
            ImageDefaults defaults;
            defaults.cmd = {"/bin/sh"};
            PreparedRootfs out{dir, defaults, "sha256:fake", {}, {}};
            if (first) {
                out.pull_time = std::chrono::milliseconds(3);
                out.build_time = std::chrono::milliseconds(2);
            }
            return out;
        };
        s.image_provider.release = [images = images_](const BoxID& box, const BoxliteOptions&) -> BoxliteResult<void> {
            std::lock_guard lock(images->mutex);
            images->released.push_back(box.str());
            return {};
        };
        return s;
    }

    std::filesystem::path rootfs_dir() const { return home_.path() / "rootfs"; }
    std::filesystem::path box_dir(const BoxID& id) const { return home_.path() / "home" / "boxes" / id.str(); }

    /// A runtime over the same MockEngine state and boxes, with hooks.
    HookedRuntime hooked_runtime() {
        return HookedRuntime(BoxliteOptions{home_.path() / "home", {}, EngineKind::Mock}, HookedEngine(engine_, hooks_),
                             transport_, HookedStorage(storage_, hooks_), settings());
    }

    BoxOptions image_options(bool auto_remove = false) const {
        BoxOptions o;
        o.rootfs = RootfsSpec::image("alpine:latest");
        o.auto_remove = auto_remove;
        return o;
    }

    BoxOptions path_options(bool auto_remove = false) const {
        BoxOptions o;
        o.rootfs = RootfsSpec::path(rootfs_dir());
        o.auto_remove = auto_remove;
        return o;
    }

    TempDir home_;
    std::shared_ptr<FakeImages> images_ = std::make_shared<FakeImages>();
    std::shared_ptr<Hooks> hooks_ = std::make_shared<Hooks>();
    MockEngine engine_;
    PipeTransport transport_;
    MemoryStorage storage_;
    TestRuntime runtime_;
};

// AnyEngine::deferred, as select_engine() makes the default engine: a maker that counts how
// often the default ("auto") is made, standing in for the kvm probe.
namespace deferred {
std::atomic<int> made_default{0};
MockEngine* mock = nullptr;
BoxliteResult<AnyEngine> maker(std::string_view kind) {
    if (kind == "auto") ++made_default;
    if (kind == "auto" || kind == "mock") return AnyEngine(*mock);
    return fail(ErrorKind::UnsupportedEngine, "no {} engine here", kind);
}
BoxliteResult<AnyEngine> refusing(std::string_view kind) {
    return fail(ErrorKind::UnsupportedEngine, "{}: no engine can run here (the probe failed)", kind);
}
}  // namespace deferred

TEST_F(RuntimeTest, TheDefaultEngineIsMadeOnlyWhenABoxNeedsIt) {
    deferred::mock = &engine_;
    deferred::made_default = 0;
    ASSERT_TRUE(runtime_.create(path_options(), "web"));  // a box of the mock engine
    using AnyRuntime = BasicRuntime<AnyEngine, PipeTransport, MemoryStorage>;
    AnyRuntime runtime(BoxliteOptions{home_.path() / "home", {}, EngineKind::Auto},
                       AnyEngine::deferred("auto", {"auto", "kvm", "qemu"}, &deferred::maker), transport_, storage_,
                       settings());
    EXPECT_TRUE(runtime.engine().may_be("kvm"));
    EXPECT_FALSE(runtime.engine().may_be("mock"));

    // Everything a box of another engine needs, and the default engine is never made.
    ASSERT_EQ(runtime.list_info()->size(), 1U);
    auto box = runtime.get("web");
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start()) << "start";
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
    ASSERT_TRUE(box->stop());
    ASSERT_TRUE(runtime.remove("web"));
    EXPECT_TRUE(runtime.list_info()->empty());
    EXPECT_EQ(deferred::made_default.load(), 0);

    // A box of the default engine makes it, once, and records what it turned out to be.
    auto fresh = runtime.create(path_options(), "new");
    ASSERT_TRUE(fresh) << fresh.error().to_string();
    EXPECT_EQ(fresh->info()->engine, "mock");
    ASSERT_TRUE(runtime.create(path_options(), "newer"));
    ASSERT_TRUE(fresh->start());
    EXPECT_EQ(deferred::made_default.load(), 1);
    EXPECT_EQ(runtime.engine().kind(), "mock");
    EXPECT_FALSE(runtime.engine().may_be("kvm"));
    EXPECT_TRUE(runtime.engine().may_be("mock"));
    ASSERT_TRUE(fresh->stop());
}

TEST_F(RuntimeTest, ADefaultEngineThatCannotBeMadeSaysWhyOnUse) {
    deferred::mock = &engine_;
    ASSERT_TRUE(runtime_.create(path_options(), "web"));
    using AnyRuntime = BasicRuntime<AnyEngine, PipeTransport, MemoryStorage>;
    AnyRuntime runtime(BoxliteOptions{home_.path() / "home", {}, EngineKind::Auto},
                       AnyEngine::deferred("auto", {"auto", "kvm", "qemu"}, &deferred::refusing), transport_, storage_,
                       settings());
    EXPECT_EQ(runtime.list_info()->size(), 1U);  // the runtime opens and lists
    auto available = runtime.engine().available();
    ASSERT_FALSE(available);
    EXPECT_EQ(available.error().kind(), ErrorKind::UnsupportedEngine);
    EXPECT_EQ(available.error().message(), "auto: no engine can run here (the probe failed)");
    EXPECT_EQ(runtime.engine().kind(), "auto");
    // A box made with it keeps "auto", and its start says why.
    auto box = runtime.create(path_options(), "new");
    ASSERT_TRUE(box) << box.error().to_string();
    EXPECT_EQ(box->info()->engine, "auto");
    auto started = box->start();
    ASSERT_FALSE(started);
    EXPECT_NE(started.error().message().find("the probe failed"), std::string::npos) << started.error().to_string();
}

TEST_F(RuntimeTest, CreateRecordsAConfiguredBoxAndRunsNothing) {
    auto box = runtime_.create(path_options(), "web");
    ASSERT_TRUE(box) << box.error().to_string();
    auto info = box->info();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->status, BoxStatus::Configured);
    EXPECT_EQ(info->name, "web");
    EXPECT_EQ(engine_.starts(), 0U);
    EXPECT_FALSE(std::filesystem::exists(home_.path() / "home" / "boxes" / box->id().str()));
}

TEST_F(RuntimeTest, RejectedCreateWritesNothing) {
    auto options = path_options();
    options.cpus = 9;
    auto box = runtime_.create(options, "big");
    ASSERT_FALSE(box);
    EXPECT_EQ(box.error().to_string(), "configuration error: CPU count must be between 1 and 4");
    EXPECT_TRUE(storage_.list()->empty());
    EXPECT_FALSE(std::filesystem::exists(home_.path() / "home"));
}

TEST_F(RuntimeTest, NamesAreUniqueAndValidated) {
    ASSERT_TRUE(runtime_.create(path_options(), "web"));
    auto again = runtime_.create(path_options(), "web");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::AlreadyExists);
    auto bad = runtime_.create(path_options(), "-bad name");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().kind(), ErrorKind::InvalidArgument);
}

TEST_F(RuntimeTest, GetFindsByNameIdAndUniquePrefix) {
    auto box = runtime_.create(path_options(), "web");
    ASSERT_TRUE(box);
    const auto id = box->id().str();
    EXPECT_EQ(runtime_.get("web")->id(), box->id());
    EXPECT_EQ(runtime_.get(id)->id(), box->id());
    EXPECT_EQ(runtime_.get(id.substr(0, 20))->id(), box->id());
    auto missing = runtime_.get("nope");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().to_string(), "box not found: nope");
    EXPECT_EQ(runtime_.exists("web").value(), true);
    EXPECT_EQ(runtime_.exists("nope").value(), false);
}

TEST_F(RuntimeTest, StartStopFollowTheStateMachine) {
    auto box = runtime_.create(path_options(), "web");
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
    EXPECT_TRUE(box->info()->pid.has_value());
    ASSERT_TRUE(box->start());  // already running: left as it is
    EXPECT_EQ(engine_.starts(), 1U);
    ASSERT_EQ(engine_.launches().size(), 1U);
    EXPECT_EQ(engine_.launches()[0].rootfs, rootfs_dir());

    auto removed = runtime_.remove("web");
    ASSERT_FALSE(removed);
    EXPECT_EQ(removed.error().kind(), ErrorKind::InvalidState);

    ASSERT_TRUE(box->stop());
    EXPECT_EQ(box->info()->status, BoxStatus::Stopped);
    EXPECT_TRUE(box->stop());   // idempotent
    ASSERT_TRUE(box->start());  // restart
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
    ASSERT_TRUE(runtime_.remove("web", true));
    EXPECT_EQ(engine_.running(), 0U);
    EXPECT_EQ(box->info().error().kind(), ErrorKind::NotFound);
}

// A disk-booting engine (the VMs) given a rootfs directory boots the box's own ext4 built from
// it at the first start, and keeps that disk across restarts (its overlay sits on it).
TEST_F(RuntimeTest, ARootfsDirectoryBecomesTheBoxsOwnExt4OnADiskEngine) {
    MockEngine disk_engine(MockEngine::Options{RootfsKind::Ext4Disk, "pipe"});
    MemoryStorage storage;
    TestRuntime runtime(BoxliteOptions{home_.path() / "disk-home", {}, EngineKind::Mock}, disk_engine, transport_,
                        storage, settings());
    test::write_file(rootfs_dir() / "hello.txt", "from the directory\n");
    auto box = runtime.create(path_options(), "disk");
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start());
    ASSERT_EQ(disk_engine.launches().size(), 1u);
    const auto disk = home_.path() / "disk-home" / "boxes" / box->id().str() / "rootfs.ext4";
    EXPECT_EQ(disk_engine.launches()[0].rootfs, disk);
    ASSERT_TRUE(std::filesystem::is_regular_file(disk));
    EXPECT_EQ(test::shell("debugfs -R 'cat /hello.txt' " + disk.string() + " 2>/dev/null"), "from the directory\n");
    const auto built = std::filesystem::last_write_time(disk);
    test::write_file(rootfs_dir() / "later.txt", "x");  // a later change does not rebuild the box's disk
    ASSERT_TRUE(box->stop());
    ASSERT_TRUE(box->start());
    ASSERT_EQ(disk_engine.launches().size(), 2u);
    EXPECT_EQ(disk_engine.launches()[1].rootfs, disk);
    EXPECT_EQ(std::filesystem::last_write_time(disk), built);
    ASSERT_TRUE(runtime.remove("disk", true));
    EXPECT_FALSE(std::filesystem::exists(disk));
}

// A rootfs directory's ext4 is built once per contents (<home>/images/directory-disks) and each
// box's rootfs.ext4 is a hard link to that base: a box of the unchanged directory reuses it; after
// a file in the directory changes, a box does not. An entry changed within the last 2 s is "racily
// clean" (git's rule) and never trusted, so the test lets 2 s pass before it expects a cache.
TEST_F(RuntimeTest, ARootfsDirectorysExt4IsBuiltOncePerContentsAndNotReusedAfterAChange) {
    MockEngine disk_engine(MockEngine::Options{RootfsKind::Ext4Disk, "pipe"});
    MemoryStorage storage;
    const auto home = home_.path() / "cache-home";
    TestRuntime runtime(BoxliteOptions{home, {}, EngineKind::Mock}, disk_engine, transport_, storage, settings());
    test::write_file(rootfs_dir() / "hello.txt", "first\n");
    const auto racy_window = std::chrono::milliseconds(2200);
    std::this_thread::sleep_for(racy_window);
    auto start_box = [&](const std::string& name) -> std::filesystem::path {
        auto box = runtime.create(path_options(), name);
        EXPECT_TRUE(box) << box.error().to_string();
        if (!box) return {};
        auto started = box->start();
        EXPECT_TRUE(started) << started.error().to_string();
        return home / "boxes" / box->id().str() / "rootfs.ext4";
    };
    auto inode = [](const std::filesystem::path& path) {
        struct stat st {};
        EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
        return std::pair{st.st_ino, st.st_nlink};
    };
    auto hello = [](const std::filesystem::path& disk) {
        return test::shell("debugfs -R 'cat /hello.txt' " + disk.string() + " 2>/dev/null");
    };
    auto cached_bases = [&] {
        std::vector<std::filesystem::path> bases;
        for (const auto& entry : std::filesystem::directory_iterator(home / "images" / "directory-disks"))
            if (entry.path().extension() == ".ext4") bases.push_back(entry.path());
        return bases;
    };

    const auto a = start_box("a");
    const auto b = start_box("b");
    ASSERT_EQ(cached_bases().size(), 1u);
    EXPECT_EQ(inode(a).first, inode(cached_bases()[0]).first);
    EXPECT_EQ(inode(b).first, inode(a).first);  // the second box reused the base
    EXPECT_EQ(inode(a).second, 3u);             // the cache's link and the two boxes'
    EXPECT_EQ(hello(b), "first\n");

    test::write_file(rootfs_dir() / "hello.txt", "second\n");
    const auto c = start_box("c");  // changed just now: racily clean, built for this box alone
    EXPECT_NE(inode(c).first, inode(a).first);
    EXPECT_EQ(inode(c).second, 1u);
    EXPECT_EQ(hello(c), "second\n");
    EXPECT_EQ(cached_bases().size(), 1u);

    std::this_thread::sleep_for(racy_window);
    const auto d = start_box("d");  // the changed directory's own base, never the old one
    EXPECT_NE(inode(d).first, inode(a).first);
    EXPECT_EQ(inode(d).second, 2u);
    EXPECT_EQ(hello(d), "second\n");
    EXPECT_EQ(cached_bases().size(), 2u);
    EXPECT_EQ(hello(a), "first\n");  // the first boxes keep theirs

    for (const char* name : {"a", "b", "c"}) ASSERT_TRUE(runtime.remove(name, true));
    // The image store's gc (`images prune`) takes the bases no box links to, and only those.
    auto store = image::ImageStore::open({home, {}, {}});
    ASSERT_TRUE(store) << store.error().to_string();
    auto report = store->gc();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_EQ(report->disk_images_removed, 1u);
    ASSERT_EQ(cached_bases().size(), 1u);
    EXPECT_EQ(inode(cached_bases()[0]).first, inode(d).first);  // d's, still linked
    ASSERT_TRUE(runtime.remove("d", true));
    report = store->gc();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_EQ(report->disk_images_removed, 1u);
    EXPECT_TRUE(cached_bases().empty());
}

TEST_F(RuntimeTest, AutoRemoveRemovesOnStop) {
    auto box = runtime_.create(path_options(true));
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    ASSERT_TRUE(box->stop());
    EXPECT_FALSE(runtime_.exists(box->id().str()).value());
}

TEST_F(RuntimeTest, ACrashedEngineIsNeverRunning) {
    auto box = runtime_.create(path_options());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    engine_.crash(*storage_.get(box->id())->state.handle);
    EXPECT_EQ(box->info()->status, BoxStatus::Stopped);
}

TEST_F(RuntimeTest, CreateFetchesTheImageAndStartsUseTheSamePin) {
    BoxOptions o;
    o.rootfs = RootfsSpec::image("alpine:latest");
    o.auto_remove = false;
    auto box = runtime_.create(o);
    ASSERT_TRUE(box) << box.error().to_string();
    const auto id = box->id().str();
    {
        std::lock_guard lock(images_->mutex);
        ASSERT_EQ(images_->prepared.size(), 1u);  // at create, before any start
        EXPECT_EQ(images_->prepared[0], std::make_pair(id, std::string("alpine:latest")));
    }
    EXPECT_TRUE(box->metrics()->stage_image_prepare_ms.has_value());
    EXPECT_EQ(box->info()->status, BoxStatus::Configured);
    EXPECT_TRUE(engine_.launches().empty());

    ASSERT_TRUE(box->start());
    ASSERT_EQ(engine_.launches().size(), 1u);
    EXPECT_EQ(engine_.launches()[0].rootfs, rootfs_dir());
    EXPECT_EQ(engine_.launches()[0].init_command, std::vector<std::string>{"/bin/sh"});
    ASSERT_TRUE(box->stop());
    ASSERT_TRUE(box->start());
    {
        std::lock_guard lock(images_->mutex);
        ASSERT_EQ(images_->prepared.size(), 3u);  // every start asks for the box's own pin
        for (const auto& call : images_->prepared) EXPECT_EQ(call.first, id);
        EXPECT_TRUE(images_->released.empty());
    }
    ASSERT_TRUE(runtime_.remove(id, true));
    std::lock_guard lock(images_->mutex);
    EXPECT_EQ(images_->released, std::vector<std::string>{id});
}

TEST_F(RuntimeTest, AnImageThatCannotBeFetchedFailsCreateAndLeavesNoTrace) {
    BoxOptions o;
    o.rootfs = RootfsSpec::image("missing/app:1");
    auto box = runtime_.create(o, "app");
    ASSERT_FALSE(box);
    EXPECT_EQ(box.error().kind(), ErrorKind::Image);
    EXPECT_NE(box.error().message().find("missing/app:1"), std::string::npos) << box.error().message();
    EXPECT_TRUE(runtime_.list_info()->empty());
    EXPECT_FALSE(runtime_.get("app"));
    EXPECT_EQ(runtime_.metrics()->boxes_failed_total, 1U);
    EXPECT_EQ(runtime_.metrics()->boxes_created_total, 0U);
    EXPECT_TRUE(engine_.launches().empty());
}

TEST_F(RuntimeTest, AutoRemoveReleasesTheImage) {
    BoxOptions o;
    o.rootfs = RootfsSpec::image("busybox");
    o.auto_remove = true;
    auto box = runtime_.create(o);
    ASSERT_TRUE(box);
    const auto id = box->id().str();
    ASSERT_TRUE(box->start());
    ASSERT_TRUE(box->stop());
    EXPECT_FALSE(runtime_.get(id));
    std::lock_guard lock(images_->mutex);
    EXPECT_EQ(images_->released, std::vector<std::string>{id});
}

TEST_F(RuntimeTest, ARuntimeWithoutAnImageProviderExplainsImageBoxes) {
    RuntimeSettings s = settings();
    s.image_provider = {};
    TestRuntime bare(BoxliteOptions{home_.path() / "bare", {}, EngineKind::Mock}, engine_, transport_, storage_, s);
    BoxOptions o;
    o.rootfs = RootfsSpec::image("alpine:latest");
    auto box = bare.create(o);
    ASSERT_FALSE(box);
    EXPECT_EQ(box.error().kind(), ErrorKind::Unsupported);
    EXPECT_NE(box.error().message().find("no image provider"), std::string::npos) << box.error().message();
}

TEST_F(RuntimeTest, ConnectAgentStartsTheBoxAndReachesTheAgent) {
    auto box = runtime_.create(path_options());
    ASSERT_TRUE(box);
    const auto name = box->id().str();
    transport_.listen(name);
    std::thread agent([&] {
        auto peer = transport_.accept(name, std::chrono::milliseconds(5000));
        ASSERT_TRUE(peer);
        std::array<std::byte, 4> buffer{};
        auto n = peer->read_some(buffer);
        ASSERT_TRUE(n);
        ASSERT_TRUE(peer->write_all(std::span<const std::byte>(buffer.data(), *n)));
    });
    auto stream = box->connect_agent();
    ASSERT_TRUE(stream) << stream.error().to_string();
    const std::array<std::byte, 4> ping{std::byte{'p'}, std::byte{'i'}, std::byte{'n'}, std::byte{'g'}};
    ASSERT_TRUE(stream->write_all(ping));
    std::array<std::byte, 4> echo{};
    std::size_t got = 0;
    while (got < echo.size()) {
        auto n = stream->read_some(std::span<std::byte>(echo).subspan(got));
        ASSERT_TRUE(n);
        ASSERT_GT(*n, 0U);
        got += *n;
    }
    EXPECT_EQ(echo, ping);
    agent.join();
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
}

// A look (info, get, list) that found the engine dead used to write "Stopped" unconditionally:
// when a start() ran between its probe and its write, storage lost a running box.
TEST_F(RuntimeTest, ALookThatFoundTheEngineDeadNeverUndoesAConcurrentStart) {
    auto runtime = hooked_runtime();
    auto box = runtime.create(path_options());
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start());
    auto other = runtime.get(box->id().str());  // another thread's handle
    ASSERT_TRUE(other);
    const auto stale = *storage_.get(box->id())->state.handle;
    engine_.crash(stale);  // storage still says Running, with a dead handle
    bool raced = false;
    hooks_->alive_probed = [&] {
        // Between the look's probe ("dead") and its write, the other thread restarts the box.
        raced = true;
        ASSERT_TRUE(other->start());
    };
    auto info = box->info();
    ASSERT_TRUE(raced);
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->status, BoxStatus::Running);
    const auto stored = storage_.get(box->id());
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->state.status, BoxStatus::Running);
    ASSERT_TRUE(stored->state.handle);
    EXPECT_NE(*stored->state.handle, stale);
    EXPECT_TRUE(engine_.is_alive(*stored->state.handle));
    EXPECT_EQ(engine_.starts(), 2U);
    ASSERT_TRUE(runtime.remove(box->id().str(), true));
    EXPECT_EQ(engine_.running(), 0U);  // storage knew the running engine, so remove could kill it
}

TEST_F(RuntimeTest, LifecycleCallsOnARemovedBoxLeaveNoFolder) {
    auto box = runtime_.create(path_options());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    ASSERT_TRUE(box->stop());
    auto stale = runtime_.get(box->id().str());
    ASSERT_TRUE(stale);
    ASSERT_TRUE(runtime_.remove(box->id().str()));
    EXPECT_FALSE(std::filesystem::exists(box_dir(box->id())));
    EXPECT_EQ(stale->start().error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(stale->stop().error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(stale->connect_agent().error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(runtime_.remove(box->id().str()).error().kind(), ErrorKind::NotFound);
    EXPECT_FALSE(std::filesystem::exists(box_dir(box->id())));
}

// Another process removes the box (record and folder) just after this one checked that it
// exists and before it made the folder and took the lock: the folder it made is taken back.
TEST_F(RuntimeTest, TheLoserOfARemoveRaceLeavesNoFolder) {
    auto runtime = hooked_runtime();
    auto box = runtime.create(path_options());
    ASSERT_TRUE(box);
    const auto id = box->id();
    bool removed_elsewhere = false;
    hooks_->record_read = [&] {
        removed_elsewhere = true;
        ASSERT_TRUE(storage_.remove(id));
        std::error_code ec;
        std::filesystem::remove_all(box_dir(id), ec);
    };
    auto started = box->start();
    ASSERT_TRUE(removed_elsewhere);
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().kind(), ErrorKind::NotFound) << started.error().to_string();
    EXPECT_FALSE(std::filesystem::exists(box_dir(id)));
    EXPECT_EQ(engine_.starts(), 0U);
}

// auto_remove means "remove when the box stops": also when it stopped by itself (its engine
// died, e.g. the shim of a detach=false box whose creator crashed).
TEST_F(RuntimeTest, ADeadAutoRemoveBoxIsRemovedByTheNextLook) {
    auto crashed = [&](std::optional<std::string> name) {
        auto box = runtime_.create(image_options(/*auto_remove=*/true), std::move(name));
        EXPECT_TRUE(box) << box.error().to_string();
        EXPECT_TRUE(box->start());
        engine_.crash(*storage_.get(box->id())->state.handle);
        return *box;
    };
    auto gone_for_good = [&](const BoxID& id) {
        EXPECT_FALSE(storage_.get(id));
        EXPECT_FALSE(std::filesystem::exists(box_dir(id)));
        std::lock_guard lock(images_->mutex);
        EXPECT_NE(std::find(images_->released.begin(), images_->released.end(), id.str()), images_->released.end());
    };

    auto by_info = crashed(std::nullopt);
    auto info = by_info.info();
    ASSERT_FALSE(info);
    EXPECT_EQ(info.error().kind(), ErrorKind::NotFound);
    EXPECT_NE(info.error().message().find("auto_remove"), std::string::npos) << info.error().message();
    gone_for_good(by_info.id());

    auto by_list = crashed(std::nullopt);
    auto listed = runtime_.list_info();
    ASSERT_TRUE(listed);
    EXPECT_TRUE(listed->empty());
    gone_for_good(by_list.id());

    auto by_start = crashed(std::nullopt);
    EXPECT_EQ(by_start.start().error().kind(), ErrorKind::NotFound);
    gone_for_good(by_start.id());
    EXPECT_EQ(engine_.starts(), 3U);  // the dead box was not started again

    // Its name is free again: the look behind the name check removed it.
    auto named = crashed("web");
    auto again = runtime_.create(path_options(), "web");
    ASSERT_TRUE(again) << again.error().to_string();
    gone_for_good(named.id());

    // While someone holds the box's lock (here: "another process"), a look reports it Stopped
    // and leaves it to them.
    auto held = crashed(std::nullopt);
    const auto lock_path = box_dir(held.id()) / ".lock";
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX), 0);
    auto while_held = held.info();
    ASSERT_TRUE(while_held) << while_held.error().to_string();
    EXPECT_EQ(while_held->status, BoxStatus::Stopped);
    ::close(fd);
    EXPECT_EQ(held.info().error().kind(), ErrorKind::NotFound);
    gone_for_good(held.id());
    EXPECT_EQ(engine_.running(), 0U);
}

TEST_F(RuntimeTest, ACrashedBoxWithoutAutoRemoveStaysStoppedAndRestarts) {
    auto box = runtime_.create(path_options(/*auto_remove=*/false));
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    engine_.crash(*storage_.get(box->id())->state.handle);
    EXPECT_EQ(runtime_.list_info()->size(), 1U);
    EXPECT_EQ(box->info()->status, BoxStatus::Stopped);
    ASSERT_TRUE(box->start());
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
}

// A Stopping box found under its lock was left by a stopper that died: recovery_test.cpp.
TEST_F(RuntimeTest, StartAndStopRefuseUnknownBoxes) {
    auto box = runtime_.create(path_options());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    const auto id = box->id();
    auto state = storage_.get(id)->state;  // Running, live handle
    BoxliteResult<void> start, stop;
    state.status = BoxStatus::Unknown;
    ASSERT_TRUE(storage_.update_state(id, state));
    start = box->start();
    ASSERT_FALSE(start);
    EXPECT_EQ(start.error().to_string(),
              fmt::format("invalid state: cannot start box {}: it is unknown (allowed from configured or stopped)",
                          id));
    stop = box->stop();
    ASSERT_FALSE(stop);
    EXPECT_EQ(stop.error().to_string(),
              fmt::format("invalid state: cannot stop box {} in unknown state (remove it with force=true)", id));
    EXPECT_EQ(engine_.starts(), 1U);
    ASSERT_TRUE(runtime_.remove(id.str(), true));
}

// Every stage is timed where it happens: the pull (and first build) at create, the box folder,
// launch description and engine start at start. Stages nobody measured stay empty.
TEST_F(RuntimeTest, StageTimingsAreMeasuredWhereTheyHappen) {
    auto box = runtime_.create(image_options());
    ASSERT_TRUE(box) << box.error().to_string();
    auto m = box->metrics();
    ASSERT_TRUE(m);
    // The fake store reports 3 ms of pull and 2 ms of build for a box's first call.
    EXPECT_EQ(m->stage_image_prepare_ms, 3U);
    EXPECT_EQ(m->stage_guest_rootfs_ms, 2U);
    EXPECT_FALSE(m->stage_filesystem_setup_ms);
    EXPECT_FALSE(m->stage_box_config_ms);
    EXPECT_FALSE(m->stage_box_spawn_ms);
    EXPECT_FALSE(m->total_create_duration_ms);
    EXPECT_FALSE(m->guest_boot_duration_ms);
    EXPECT_FALSE(m->stage_container_init_ms);

    for (int start = 0; start < 2; ++start) {
        ASSERT_TRUE(box->start());
        m = box->metrics();
        ASSERT_TRUE(m);
        EXPECT_TRUE(m->stage_filesystem_setup_ms);
        EXPECT_TRUE(m->stage_box_config_ms);
        EXPECT_TRUE(m->stage_box_spawn_ms);
        EXPECT_TRUE(m->total_create_duration_ms);
        // MockEngine measures nothing inside its start.
        EXPECT_FALSE(m->guest_boot_duration_ms);
        EXPECT_FALSE(m->stage_container_init_ms);
        // Starts use the pinned, cached image: create's pull and build stand.
        EXPECT_EQ(m->stage_image_prepare_ms, 3U);
        EXPECT_EQ(m->stage_guest_rootfs_ms, 2U);
        ASSERT_TRUE(box->stop());
    }

    // They are stored with the box's state: another runtime over the same boxes (another
    // process: `boxlite inspect`, `serve`) reports the same figures, also once stopped.
    auto other = hooked_runtime();
    auto seen = other.get(box->id().str());
    ASSERT_TRUE(seen) << seen.error().to_string();
    auto seen_metrics = seen->metrics();
    ASSERT_TRUE(seen_metrics);
    EXPECT_EQ(seen_metrics->stage_image_prepare_ms, 3U);
    EXPECT_EQ(seen_metrics->stage_box_spawn_ms, m->stage_box_spawn_ms);
    EXPECT_EQ(seen_metrics->total_create_duration_ms, m->total_create_duration_ms);
    auto info = seen->info();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->stages.total_create_ms, m->total_create_duration_ms);

    // A rootfs directory is neither pulled nor built.
    auto dir_box = runtime_.create(path_options());
    ASSERT_TRUE(dir_box);
    ASSERT_TRUE(dir_box->start());
    m = dir_box->metrics();
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->stage_image_prepare_ms);
    EXPECT_FALSE(m->stage_guest_rootfs_ms);
    EXPECT_TRUE(m->stage_box_spawn_ms);
}

TEST_F(RuntimeTest, EngineReportedTimingsFillGuestBootAndContainerInit) {
    hooks_->report = EngineStartTimings{std::chrono::milliseconds(40), std::chrono::milliseconds(7),
                                        std::chrono::milliseconds(3), std::chrono::milliseconds(2)};
    auto runtime = hooked_runtime();
    auto box = runtime.create(path_options());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    auto m = box->metrics();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->guest_boot_duration_ms, 40U);
    EXPECT_EQ(m->stage_container_init_ms, 7U);
    EXPECT_EQ(m->stage_guest_assets_ms, 3U);
    EXPECT_EQ(m->stage_box_disk_ms, 2U);
}

TEST_F(RuntimeTest, ATakenNameIsRefusedBeforeTheImageIsPulled) {
    ASSERT_TRUE(runtime_.create(image_options(), "web"));
    auto again = runtime_.create(image_options(), "web");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::AlreadyExists);
    EXPECT_NE(again.error().message().find("'web'"), std::string::npos) << again.error().message();
    std::lock_guard lock(images_->mutex);
    EXPECT_EQ(images_->prepared.size(), 1U);  // nothing pulled or pinned for the refused box
    EXPECT_TRUE(images_->released.empty());
}

/// Every path under `root` with its mode and, for files, its content (-shm only by name: WAL
/// readers write their read marks there).
std::map<std::string, std::string> snapshot(const std::filesystem::path& root) {
    std::map<std::string, std::string> out;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
        const auto rel = entry.path().lexically_relative(root).string();
        auto text = fmt::format("{:o}", static_cast<unsigned>(entry.status().permissions()));
        if (entry.is_regular_file() && !rel.ends_with("-shm")) {
            std::ifstream in(entry.path(), std::ios::binary);
            text += std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        }
        out[rel] = std::move(text);
    }
    return out;
}

TEST_F(RuntimeTest, RejectedCreatesLeaveASqliteHomeUntouched) {
    const auto home = home_.path() / "sqlite-home";
    auto storage = SqliteStorage::open(home);
    ASSERT_TRUE(storage) << storage.error().to_string();
    BasicRuntime<MockEngine, PipeTransport, SqliteStorage> runtime(BoxliteOptions{home, {}, EngineKind::Mock}, engine_,
                                                                   transport_, *storage, settings());
    ASSERT_TRUE(runtime.create(path_options(), "taken"));
    const auto before = snapshot(home);
    ASSERT_FALSE(before.empty());

    std::vector<std::pair<BoxOptions, std::optional<std::string>>> rejected;
    auto add = [&](auto change, std::optional<std::string> name = std::nullopt) {
        auto o = path_options();
        change(o);
        rejected.emplace_back(std::move(o), std::move(name));
    };
    add([](BoxOptions& o) { o.cpus = 9; });
    add([](BoxOptions& o) { o.memory_mib = 64; });
    add([](BoxOptions& o) { o.security.chroot_base = "relative/jail"; });
    add([](BoxOptions& o) { o.security.env_allowlist.push_back("NOT VALID"); });
    add([&](BoxOptions& o) { o.volumes = {{(home_.path() / "missing").string(), "/data", false}}; });
    // Every bad volume spec of issue 12, anonymous ones included: nothing of them is written.
    add([](BoxOptions& o) { o.volumes = {{"relative/dir", "/data", false}}; });
    add([&](BoxOptions& o) { o.volumes = {{home_.path().string(), "data", false}}; });
    add([&](BoxOptions& o) { o.volumes = {{home_.path().string(), "/data/../etc", false}}; });
    add([&](BoxOptions& o) { o.volumes = {{home_.path().string(), "/proc/x", true}}; });
    add([](BoxOptions& o) { o.volumes = {{"", "/sys", false}}; });
    add([](BoxOptions& o) { o.volumes = {{"", "/dev", false}}; });
    add([&](BoxOptions& o) { o.volumes = {{home_.path().string(), "/data", false}, {"", "/data/", true}}; });
    add([](BoxOptions& o) { o.secrets = {Secret{"TOKEN", "s3cret", {}, ""}}; });
    add([](BoxOptions&) {}, "-bad name");
    add([](BoxOptions&) {}, "taken");
    add([](BoxOptions& o) { o.rootfs = RootfsSpec::image("missing/app:1"); });
    for (const auto& [options, name] : rejected) {
        auto box = runtime.create(options, name);
        EXPECT_FALSE(box) << fmt::format("{}", options);
        if (!box && !options.volumes.empty()) {
            EXPECT_EQ(box.error().kind(), ErrorKind::Config) << box.error().to_string();
        }
    }
    EXPECT_EQ(snapshot(home), before);
    EXPECT_EQ(runtime.list_info()->size(), 1U);
}

}  // namespace
}  // namespace boxlite
