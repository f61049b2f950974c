// A box keeps its engine (BoxConfig::engine): one runtime lists and drives boxes of every engine
// in one home, whatever engine it was opened with (BoxliteOptions::engine is the engine of new
// boxes only), and a box whose engine cannot run here is listed, inspected and removed, while
// starting it reports that engine's reason.
#include "namespace_fixture.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace boxlite::test {
namespace {

BoxliteRuntime open_with_engine(const fs::path& home, EngineKind kind) {
    BoxliteOptions options;
    options.home_dir = home;
    options.engine = kind;
    auto runtime = open_runtime(options);
    EXPECT_TRUE(runtime) << runtime.error().to_string();
    return std::move(*runtime);
}

std::string engine_of(const std::vector<BoxInfo>& boxes, const BoxID& id) {
    auto it = std::find_if(boxes.begin(), boxes.end(), [&](const BoxInfo& info) { return info.id == id; });
    return it == boxes.end() ? std::string("<absent>") : it->engine;
}

}  // namespace

using EnginePerBox = NamespaceBox;

TEST_F(EnginePerBox, OneRuntimeDrivesBoxesOfTwoEngines) {
    // A mock box, created by a runtime opened on the mock engine in the same home.
    auto mock_runtime = open_with_engine(home_->path(), EngineKind::Mock);
    auto mock_box = mock_runtime.create(options(/*auto_remove=*/false), "mock-box");
    ASSERT_TRUE(mock_box) << mock_box.error().to_string();
    auto ns_box = runtime_->create(options(/*auto_remove=*/false), "ns-box");
    ASSERT_TRUE(ns_box) << ns_box.error().to_string();

    // The namespace runtime lists both, each with its own engine.
    auto boxes = runtime_->list_info();
    ASSERT_TRUE(boxes) << boxes.error().to_string();
    EXPECT_EQ(boxes->size(), 2U);
    EXPECT_EQ(engine_of(*boxes, mock_box->id()), "mock");
    EXPECT_EQ(engine_of(*boxes, ns_box->id()), "namespace");

    // ... and drives both: the mock box through a mock engine it makes when first needed.
    auto mock_here = runtime_->get("mock-box");
    ASSERT_TRUE(mock_here) << mock_here.error().to_string();
    auto started = mock_here->start();
    ASSERT_TRUE(started) << started.error().to_string();
    auto mock_info = runtime_->get_info("mock-box");
    ASSERT_TRUE(mock_info) << mock_info.error().to_string();
    EXPECT_EQ(mock_info->status, BoxStatus::Running) << "the mock engine that started it still knows it";
    EXPECT_EQ(mock_info->engine, "mock");
    auto metrics = mock_here->metrics();
    ASSERT_TRUE(metrics) << metrics.error().to_string();
    EXPECT_EQ(metrics->memory_bytes, std::optional<std::uint64_t>(64ULL << 20))
        << "metrics come from the box's own engine (the mock's figure)";

    auto ns_here = runtime_->get("ns-box");
    ASSERT_TRUE(ns_here);
    EXPECT_EQ(run(*ns_here, BoxCommand("echo").arg("namespace")).stdout_text, "namespace\n");

    // The mock runtime drives the namespace box too (a namespace engine made on demand).
    auto ns_from_mock = mock_runtime.get("ns-box");
    ASSERT_TRUE(ns_from_mock);
    EXPECT_EQ(run(*ns_from_mock, BoxCommand("echo").arg("from-mock")).stdout_text, "from-mock\n");

    ASSERT_TRUE(mock_here->stop());
    ASSERT_TRUE(ns_here->stop());
    auto after = runtime_->list_info();
    ASSERT_TRUE(after);
    for (const auto& info : *after) EXPECT_EQ(info.status, BoxStatus::Stopped) << info.id.str();

    // Restarted and removed by force while running: each by its own engine.
    ASSERT_TRUE(ns_here->start());
    ASSERT_TRUE(mock_here->start());
    EXPECT_TRUE(runtime_->remove("ns-box", /*force=*/true));
    EXPECT_TRUE(runtime_->remove("mock-box", /*force=*/true));
    auto none = runtime_->list_info();
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
}

TEST_F(EnginePerBox, BoxOfAnEngineThatCannotRunHere) {
    // A qemu engine that cannot run (its QEMU is missing): open_runtime still gives a runtime,
    // which records boxes for it.
    struct MissingQemu {
        MissingQemu() { ::setenv("BOXLITE_QEMU", "/nonexistent/qemu-system-x86_64", 1); }
        ~MissingQemu() { ::unsetenv("BOXLITE_QEMU"); }
    } missing_qemu;
    auto qemu_runtime = open_with_engine(home_->path(), EngineKind::Qemu);
    const auto why = qemu_runtime.engine().available();
    ASSERT_FALSE(why) << "the qemu engine runs here; this test needs an engine that cannot";
    auto box = qemu_runtime.create(options(/*auto_remove=*/false), "vm-box");
    ASSERT_TRUE(box) << box.error().to_string();

    // The namespace runtime lists and inspects it ...
    auto boxes = runtime_->list_info();
    ASSERT_TRUE(boxes);
    EXPECT_EQ(engine_of(*boxes, box->id()), "qemu");
    auto info = runtime_->get_info("vm-box");
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->status, BoxStatus::Configured);

    // ... starting it reports the qemu engine's reason, not this runtime's engine ...
    auto here = runtime_->get("vm-box");
    ASSERT_TRUE(here);
    auto started = here->start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().kind(), ErrorKind::UnsupportedEngine) << started.error().to_string();
    EXPECT_NE(started.error().message().find(why.error().message()), std::string::npos)
        << started.error().to_string() << " should carry " << why.error().to_string();
    EXPECT_EQ(runtime_->get_info("vm-box")->status, BoxStatus::Configured) << "a failed start changes nothing";

    // ... and removes it.
    EXPECT_TRUE(runtime_->remove("vm-box"));
    EXPECT_FALSE(*runtime_->exists("vm-box"));
}

// The compile-time policy form: MockEngine makes no engine of another kind (it is no
// PerKindEngine), so a box recorded for another engine is listed and removed, but its start
// says which engine it was created for.
TEST(EnginePerBoxPolicy, EngineWithoutPerKindDispatchRefusesOtherKinds) {
    TempDir dir("boxlite-engine-policy");
    MemoryStorage storage;
    BasicRuntime<MockEngine, PipeTransport, MemoryStorage> runtime(BoxliteOptions{dir.path(), {}, EngineKind::Mock},
                                                                   MockEngine{}, PipeTransport{}, storage);
    BoxConfig config;
    config.name = "other";
    config.engine = "namespace";
    config.options.rootfs = RootfsSpec::path(dir.path());
    BoxState state;
    state.status = BoxStatus::Configured;
    ASSERT_TRUE(storage.insert(config, state));

    auto info = runtime.get_info("other");
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->engine, "namespace");
    auto box = runtime.get("other");
    ASSERT_TRUE(box);
    auto started = box->start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().kind(), ErrorKind::UnsupportedEngine);
    EXPECT_NE(started.error().message().find("created for the namespace engine, but this runtime runs the mock engine"),
              std::string::npos)
        << started.error().to_string();
    EXPECT_TRUE(runtime.remove("other"));
}

}  // namespace boxlite::test
