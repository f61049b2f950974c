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
    example::Checks checks("lifecycle");

    auto options = s.box_options();
    options.auto_remove = false;  // keep the box (and its files) when it stops
    auto box = runtime.create(options, "lifecycle");
    if (!box) return example::report(box.error());
    fmt::print("created {} ({})\n", box->id(), box->info()->status);
    checks.expect_eq(box->info()->status, BoxStatus::Configured, "status after create");

    if (auto started = box->start(); !started) return example::report(started.error());
    fmt::print("started: {}\n", box->info()->status);
    checks.expect_eq(box->info()->status, BoxStatus::Running, "status after start");

    auto wrote = box->run(BoxCommand("sh").args({"-c", "date > /root/started-at && cat /root/started-at"}));
    if (!wrote) return example::report(wrote.error());
    fmt::print("wrote /root/started-at: {}", wrote->stdout_text);

    if (auto stopped = box->stop(); !stopped) return example::report(stopped.error());
    fmt::print("stopped: {}\n", box->info()->status);
    checks.expect_eq(box->info()->status, BoxStatus::Stopped, "status after stop");

    if (auto restarted = box->start(); !restarted) return example::report(restarted.error());
    auto read = box->run(BoxCommand("cat").arg("/root/started-at"));
    if (!read) return example::report(read.error());
    fmt::print("after restart the file is still there: {}", read->stdout_text);
    checks.expect(!wrote->stdout_text.empty(), "the date was written");
    checks.expect_eq(read->stdout_text, wrote->stdout_text, "the file after the restart");

    auto metrics = box->metrics();
    checks.expect(metrics.has_value(), "metrics of a running box");
    if (metrics) fmt::print("metrics: {}\n", *metrics);

    if (auto removed = runtime.remove(box->id().str(), /*force=*/true); !removed)
        return example::report(removed.error());
    const bool exists = runtime.exists("lifecycle").value_or(true);
    fmt::print("removed; exists: {}\n", exists);
    checks.expect(!exists, "the box is gone after remove");
    return checks.finish();
}
