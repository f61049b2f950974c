// list_boxes: several boxes in different states, listed and inspected by id or name.
//
//   boxlite_example_list_boxes [rootfs-dir]
#include "example_box.hpp"

using namespace boxlite;

int main(int argc, char** argv) {
    example::Setup s;
    example::setup(s, argc, argv, "list_boxes");
    if (!s.ready) return s.exit_code;
    auto& runtime = *s.runtime;
    example::Checks checks("list_boxes");

    auto options = s.box_options();
    options.auto_remove = false;
    for (const char* name : {"alpha", "beta", "gamma"}) {
        if (auto box = runtime.create(options, name); !box) return example::report(box.error());
    }
    auto beta = runtime.get("beta");
    if (!beta) return example::report(beta.error());
    if (auto started = beta->start(); !started) return example::report(started.error());
    auto gamma = runtime.get("gamma");
    (void)gamma->start();
    (void)gamma->stop();

    auto boxes = runtime.list_info();
    if (!boxes) return example::report(boxes.error());
    fmt::print("{:<14} {:<8} {:<11} {}\n", "ID", "NAME", "STATUS", "PID");
    std::string states;
    for (const auto& info : *boxes) {
        fmt::print("{:<14} {:<8} {:<11} {}\n", info.id.short_id(), info.name.value_or("-"), info.status,
                   info.pid ? std::to_string(*info.pid) : "-");
        checks.expect(info.running() == info.pid.has_value(), fmt::format("{}: a pid exactly when running", info.id));
    }
    for (const char* name : {"alpha", "beta", "gamma"}) {
        auto info = runtime.get_info(name);
        states += fmt::format("{}={} ", name, info ? fmt::format("{}", info->status) : std::string("missing"));
    }
    checks.expect_eq(boxes->size(), std::size_t{3}, "number of boxes listed");
    checks.expect_eq(states, std::string("alpha=configured beta=running gamma=stopped "), "the boxes' states");
    auto by_prefix = runtime.get_info(beta->id().str().substr(0, 20));
    if (by_prefix) fmt::print("found by id prefix: {}\n", by_prefix->name.value_or("-"));
    checks.expect(by_prefix && by_prefix->name == std::optional<std::string>("beta"), "lookup by id prefix finds beta");

    for (const auto& info : *boxes) (void)runtime.remove(info.id.str(), /*force=*/true);
    return checks.finish();
}
