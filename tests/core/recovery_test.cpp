// State that survives kill -9, and names that cannot pass for ids (issue 17), over MockEngine +
// MemoryStorage: a process killed half-way is simulated by writing the state it leaves (Stopping
// or Removing with a live engine) straight into storage, then letting the next caller find it.
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/runtime.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/storage/sqlite_storage.hpp>
#include <boxlite/transport/pipe_transport.hpp>

#include <gtest/gtest.h>

#include <support/support.hpp>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace boxlite::recovery_test {
namespace {

using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
using test::TempDir;

BoxConfig stored_config(std::string_view id, std::optional<std::string> name = std::nullopt) {
    BoxConfig c;
    c.id = *BoxID::parse(id);
    c.name = std::move(name);
    c.engine = "mock";
    return c;
}

template <class S>
struct Home;
template <>
struct Home<MemoryStorage> {
    MemoryStorage make() { return MemoryStorage{}; }
};
template <>
struct Home<SqliteStorage> {
    TempDir dir;
    SqliteStorage make() { return *SqliteStorage::open(dir.path() / "home"); }
};

template <class S>
class LookupOrder : public ::testing::Test {
protected:
    Home<S> home_;
    S storage_ = home_.make();
};
using Storages = ::testing::Types<MemoryStorage, SqliteStorage>;
TYPED_TEST_SUITE(LookupOrder, Storages);

// Exact id, then exact name, then a unique id prefix; storage itself does not refuse impostor
// names (create does), so the order alone must already put ids first.
TYPED_TEST(LookupOrder, ExactIdThenExactNameThenUniquePrefix) {
    auto& s = this->storage_;
    const std::string a = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    ASSERT_TRUE(s.insert(stored_config(a), BoxState{}));
    // Impostors written past create's checks: one named with a's full id, one with its short id.
    ASSERT_TRUE(s.insert(stored_config("01BX5ZZKBKACTAV9WEVGEMMVRZ", a), BoxState{}));
    ASSERT_TRUE(s.insert(stored_config("01CX5ZZKBKACTAV9WEVGEMMVRZ", a.substr(0, 12)), BoxState{}));
    EXPECT_EQ(s.lookup(a)->config.id.str(), a);                                           // the id wins over the name
    EXPECT_EQ(s.lookup("01arz3ndektsv4rrffq69g5fav")->config.id.str(), a);                // in any case
    EXPECT_EQ(s.lookup(a.substr(0, 12))->config.id.str(), "01CX5ZZKBKACTAV9WEVGEMMVRZ");  // a name beats a prefix
    EXPECT_EQ(s.lookup("01ARZ3")->config.id.str(), a);                                    // the unique prefix
    // An ambiguous prefix names its matches.
    ASSERT_TRUE(s.insert(stored_config("01ARZ3NDEKTSV4RRFFQ69G5FB0"), BoxState{}));
    auto ambiguous = s.lookup("01ARZ3");
    ASSERT_FALSE(ambiguous);
    EXPECT_EQ(ambiguous.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(ambiguous.error().message().find("01ARZ3NDEKTS"), std::string::npos) << ambiguous.error().message();
    EXPECT_NE(ambiguous.error().message().find("2 boxes"), std::string::npos) << ambiguous.error().message();
}

class Recovery : public ::testing::Test {
protected:
    Recovery() : engine_(MockEngine::Options{RootfsKind::Directory, "pipe"}) {
        std::filesystem::create_directories(rootfs());
    }

    RuntimeSettings settings() {
        RuntimeSettings s;
        s.host_cpus = 4;
        s.image_provider.prepare = [dir = rootfs()](const RootfsSpec::Image&, RootfsKind, const BoxliteOptions&,
                                                    const BoxID&) -> BoxliteResult<PreparedRootfs> {
            return PreparedRootfs{dir, {}, "sha256:fake", {}, {}};
        };
        s.image_provider.release = [released = released_](const BoxID& box,
                                                          const BoxliteOptions&) -> BoxliteResult<void> {
            std::lock_guard lock(released->mutex);
            if (released->fail_next) {
                released->fail_next = false;
                return fail(ErrorKind::Storage, "images.db is locked");
            }
            released->ids.push_back(box.str());
            return {};
        };
        return s;
    }

    /// Another process on the same home: same boxes, same engine state.
    std::unique_ptr<Runtime> open_runtime() {
        return std::make_unique<Runtime>(BoxliteOptions{home_.path() / "home", {}, EngineKind::Mock}, engine_,
                                         transport_, storage_, settings());
    }

    std::filesystem::path rootfs() const { return home_.path() / "rootfs"; }
    std::filesystem::path box_dir(const BoxID& id) const { return home_.path() / "home" / "boxes" / id.str(); }

    BoxOptions image_box() const {
        BoxOptions o;
        o.rootfs = RootfsSpec::image("alpine:latest");
        o.auto_remove = false;
        return o;
    }

    /// The state a process killed at that point leaves: `status` with the box's engine still up.
    void leave_in(const BoxID& id, BoxStatus status) {
        auto state = storage_.get(id)->state;
        state.status = status;
        ASSERT_TRUE(storage_.update_state(id, state));
    }

    bool released(const BoxID& id) {
        std::lock_guard lock(released_->mutex);
        return std::find(released_->ids.begin(), released_->ids.end(), id.str()) != released_->ids.end();
    }

    struct Released {
        std::mutex mutex;
        std::vector<std::string> ids;
        bool fail_next = false;
    };
    TempDir home_;
    std::shared_ptr<Released> released_ = std::make_shared<Released>();
    MockEngine engine_;
    PipeTransport transport_;
    MemoryStorage storage_;
    std::unique_ptr<Runtime> runtime_ = open_runtime();
};

TEST_F(Recovery, StopFinishesTheStopOfADeadStopper) {
    auto box = runtime_->create(image_box(), "fz");
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start());
    leave_in(box->id(), BoxStatus::Stopping);  // the stopper was killed before its engine stopped
    ASSERT_EQ(engine_.running(), 1U);
    auto other = open_runtime();
    auto found = other->get("fz");
    ASSERT_TRUE(found) << found.error().to_string();
    auto stopped = found->stop();
    ASSERT_TRUE(stopped) << stopped.error().to_string();
    EXPECT_EQ(storage_.get(box->id())->state.status, BoxStatus::Stopped);
    EXPECT_FALSE(storage_.get(box->id())->state.handle);
    EXPECT_EQ(engine_.running(), 0U);
    ASSERT_TRUE(box->start());  // and it runs again
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
}

TEST_F(Recovery, StartFinishesAnInterruptedStopFirst) {
    auto box = runtime_->create(image_box());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    leave_in(box->id(), BoxStatus::Stopping);
    ASSERT_TRUE(box->start());
    EXPECT_EQ(engine_.starts(), 2U);
    EXPECT_EQ(engine_.running(), 1U);  // the old engine was killed, a new one started
    // exec goes through the same path (ensure_running); the CLI test runs a real exec after it.
}

// A look at a Stopping box leaves a stop in progress alone (its stopper holds the box's lock),
// and finishes one whose stopper is gone (nobody holds the lock).
TEST_F(Recovery, ALookFinishesOnlyAStopNobodyIsDoing) {
    auto box = runtime_->create(image_box());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    leave_in(box->id(), BoxStatus::Stopping);
    {
        // The stopper, in another process: its flock on the box's lock file.
        auto held = detail::LockFile::acquire(box_dir(box->id()) / ".lock", true);
        ASSERT_TRUE(held && *held);
        EXPECT_EQ(open_runtime()->get(box->id().str())->info()->status, BoxStatus::Stopping);
        EXPECT_EQ(engine_.running(), 1U);
    }
    EXPECT_EQ(box->info()->status, BoxStatus::Stopped);
    EXPECT_EQ(engine_.running(), 0U);
}

TEST_F(Recovery, RemoveDeletesTheRowLast) {
    auto box = runtime_->create(image_box());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    const auto id = box->id();
    ASSERT_TRUE(std::filesystem::exists(box_dir(id)));
    ASSERT_TRUE(runtime_->remove(id.str(), true));
    EXPECT_EQ(storage_.get(id).error().kind(), ErrorKind::NotFound);
    EXPECT_FALSE(std::filesystem::exists(box_dir(id)));
    EXPECT_TRUE(released(id));
    EXPECT_EQ(engine_.running(), 0U);
}

// A remover killed after marking the box: the next look at it finishes the removal, processes,
// pins and folder included, and reports it gone.
TEST_F(Recovery, TheNextLookFinishesAnInterruptedRemoval) {
    auto box = runtime_->create(image_box(), "half");
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    const auto id = box->id();
    leave_in(id, BoxStatus::Removing);
    auto other = open_runtime();  // (opening the home already finishes it; look from this one too)
    auto found = other->get(id.str());
    ASSERT_FALSE(found);
    EXPECT_EQ(found.error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(storage_.get(id).error().kind(), ErrorKind::NotFound);
    EXPECT_FALSE(std::filesystem::exists(box_dir(id)));
    EXPECT_TRUE(released(id));
    EXPECT_EQ(engine_.running(), 0U);
    // The name is free again.
    EXPECT_TRUE(other->create(image_box(), "half"));
}

// A pin that cannot be dropped keeps the row (Removing): a row-less pin would make `images rm`
// refuse the image for good. The next remove finishes the job.
TEST_F(Recovery, ARemoveThatCannotReleaseThePinKeepsTheRow) {
    auto box = runtime_->create(image_box());
    ASSERT_TRUE(box);
    const auto id = box->id();
    released_->fail_next = true;
    auto removed = runtime_->remove(id.str(), true);
    ASSERT_FALSE(removed);
    EXPECT_NE(removed.error().to_string().find("images.db is locked"), std::string::npos)
        << removed.error().to_string();
    EXPECT_EQ(storage_.get(id)->state.status, BoxStatus::Removing);
    auto again = runtime_->remove(id.str(), true);
    EXPECT_TRUE(again) << again.error().to_string();
    EXPECT_EQ(storage_.get(id).error().kind(), ErrorKind::NotFound);
    EXPECT_TRUE(released(id));
}

TEST_F(Recovery, OpeningTheHomeFinishesInterruptedRemovals) {
    auto box = runtime_->create(image_box());
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    const auto id = box->id();
    leave_in(id, BoxStatus::Removing);
    auto other = open_runtime();
    EXPECT_EQ(storage_.get(id).error().kind(), ErrorKind::NotFound);
    EXPECT_FALSE(std::filesystem::exists(box_dir(id)));
    EXPECT_TRUE(released(id));
    EXPECT_EQ(engine_.running(), 0U);
}

TEST_F(Recovery, ListingSkipsABoxWhoseRemovalItFinishes) {
    auto keep = runtime_->create(image_box(), "keep");
    auto gone = runtime_->create(image_box(), "gone");
    ASSERT_TRUE(keep && gone);
    leave_in(gone->id(), BoxStatus::Removing);
    auto listed = runtime_->list_info();
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1U);
    EXPECT_EQ(listed->front().name, "keep");
}

TEST_F(Recovery, NamesThatPassForIdsAreRefused) {
    auto first = runtime_->create(image_box());
    ASSERT_TRUE(first);
    const auto id = first->id();
    auto expect_refused = [&](const std::string& name, std::string_view why) {
        auto made = runtime_->create(image_box(), name);
        ASSERT_FALSE(made) << name;
        EXPECT_EQ(made.error().kind(), ErrorKind::InvalidArgument) << name;
        EXPECT_NE(made.error().message().find(why), std::string::npos) << made.error().message();
    };
    expect_refused(id.str(), "is a valid box id");
    expect_refused(BoxID::generate().str(), "is a valid box id");  // any id, even of no box
    expect_refused(id.short_id(), "is a prefix of the id of box " + id.str());
    std::string lower = id.short_id();
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    expect_refused(lower, "is a prefix of the id of box");
    EXPECT_EQ(runtime_->list_info()->size(), 1U);  // nothing was written
    // Names that are no box's id prefix are fine, and lookups by id find the box, not a name.
    auto named = runtime_->create(image_box(), "web");
    ASSERT_TRUE(named) << named.error().to_string();
    EXPECT_EQ(runtime_->get(id.short_id())->id(), id);
}

TEST(RemovingStatus, StateMachine) {
    using enum BoxStatus;
    EXPECT_EQ(to_string(Removing), "removing");
    EXPECT_EQ(parse_box_status("removing"), Removing);
    EXPECT_EQ(fmt::format("{}", Removing), "removing");
    EXPECT_TRUE(is_transient(Removing));
    EXPECT_TRUE(is_removing(Removing));
    EXPECT_TRUE(can_remove(Removing));
    EXPECT_FALSE(can_start(Removing));
    EXPECT_FALSE(can_stop(Removing));
    EXPECT_FALSE(can_exec(Removing));
    for (auto from : {Unknown, Configured, Running, Stopping, Stopped, Removing}) {
        EXPECT_TRUE(can_transition(from, Removing)) << to_string(from);
    }
    for (auto to : {Unknown, Configured, Running, Stopping, Stopped}) {
        EXPECT_FALSE(can_transition(Removing, to)) << to_string(to);
    }
}

}  // namespace
}  // namespace boxlite::recovery_test
