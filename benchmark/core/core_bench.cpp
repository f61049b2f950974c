// The runtime's bookkeeping cost, with no engine work (MockEngine): what create, list, get and
// remove cost on SqliteStorage (real WAL database, fsync per commit) versus MemoryStorage.
#include <boxlite/boxlite.hpp>

#include <benchmark/benchmark.h>

#include "harness.hpp"

#include <stdexcept>

namespace {

using namespace boxlite;

template <class S>
S make_storage(const std::filesystem::path& home);

template <>
MemoryStorage make_storage<MemoryStorage>(const std::filesystem::path&) {
    return MemoryStorage{};
}

template <>
SqliteStorage make_storage<SqliteStorage>(const std::filesystem::path& home) {
    auto storage = SqliteStorage::open(home);
    if (!storage) throw std::runtime_error("SqliteStorage::open: " + storage.error().to_string());
    return std::move(*storage);
}

template <class S>
BasicRuntime<MockEngine, PipeTransport, S> make_runtime(const std::filesystem::path& home) {
    return BasicRuntime<MockEngine, PipeTransport, S>(BoxliteOptions{home, {}, EngineKind::Mock}, MockEngine{},
                                                      PipeTransport{}, make_storage<S>(home));
}

BoxOptions options_for(const std::filesystem::path& rootfs) {
    BoxOptions o;
    o.rootfs = RootfsSpec::path(rootfs);
    o.auto_remove = false;
    return o;
}

/// create + remove of one box.
template <class S>
void BM_CreateRemove(benchmark::State& state) {
    bench::TempHome home;
    auto runtime = make_runtime<S>(home.path());
    const auto options = options_for(home.path());
    for (auto _ : state) {
        auto box = runtime.create(options);
        if (!box) state.SkipWithError(box.error().to_string().c_str());
        else if (!runtime.remove(box->id().str())) state.SkipWithError("remove failed");
    }
}
BENCHMARK(BM_CreateRemove<MemoryStorage>)->Name("create_remove/memory");
BENCHMARK(BM_CreateRemove<SqliteStorage>)->Name("create_remove/sqlite")->UseRealTime();

/// list_info over N boxes.
template <class S>
void BM_List(benchmark::State& state) {
    bench::TempHome home;
    auto runtime = make_runtime<S>(home.path());
    const auto options = options_for(home.path());
    for (int i = 0; i < state.range(0); ++i) (void)runtime.create(options);
    for (auto _ : state) {
        auto boxes = runtime.list_info();
        benchmark::DoNotOptimize(boxes);
    }
    state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_List<MemoryStorage>)->Name("list/memory")->Arg(100);
BENCHMARK(BM_List<SqliteStorage>)->Name("list/sqlite")->Arg(100)->UseRealTime();

/// get by name and by id prefix among N boxes.
template <class S>
void BM_GetByPrefix(benchmark::State& state) {
    bench::TempHome home;
    auto runtime = make_runtime<S>(home.path());
    const auto options = options_for(home.path());
    std::string prefix;
    for (int i = 0; i < 100; ++i) {
        auto box = runtime.create(options, fmt::format("box-{}", i));
        if (box && i == 50) prefix = box->id().str().substr(0, 20);
    }
    for (auto _ : state) {
        auto box = runtime.get(prefix);
        benchmark::DoNotOptimize(box);
    }
}
BENCHMARK(BM_GetByPrefix<MemoryStorage>)->Name("get_prefix/memory");
BENCHMARK(BM_GetByPrefix<SqliteStorage>)->Name("get_prefix/sqlite")->UseRealTime();

/// start + stop (mock engine) through the state machine and storage.
void BM_StartStop(benchmark::State& state) {
    bench::TempHome home;
    auto runtime = make_runtime<SqliteStorage>(home.path());
    auto box = runtime.create(options_for(home.path()));
    for (auto _ : state) {
        if (!box->start() || !box->stop()) state.SkipWithError("start/stop failed");
    }
}
BENCHMARK(BM_StartStop)->Name("start_stop/sqlite")->UseRealTime();

/// BoxConfig -> JSON -> BoxConfig, as every stored record.
void BM_ConfigJsonRoundTrip(benchmark::State& state) {
    BoxConfig config;
    config.name = "bench";
    config.engine = "mock";
    config.options.env = {{"PATH", "/usr/bin"}, {"LANG", "C.UTF-8"}};
    config.options.labels = {{"team", "infra"}};
    for (auto _ : state) {
        auto back = parse_json_as<BoxConfig>(to_json_text(config), "config");
        benchmark::DoNotOptimize(back);
    }
}
BENCHMARK(BM_ConfigJsonRoundTrip)->Name("config_json_round_trip");

}  // namespace

int main(int argc, char** argv) { return boxlite::bench::main(argc, argv); }
