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
    int running = 0;
    for (const auto& info : *boxes) {
        fmt::print("{:<14} {:<8} {:<11} {}\n", info.id.short_id(), info.name.value_or("-"), info.status,
                   info.pid ? std::to_string(*info.pid) : "-");
        if (info.running()) ++running;
    }
    auto by_prefix = runtime.get_info(beta->id().str().substr(0, 20));
    if (by_prefix) fmt::print("found by id prefix: {}\n", by_prefix->name.value_or("-"));

    for (const auto& info : *boxes) (void)runtime.remove(info.id.str(), /*force=*/true);
    return boxes->size() == 3 && running == 1 ? 0 : 1;
}
