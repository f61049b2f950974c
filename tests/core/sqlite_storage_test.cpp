// SqliteStorage on real files: persistence across reopen, the home layout, lookups.
#include <boxlite/boxlite.hpp>

#include <gtest/gtest.h>

#include <support/support.hpp>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

namespace boxlite {
namespace {

using test::TempDir;

BoxConfig config_named(std::optional<std::string> name) {
    BoxConfig c;
    c.name = std::move(name);
    c.engine = "mock";
    c.options.rootfs = RootfsSpec::image("alpine:3.19");
    c.options.labels = {{"team", "infra"}};
    return c;
}

TEST(SqliteStorage, CreatesTheHomeLayoutAndPersistsAcrossReopen) {
    TempDir dir;
    const auto home = dir.path() / "home";
    BoxConfig config = config_named("db");
    {
        auto storage = SqliteStorage::open(home);
        ASSERT_TRUE(storage) << storage.error().to_string();
        EXPECT_EQ(storage->schema_version().value(), SqliteStorage::kSchemaVersion);
        ASSERT_TRUE(storage->insert(config, BoxState{}));
    }
    for (const char* sub : {"db/boxes.db", "boxes", "images", "logs", "init", "lock"}) {
        EXPECT_TRUE(std::filesystem::exists(home / sub)) << sub;
    }
    EXPECT_TRUE(std::filesystem::exists(home / "boxes" / config.id.str() / "config.json"));
    auto reopened = SqliteStorage::open(home);
    ASSERT_TRUE(reopened);
    auto record = reopened->lookup("db");
    ASSERT_TRUE(record) << record.error().to_string();
    EXPECT_EQ(record->config, config);
    EXPECT_EQ(record->state.status, BoxStatus::Configured);
}

TEST(SqliteStorage, OpenRuntimeOnTheMockEngine) {
    TempDir dir;
    BoxliteOptions options;
    options.home_dir = dir.path();
    options.engine = EngineKind::Mock;
    auto runtime = open_runtime(options);
    ASSERT_TRUE(runtime) << runtime.error().to_string();
    BoxOptions box_options;
    box_options.rootfs = RootfsSpec::path(dir.path());
    box_options.auto_remove = false;
    auto box = runtime->create(box_options, "one");
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start());
    EXPECT_EQ(runtime->get_info("one")->status, BoxStatus::Running);
    ASSERT_TRUE(box->stop());
    ASSERT_TRUE(runtime->remove("one"));
    EXPECT_TRUE(runtime->list_info()->empty());
}

// default_runtime(): one runtime per process, opened once even when many threads ask first.
// (Its home and engine come from the environment, so the test sets them before the first call;
// no other test in this program calls it.)
TEST(DefaultRuntime, IsOneRuntimeOpenedOnce) {
    static TempDir dir;  // outlives the test: the singleton keeps its home open until exit
    ::setenv("BOXLITE_HOME", (dir.path() / "home").c_str(), 1);
    ::setenv("BOXLITE_ENGINE", "mock", 1);
    constexpr int kThreads = 8;
    std::vector<const void*> cores(kThreads, nullptr);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&cores, t] {
            auto runtime = default_runtime();
            if (runtime) cores[static_cast<std::size_t>(t)] = &runtime->storage();
        });
    }
    for (auto& th : threads) th.join();
    ::unsetenv("BOXLITE_HOME");
    ::unsetenv("BOXLITE_ENGINE");
    auto first = default_runtime();
    ASSERT_TRUE(first) << first.error().to_string();
    auto second = default_runtime();
    ASSERT_TRUE(second);
    // Handles share one core, so its members have one address.
    EXPECT_EQ(&first->storage(), &second->storage());
    for (const auto* core : cores) EXPECT_EQ(core, &first->storage());
    EXPECT_EQ(first->options().home_dir, dir.path() / "home");  // read once: the environment was cleared since
    EXPECT_EQ(first->options().engine, EngineKind::Mock);
    BoxOptions options;
    options.rootfs = RootfsSpec::path(dir.path());
    options.auto_remove = false;
    auto box = first->create(options, "shared");
    ASSERT_TRUE(box) << box.error().to_string();
    EXPECT_EQ(second->get_info("shared")->id, box->id());
    ASSERT_TRUE(second->remove("shared"));
}

// list() answers from a cache while the database is unchanged; every write must show in the
// next listing: this connection's, another connection's in this process, another process's.
TEST(SqliteStorage, ListSeesEveryWriteAcrossConnectionsAndProcesses) {
    TempDir dir;
    const auto home = dir.path() / "home";
    auto mine = SqliteStorage::open(home);
    ASSERT_TRUE(mine) << mine.error().to_string();
    auto other = SqliteStorage::open(home);
    ASSERT_TRUE(other) << other.error().to_string();
    auto names = [&]() {
        std::vector<std::string> out;
        auto listed = mine->list();
        EXPECT_TRUE(listed) << listed.error().to_string();
        for (const auto& record : listed.value_or(std::vector<BoxRecord>{})) {
            out.push_back(record.config.name.value_or("?") + ":" + std::string(to_string(record.state.status)));
        }
        return out;
    };
    const auto first = config_named("first");
    const auto second = config_named("second");
    ASSERT_TRUE(mine->insert(first, BoxState{}));
    EXPECT_EQ(names(), std::vector<std::string>({"first:configured"}));
    EXPECT_EQ(names(), std::vector<std::string>({"first:configured"}));  // the cached answer

    ASSERT_TRUE(other->insert(second, BoxState{}));
    EXPECT_EQ(names(), std::vector<std::string>({"first:configured", "second:configured"}));

    BoxState stopped;
    stopped.status = BoxStatus::Stopped;
    ASSERT_TRUE(mine->update_state(first.id, stopped));
    EXPECT_EQ(names(), std::vector<std::string>({"first:stopped", "second:configured"}));
    ASSERT_TRUE(other->update_state(second.id, stopped));
    EXPECT_EQ(names(), std::vector<std::string>({"first:stopped", "second:stopped"}));

    ASSERT_TRUE(other->remove(first.id));
    EXPECT_EQ(names(), std::vector<std::string>({"second:stopped"}));

    // Another process (a CLI sharing the home) creates a box.
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        auto storage = SqliteStorage::open(home);
        ::_exit(storage && storage->insert(config_named("third"), BoxState{}) ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_EQ(names(), std::vector<std::string>({"second:stopped", "third:configured"}));

    ASSERT_TRUE(mine->remove(second.id));
    EXPECT_EQ(names(), std::vector<std::string>({"third:configured"}));
}

}  // namespace
}  // namespace boxlite
