// The runtime's state machine, lookups and lifecycle rules over MockEngine + MemoryStorage
// (compile-time policies), and the agent seam over PipeTransport.
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/runtime.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/transport/pipe_transport.hpp>

#include <gtest/gtest.h>

#include "test_support.hpp"

#include <array>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace boxlite {
namespace {

using TestRuntime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;

using testing::TempDir;

/// A fake image store: every reference is "pulled" to the fixture's rootfs directory except
/// those starting with "missing", which fail as a registry's 404 would. It records its calls.
struct FakeImages {
    std::mutex mutex;
    std::vector<std::pair<std::string, std::string>> prepared;  // (box id, reference)
    std::vector<std::string> released;                          // box ids
};

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
        s.image_provider.prepare = [images = images_, dir = rootfs_dir()](const RootfsSpec::Image& image, RootfsKind,
                                                                         const BoxliteOptions&, const BoxID& box)
            -> BoxliteResult<PreparedRootfs> {
            std::lock_guard lock(images->mutex);
            if (image.reference.starts_with("missing")) {
                return fail(ErrorKind::Image, "image '{}' not found in the fake registry", image.reference);
            }
            images->prepared.emplace_back(box.str(), image.reference);
            ImageDefaults defaults;
            defaults.cmd = {"/bin/sh"};
            return PreparedRootfs{dir, defaults, "sha256:fake"};
        };
        s.image_provider.release = [images = images_](const BoxID& box, const BoxliteOptions&) -> BoxliteResult<void> {
            std::lock_guard lock(images->mutex);
            images->released.push_back(box.str());
            return {};
        };
        return s;
    }

    std::filesystem::path rootfs_dir() const { return home_.path() / "rootfs"; }

    BoxOptions path_options(bool auto_remove = false) const {
        BoxOptions o;
        o.rootfs = RootfsSpec::path(rootfs_dir());
        o.auto_remove = auto_remove;
        return o;
    }

    TempDir home_;
    std::shared_ptr<FakeImages> images_ = std::make_shared<FakeImages>();
    MockEngine engine_;
    PipeTransport transport_;
    MemoryStorage storage_;
    TestRuntime runtime_;
};

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
    EXPECT_TRUE(box->stop());  // idempotent
    ASSERT_TRUE(box->start());  // restart
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
    ASSERT_TRUE(runtime_.remove("web", true));
    EXPECT_EQ(engine_.running(), 0U);
    EXPECT_EQ(box->info().error().kind(), ErrorKind::NotFound);
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

}  // namespace
}  // namespace boxlite
