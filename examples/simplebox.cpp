// simplebox: the basics of running commands in a box — echo, separate stdout and stderr,
// environment and working directory, exit codes, and several commands in one box.
//
//   boxlite_example_simplebox [rootfs-dir]
#include "example_box.hpp"

using namespace boxlite;

int main(int argc, char** argv) {
    example::Setup s;
    example::setup(s, argc, argv, "simplebox");
    if (!s.ready) return s.exit_code;
    auto& runtime = *s.runtime;
    example::Checks checks("simplebox");

    auto box = runtime.create(s.box_options(), "simplebox");
    if (!box) return example::report(box.error());

    // 1. A command and its output (the box starts on the first exec).
    auto hello = box->run(BoxCommand("echo").args({"Hello from BoxLite!"}));
    if (!hello) return example::report(hello.error());
    fmt::print("stdout: {}", hello->stdout_text);
    checks.expect_eq(hello->stdout_text, std::string("Hello from BoxLite!\n"), "echo's output");

    // 2. stdout and stderr arrive separately.
    auto both = box->run(BoxCommand("sh").args({"-c", "echo to-stdout; echo to-stderr >&2"}));
    if (!both) return example::report(both.error());
    fmt::print("stdout: {}stderr: {}", both->stdout_text, both->stderr_text);
    checks.expect_eq(both->stdout_text, std::string("to-stdout\n"), "stdout alone");
    checks.expect_eq(both->stderr_text, std::string("to-stderr\n"), "stderr alone");

    // 3. Environment and working directory.
    auto env = box->run(BoxCommand("sh")
                            .args({"-c", "echo \"GREETING=$GREETING in $(pwd)\""})
                            .env("GREETING", "hi")
                            .working_dir("/tmp"));
    if (!env) return example::report(env.error());
    fmt::print("{}", env->stdout_text);
    checks.expect_eq(env->stdout_text, std::string("GREETING=hi in /tmp\n"), "environment and working directory");

    // 4. Exit codes: N for exit(N), -N for death by signal N.
    for (const auto& [script, expected] :
         {std::pair{"exit 0", 0}, std::pair{"exit 42", 42}, std::pair{"kill -TERM $$", -15}}) {
        auto result = box->run(BoxCommand("sh").args({"-c", script}));
        if (!result) return example::report(result.error());
        fmt::print("'{}' -> exit code {}\n", script, result->exit_code);
        checks.expect_eq(result->exit_code, expected, fmt::format("exit code of '{}'", script));
    }

    // 5. Several commands in the same box share its filesystem.
    (void)box->run(BoxCommand("sh").args({"-c", "echo state > /root/note"}));
    auto note = box->run(BoxCommand("cat").arg("/root/note"));
    if (!note) return example::report(note.error());
    fmt::print("the box remembers: {}", note->stdout_text);
    checks.expect_eq(note->stdout_text, std::string("state\n"), "a file written by an earlier command");

    if (auto removed = runtime.remove("simplebox", /*force=*/true); !removed) return example::report(removed.error());
    return checks.finish();
}
