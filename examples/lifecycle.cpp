// lifecycle: create -> start -> stop -> start again, with data that persists across the restart,
// then remove.
//
//   boxlite_example_lifecycle [rootfs-dir]
#include "example_box.hpp"

using namespace boxlite;

int main(int argc, char** argv) {
    example::Setup s;
    example::setup(s, argc, argv, "lifecycle");
    if (!s.ready) return s.exit_code;
    auto& runtime = *s.runtime;

    auto options = s.box_options();
    options.auto_remove = false;  // keep the box (and its files) when it stops
    auto box = runtime.create(options, "lifecycle");
    if (!box) return example::report(box.error());
    fmt::print("created {} ({})\n", box->id(), box->info()->status);

    if (auto started = box->start(); !started) return example::report(started.error());
    fmt::print("started: {}\n", box->info()->status);

    auto wrote = box->run(BoxCommand("sh").args({"-c", "date > /root/started-at && cat /root/started-at"}));
    if (!wrote) return example::report(wrote.error());
    fmt::print("wrote /root/started-at: {}", wrote->stdout_text);

    if (auto stopped = box->stop(); !stopped) return example::report(stopped.error());
    fmt::print("stopped: {}\n", box->info()->status);

    if (auto restarted = box->start(); !restarted) return example::report(restarted.error());
    auto read = box->run(BoxCommand("cat").arg("/root/started-at"));
    if (!read) return example::report(read.error());
    fmt::print("after restart the file is still there: {}", read->stdout_text);

    auto metrics = box->metrics();
    if (metrics) fmt::print("metrics: {}\n", *metrics);

    if (auto removed = runtime.remove(box->id().str(), /*force=*/true); !removed) return example::report(removed.error());
    fmt::print("removed; exists: {}\n", *runtime.exists("lifecycle"));
    return read->stdout_text == wrote->stdout_text ? 0 : 1;
}
