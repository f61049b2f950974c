// Consumer of an installed BoxLite: create, list, inspect and remove a box on the mock engine
// in the home given as argv[1]. Prints "consumer ok" on success.
#include <boxlite/boxlite.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: consumer <home> <rootfs dir>\n");
        return 2;
    }
    boxlite::BoxliteOptions options;
    options.home_dir = argv[1];
    options.engine = boxlite::EngineKind::Mock;
    auto runtime = boxlite::open_runtime(options);
    if (!runtime) {
        fmt::print(stderr, "{}\n", runtime.error());
        return 1;
    }
    boxlite::BoxOptions box_options;
    box_options.rootfs = boxlite::RootfsSpec::path(argv[2]);
    auto box = runtime->create(box_options, "consumer-box");
    if (!box) {
        fmt::print(stderr, "{}\n", box.error());
        return 1;
    }
    auto infos = runtime->list_info();
    if (!infos || infos->size() != 1) return 1;
    fmt::print("{}\n", infos->front());
    if (auto removed = runtime->remove("consumer-box"); !removed) {
        fmt::print(stderr, "{}\n", removed.error());
        return 1;
    }
    fmt::print("consumer ok (boxlite {})\n", boxlite::version());
    return 0;
}
