// native: the low-level streaming API — an agent connection, stdin written while stdout is read
// line by line, a signal, a tty with a resize, several executions on one connection, and the
// guest's own metrics.
//
//   boxlite_example_native [rootfs-dir]
#include "example_box.hpp"

#include <csignal>
#include <thread>

using namespace boxlite;

int main(int argc, char** argv) {
    example::Setup s;
    example::setup(s, argc, argv, "native");
    if (!s.ready) return s.exit_code;
    auto& runtime = *s.runtime;
    example::Checks checks("native");
    auto box = runtime.create(s.box_options(), "native");
    if (!box) return example::report(box.error());

    // Streaming: feed stdin from one thread, read stdout line by line in this one.
    auto exec = box->exec(BoxCommand("sh").args({"-c", "while read n; do echo $((n * n)); done"}));
    if (!exec) return example::report(exec.error());
    fmt::print("execution {} (pid {} in the box)\n", exec->id(), exec->pid());
    auto in = exec->stdin();
    auto out = exec->stdout();
    std::thread feeder([&] {
        for (int n = 1; n <= 5; ++n) (void)in->write(fmt::format("{}\n", n));
        (void)in->close();
    });
    std::string squares;
    while (auto line = out->read_line()) {
        if (!*line) break;
        fmt::print("square: {}\n", **line);
        squares += **line + " ";
    }
    feeder.join();
    auto result = exec->wait();
    if (!result) return example::report(result.error());
    fmt::print("exit code {}\n", result->exit_code);
    checks.expect_eq(squares, std::string("1 4 9 16 25 "), "squares streamed back line by line");
    checks.expect_eq(result->exit_code, 0, "exit code of the streaming command");

    // Signals reach the whole process group.
    auto sleeper = box->exec(BoxCommand("sleep").arg("1000"));
    if (!sleeper) return example::report(sleeper.error());
    (void)sleeper->signal(SIGINT);
    const auto interrupted = sleeper->wait();
    if (!interrupted) return example::report(interrupted.error());
    fmt::print("sleep after SIGINT: exit code {}\n", interrupted->exit_code);
    checks.expect_eq(interrupted->exit_code, -SIGINT, "exit code of a command killed by SIGINT");

    // A terminal: the program sees a tty and its size changes.
    auto tty = box->exec(BoxCommand("sh").args({"-c", "stty size; read _; stty size"}).tty(true));
    if (!tty) return example::report(tty.error());
    auto tty_in = tty->stdin();
    auto tty_out = tty->stdout();
    auto first = tty_out->read_line();
    (void)tty->resize_tty(40, 100);
    (void)tty_in->write("\n");
    // A terminal ends lines with "\r\n" and echoes what we type; keep only the last line.
    std::string rest = tty_out->read_all().value_or("");
    std::erase(rest, '\r');
    while (!rest.empty() && rest.back() == '\n') rest.pop_back();
    rest = rest.substr(rest.rfind('\n') + 1);
    std::string before = first && *first ? **first : "?";
    std::erase(before, '\r');
    fmt::print("tty sizes: {} then {}\n", before, rest);
    checks.expect_eq(before, std::string("24 80"), "the terminal's initial size");
    checks.expect_eq(rest, std::string("40 100"), "the terminal's size after resize_tty(40, 100)");

    // One connection, several executions at once, plus the guest's view of itself.
    auto agent = box->open_agent();
    if (!agent) return example::report(agent.error());
    auto a = agent->exec(BoxCommand("sh").args({"-c", "sleep 0.2; echo first"}));
    auto b = agent->exec(BoxCommand("echo").arg("second"));
    if (!a || !b) return example::report(a ? b.error() : a.error());
    const auto second = b->collect();
    const auto first_out = a->collect();
    const auto second_text = second ? second->stdout_text : std::string();
    const auto first_text = first_out ? first_out->stdout_text : std::string();
    fmt::print("{}{}", second_text, first_text);
    checks.expect_eq(second_text + first_text, std::string("second\nfirst\n"),
                     "two executions on one connection, the quicker one done first");
    auto m = agent->metrics();
    checks.expect(m.has_value(), "the guest's metrics");
    if (m) {
        fmt::print("guest: {} processes, {} MiB available, agent protocol v{}\n", m->process_count,
                   m->memory_available_bytes >> 20, agent->protocol_version());
        checks.expect(m->process_count >= 1 && m->memory_available_bytes > 0, "plausible guest metrics");
    }
    (void)runtime.remove("native", /*force=*/true);
    return checks.finish();
}
