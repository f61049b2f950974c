// basic_lifecycle: create, list, inspect and remove boxes — the first thing to run.
//
//   boxlite_example_basic_lifecycle            in a fresh temporary home (removed at the end)
//   boxlite_example_basic_lifecycle <home>     in <home> (kept)
//
// The engine is BOXLITE_ENGINE when set; otherwise the namespace engine when this machine can
// run it, else the mock engine (nothing runs either way: this example never starts a box, though
// creating one from an image pulls that image). It prints what it does and exits non-zero, with
// "FAILED: …" or "error: …", on the first error or unexpected result.
#include <boxlite/boxlite.hpp>

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace {

using namespace boxlite;

int report(const BoxliteError& error) {
    fmt::print(stderr, "error: {}\n", error);
    return 1;
}

/// BOXLITE_ENGINE, or namespace when available, or mock.
BoxliteResult<BoxliteRuntime> open_for_example(const std::filesystem::path& home) {
    BOXLITE_TRY(auto options, BoxliteOptions::from_environment());
    options.home_dir = home;
    if (std::getenv("BOXLITE_ENGINE") == nullptr || *std::getenv("BOXLITE_ENGINE") == '\0') {
        options.engine = EngineKind::Namespace;
        BOXLITE_TRY(auto runtime, open_runtime(options));
        if (auto ok = runtime.engine().available(); ok) return runtime;
        else fmt::print("namespace engine not usable here ({}); using the mock engine\n", ok.error());
        options.engine = EngineKind::Mock;
    }
    return open_runtime(options);
}

}  // namespace

int main(int argc, char** argv) {
    std::filesystem::path home;
    bool temporary = false;
    if (argc > 1) {
        home = argv[1];
    } else {
        std::string pattern = (std::filesystem::temp_directory_path() / "boxlite-example-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) {
            std::perror("mkdtemp");
            return 1;
        }
        home = pattern;
        temporary = true;
    }

    auto runtime = open_for_example(home);
    if (!runtime) return report(runtime.error());
    fmt::print("BoxLite {} — home {}, engine {}\n", version(), home.string(), runtime->engine().kind());

    // 1. Create: one box from an image (pulled now if missing, and pinned to the box), one from a
    //    directory. Offline, the image cannot be pulled: the error says why, and the example goes
    //    on with a directory instead.
    BoxOptions web;
    web.rootfs = RootfsSpec::image("alpine:latest");
    web.cpus = 1;
    web.memory_mib = 256;
    web.env = {{"MODE", "demo"}};
    web.labels = {{"app", "web"}};
    web.ports = {PortSpec{8080, 80, PortProtocol::Tcp, "127.0.0.1"}};
    web.auto_remove = false;
    auto first = runtime->create(web, "web");
    const bool from_image = static_cast<bool>(first);
    if (!first) {
        fmt::print("could not create web from alpine:latest: {}\n  (creating it from a directory instead)\n",
                   first.error());
        web.rootfs = RootfsSpec::path(home);
        first = runtime->create(web, "web");
        if (!first) return report(first.error());
    }

    BoxOptions tools;
    tools.rootfs = RootfsSpec::path(home);
    tools.security = SecurityOptions::maximum();
    auto second = runtime->create(tools, "tools");
    if (!second) return report(second.error());

    // Validation happens before anything is written.
    BoxOptions too_big;
    too_big.cpus = 100000;
    if (auto rejected = runtime->create(too_big, "too-big"); !rejected) {
        fmt::print("rejected as expected: {}\n", rejected.error());
    } else {
        fmt::print("FAILED: a box with 100000 CPUs was accepted\n");
        return 1;
    }

    // 2. List.
    auto boxes = runtime->list_info();
    if (!boxes) return report(boxes.error());
    fmt::print("{} boxes:\n", boxes->size());
    for (const auto& info : *boxes) fmt::print("  {}\n", info);
    if (temporary && boxes->size() != 2) {
        fmt::print("FAILED: expected the 2 boxes web and tools\n");
        return 1;
    }

    // 3. Inspect, by name and by a unique id prefix.
    const auto prefix = first->id().str().substr(0, 12);
    auto info = runtime->get_info(prefix);
    if (!info) return report(info.error());
    fmt::print("inspect {}: name={} status={} image={} cpus={} memory={} MiB created={}\n", prefix,
               info->name.value_or("-"), info->status, info->image, info->cpus, info->memory_mib,
               detail::format_rfc3339(info->created_at));
    auto config = first->config();
    if (!config) return report(config.error());
    fmt::print("config: {}\n", *config);
    // What inspect shows is what was asked for.
    int wrong = 0;
    auto check = [&](bool ok, std::string_view what) {
        if (ok) return;
        ++wrong;
        fmt::print("FAILED: inspect shows the wrong {}\n", what);
    };
    check(info->id == first->id(), "id for the prefix");
    check(info->name == std::optional<std::string>("web"), "name");
    check(info->status == BoxStatus::Configured, "status (a box never started is configured)");
    check(from_image ? info->image.find("alpine") != std::string::npos : info->image == home.string(), "image");
    check(info->cpus == 1 && info->memory_mib == 256, "cpus or memory");
    check(info->engine == runtime->engine().kind(), "engine");
    check(info->labels == std::map<std::string, std::string>{{"app", "web"}}, "labels");
    check(config->name == std::optional<std::string>("web") && config->id == first->id(), "config name or id");
    check(config->options.env == web.env, "environment");
    check(config->options.ports == web.ports, "ports");
    if (wrong != 0) return 1;

    // 4. Remove, and show it is gone.
    for (const char* name : {"web", "tools"}) {
        if (auto removed = runtime->remove(name); !removed) return report(removed.error());
        fmt::print("removed {}\n", name);
    }
    auto gone = runtime->get("web");
    fmt::print("get web: {}\n", gone ? std::string("still there?") : gone.error().to_string());
    auto remaining = runtime->list_info();
    if (!remaining) return report(remaining.error());
    fmt::print("{} boxes left\n", remaining->size());

    if (temporary) {
        std::error_code ec;
        std::filesystem::remove_all(home, ec);
    }
    if (gone || !remaining->empty()) {
        fmt::print("FAILED: removed boxes are still there\n");
        return 1;
    }
    fmt::print("basic_lifecycle: ok\n");
    return 0;
}
