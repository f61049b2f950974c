// The boxlite command line parsed into an Invocation, and run/create/exec converted to the
// library's BoxOptions / BoxCommand — no runtime involved.
#include "cli/app.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace boxlite::cli {
namespace {

tl::expected<Invocation, ParseStop> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "boxlite");
    return parse_command_line(args);
}

Invocation parse_ok(std::vector<std::string> args) {
    auto result = parse(args);
    EXPECT_TRUE(result) << (result ? "" : result.error().err);
    return result ? std::move(*result) : Invocation{};
}

TEST(CommandLine, RunStopsFlagParsingAtTheImage) {
    auto inv = parse_ok({"run", "-it", "--rm", "-e", "A=1", "alpine:3", "ls", "-la", "--debug"});
    EXPECT_EQ(inv.command, "run");
    EXPECT_TRUE(inv.create.interactive);
    EXPECT_TRUE(inv.create.tty);
    EXPECT_TRUE(inv.create.remove);
    EXPECT_FALSE(inv.global.debug);  // after the image: part of the command
    EXPECT_EQ(inv.create.positionals, (std::vector<std::string>{"alpine:3", "ls", "-la", "--debug"}));
}

TEST(CommandLine, RunEveryFlag) {
    ::setenv("BOXLITE_CLI_TEST_VAR", "from-caller", 1);
    auto dir = std::filesystem::temp_directory_path();
    auto inv = parse_ok({"--debug",
                         "--home",
                         "/tmp/h",
                         "--registry",
                         "r1.example",
                         "--registry",
                         "r2.example",
                         "--engine",
                         "namespace",
                         "run",
                         "-d",
                         "--name",
                         "web-1",
                         "-e",
                         "BOXLITE_CLI_TEST_VAR",
                         "-e",
                         "UNSET_BOXLITE_CLI_VAR",
                         "--env=B=2",
                         "-w",
                         "/srv",
                         "-u",
                         "1000:1000",
                         "--entrypoint",
                         "/bin/sh",
                         "--cpus",
                         "2",
                         "--memory",
                         "1g",
                         "--disk-size",
                         "20",
                         "--pids-limit",
                         "100",
                         "--network",
                         "enabled",
                         "--allow-net",
                         "*.example.com",
                         "--allow-net",
                         "10.0.0.0/8",
                         "-p",
                         "8080:80",
                         "-p",
                         "53/udp",
                         "-v",
                         dir.string() + ":/data:ro",
                         "alpine",
                         "-c",
                         "echo hi"});
    EXPECT_TRUE(inv.global.debug);
    EXPECT_EQ(inv.global.home, "/tmp/h");
    EXPECT_EQ(inv.global.registries, (std::vector<std::string>{"r1.example", "r2.example"}));
    EXPECT_EQ(inv.global.engine, EngineChoice::Namespace);

    auto request = to_create_request(inv.create, CallerContext::current(), true);
    ASSERT_TRUE(request) << request.error().to_string();
    const auto& o = request->options;
    EXPECT_EQ(request->name, "web-1");
    EXPECT_EQ(request->image, "alpine");
    EXPECT_TRUE(request->detach);
    EXPECT_EQ(request->command, (std::vector<std::string>{"-c", "echo hi"}));
    EXPECT_EQ(o.cmd, (std::vector<std::string>{"-c", "echo hi"}));
    EXPECT_EQ(o.entrypoint, (std::vector<std::string>{"/bin/sh"}));
    ASSERT_EQ(o.env.size(), 2U);
    EXPECT_EQ(o.env[0], std::make_pair(std::string("BOXLITE_CLI_TEST_VAR"), std::string("from-caller")));
    EXPECT_EQ(o.env[1], std::make_pair(std::string("B"), std::string("2")));
    EXPECT_EQ(o.working_dir, "/srv");
    EXPECT_EQ(o.user, "1000:1000");
    EXPECT_EQ(o.cpus, 2U);
    EXPECT_EQ(o.memory_mib, 1024U);
    EXPECT_EQ(o.disk_size_gb, 20U);
    EXPECT_EQ(o.resource_limits.max_processes, 100U);
    EXPECT_EQ(o.network.mode, NetworkMode::Enabled);
    EXPECT_EQ(o.network.allow_net, (std::vector<std::string>{"*.example.com", "10.0.0.0/8"}));
    ASSERT_EQ(o.ports.size(), 2U);
    EXPECT_EQ(o.ports[0].host_port, 8080);
    EXPECT_EQ(o.ports[1].protocol, PortProtocol::Udp);
    ASSERT_EQ(o.volumes.size(), 1U);
    EXPECT_TRUE(o.volumes[0].read_only);
    EXPECT_EQ(o.volumes[0].guest_path, "/data");
    EXPECT_TRUE(o.detach);
    EXPECT_FALSE(o.auto_remove);
    ASSERT_TRUE(o.rootfs.as_image());
    EXPECT_EQ(o.rootfs.as_image()->reference, "alpine");

    auto command = to_run_command(*request, {"/ignored-entrypoint"}, {"ignored-cmd"});
    ASSERT_TRUE(command);
    EXPECT_EQ(command->program(), "/bin/sh");
    EXPECT_EQ(command->arguments(), (std::vector<std::string>{"-c", "echo hi"}));
    EXPECT_EQ(command->working_directory(), "/srv");
    EXPECT_EQ(command->user_name(), "1000:1000");
}

TEST(CommandLine, CreateTakesUserStdinAndTty) {
    auto inv = parse_ok({"create", "-u", "root", "-i", "-t", "--name", "c", "alpine", "sh"});
    EXPECT_EQ(inv.command, "create");
    auto request = to_create_request(inv.create, CallerContext::current(), false);
    ASSERT_TRUE(request) << request.error().to_string();
    EXPECT_EQ(request->options.user, "root");
    EXPECT_TRUE(request->interactive);
    EXPECT_TRUE(request->tty);
    EXPECT_EQ(request->options.labels.at(std::string(kLabelInteractive)), "true");
    EXPECT_EQ(request->options.labels.at(std::string(kLabelTty)), "true");
    auto plain = to_create_request(parse_ok({"create", "alpine"}).create, CallerContext::current(), false);
    ASSERT_TRUE(plain);
    EXPECT_TRUE(plain->options.labels.empty());
    // create has no -d/--rm.
    EXPECT_FALSE(parse({"create", "-d", "alpine"}));
    EXPECT_FALSE(parse({"create", "--rm", "alpine"}));
}

TEST(CommandLine, DetachKeepsRmAndTty) {
    auto request = to_create_request(parse_ok({"run", "-d", "--rm", "-t", "alpine", "top"}).create,
                                     CallerContext::current(), true);
    ASSERT_TRUE(request) << request.error().to_string();
    EXPECT_TRUE(request->detach);
    EXPECT_TRUE(request->remove);
    EXPECT_TRUE(request->tty);
    EXPECT_FALSE(request->options.auto_remove);  // the CLI removes it, not the runtime
}

TEST(CommandLine, EmptyEntrypointClearsTheImages) {
    auto request = to_create_request(parse_ok({"run", "--entrypoint", "", "alpine", "echo", "a", "b"}).create,
                                     CallerContext::current(), true);
    ASSERT_TRUE(request) << request.error().to_string();
    // Recorded as a valid entrypoint + cmd; run uses COMMAND alone, ignoring the image's.
    EXPECT_EQ(request->options.entrypoint, (std::vector<std::string>{"echo"}));
    EXPECT_EQ(request->options.cmd, (std::vector<std::string>{"a", "b"}));
    auto command = to_run_command(*request, {"/image-entrypoint"}, {"image-cmd"});
    ASSERT_TRUE(command);
    EXPECT_EQ(command->program(), "echo");
    EXPECT_EQ(command->arguments(), (std::vector<std::string>{"a", "b"}));
    auto usage = parse({"run", "--entrypoint", "", "alpine"});
    ASSERT_FALSE(usage);
    EXPECT_NE(usage.error().err.find("COMMAND is required"), std::string::npos) << usage.error().err;
}

TEST(CommandLine, BadEngineVariableIsNamed) {
    ::setenv("BOXLITE_ENGINE", "xen", 1);
    auto from_env = parse({"ls"});
    ::unsetenv("BOXLITE_ENGINE");
    ASSERT_FALSE(from_env);
    EXPECT_EQ(from_env.error().status, 2);
    EXPECT_NE(from_env.error().err.find("BOXLITE_ENGINE 'xen'"), std::string::npos) << from_env.error().err;
    auto from_flag = parse({"--engine", "xen", "ls"});
    ASSERT_FALSE(from_flag);
    EXPECT_NE(from_flag.error().err.find("--engine 'xen'"), std::string::npos) << from_flag.error().err;
}

TEST(CommandLine, RunCommandFallsBackToTheImage) {
    auto inv = parse_ok({"run", "busybox"});
    auto request = to_create_request(inv.create, CallerContext::current(), true);
    ASSERT_TRUE(request);
    EXPECT_FALSE(request->command);
    auto command = to_run_command(*request, {"/entry"}, {"sh", "-c", "true"});
    ASSERT_TRUE(command);
    EXPECT_EQ(command->program(), "/entry");
    EXPECT_EQ(command->arguments(), (std::vector<std::string>{"sh", "-c", "true"}));
    auto none = to_run_command(*request, {}, {});
    ASSERT_FALSE(none);
    EXPECT_NE(none.error().message().find("defines none"), std::string::npos);
}

TEST(CommandLine, RootfsTakesNoImage) {
    auto dir = std::filesystem::temp_directory_path();
    auto inv = parse_ok({"create", "--rootfs", dir.string(), "/bin/true"});
    EXPECT_EQ(inv.command, "create");
    auto request = to_create_request(inv.create, CallerContext::current(), false);
    ASSERT_TRUE(request);
    ASSERT_TRUE(request->options.rootfs.as_path());
    EXPECT_EQ(request->command, (std::vector<std::string>{"/bin/true"}));
    EXPECT_TRUE(request->image.empty());
}

TEST(CommandLine, ExecWithAndWithoutDoubleDash) {
    auto inv = parse_ok({"exec", "-it", "-e", "X=1", "-w", "/tmp", "-u", "root", "mybox", "--", "sh", "-c", "ls -l"});
    EXPECT_EQ(inv.exec.box, "mybox");
    EXPECT_EQ(inv.exec.command, (std::vector<std::string>{"sh", "-c", "ls -l"}));
    auto command = to_exec_command(inv.exec, CallerContext::current());
    ASSERT_TRUE(command);
    EXPECT_EQ(command->program(), "sh");
    EXPECT_TRUE(command->is_tty());
    EXPECT_EQ(command->environment().size(), 1U);
    EXPECT_EQ(command->working_directory(), "/tmp");
    auto plain = parse_ok({"exec", "mybox", "ls", "-la"});
    EXPECT_EQ(plain.exec.command, (std::vector<std::string>{"ls", "-la"}));
}

TEST(CommandLine, OtherSubcommandsAndAliases) {
    for (auto alias : {"list", "ls", "ps"}) {
        auto inv = parse_ok({alias, "-a", "--format", "{{.ID}}\\t{{.Status}}"});
        EXPECT_EQ(inv.command, "list");
        EXPECT_TRUE(inv.list.all);
    }
    EXPECT_TRUE(parse_ok({"ls", "-aq"}).list.quiet);
    EXPECT_EQ(parse_ok({"start", "a", "b"}).boxes.boxes, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(parse_ok({"stop", "-t", "3", "a"}).boxes.timeout_seconds, 3U);
    EXPECT_EQ(parse_ok({"restart", "a"}).command, "restart");
    auto rm = parse_ok({"rm", "-f", "a", "b"});
    EXPECT_TRUE(rm.boxes.force);
    EXPECT_TRUE(parse_ok({"rm", "--all"}).boxes.all);
    EXPECT_EQ(parse_ok({"cp", "./x", "box:/x"}).copy.destination, "box:/x");
    EXPECT_EQ(parse_ok({"inspect", "-f", "yaml", "a"}).inspect.format, "yaml");
    EXPECT_TRUE(parse_ok({"inspect", "-l"}).inspect.latest);
    auto logs = parse_ok({"logs", "-f", "-n", "5", "a"});
    EXPECT_TRUE(logs.logs.follow);
    EXPECT_EQ(logs.logs.tail, 5U);
    EXPECT_TRUE(parse_ok({"stats", "--stream", "a"}).stats.stream);
    EXPECT_TRUE(parse_ok({"pull", "-q", "alpine"}).pull.quiet);
    EXPECT_EQ(parse_ok({"images"}).command, "images");
    auto images_rm = parse_ok({"images", "rm", "-f", "alpine", "busybox"});
    EXPECT_EQ(images_rm.command, "images rm");
    EXPECT_EQ(images_rm.images.remove_refs.size(), 2U);
    EXPECT_EQ(parse_ok({"images", "prune", "-a"}).command, "images prune");
    EXPECT_EQ(parse_ok({"load", "/tmp/layout", "--tag", "x:1"}).load.input, "/tmp/layout");
    EXPECT_EQ(parse_ok({"load", "-i", "/tmp/img.tar"}).load.input, "/tmp/img.tar");
    EXPECT_EQ(parse_ok({"info", "--format", "json"}).info.format, "json");
    EXPECT_EQ(parse_ok({"version"}).command, "version");
    const auto serve = parse_ok({"serve"}).serve;
    EXPECT_EQ(serve.host, "127.0.0.1");
    EXPECT_EQ(serve.port, 8100);
    EXPECT_FALSE(serve.api_key);
    EXPECT_FALSE(serve.allow_host_rootfs);
    const auto custom = parse_ok({"serve", "--host", "0.0.0.0", "--port", "0", "--api-key", "k", "--tls-cert", "c.pem",
                                  "--tls-key", "k.pem", "--allow-host-rootfs", "--read-timeout", "5"})
                            .serve;
    EXPECT_EQ(custom.host, "0.0.0.0");
    EXPECT_EQ(custom.port, 0);
    EXPECT_EQ(custom.api_key, "k");
    EXPECT_EQ(custom.tls_key, "k.pem");
    EXPECT_TRUE(custom.allow_host_rootfs);
    EXPECT_EQ(custom.read_timeout_seconds, 5U);
    ::setenv("BOXLITE_SERVE_API_KEY", "from-env", 1);
    EXPECT_EQ(parse_ok({"serve"}).serve.api_key, "from-env");
    ::unsetenv("BOXLITE_SERVE_API_KEY");
}

TEST(CommandLine, EngineFromEnvironment) {
    ::setenv("BOXLITE_ENGINE", "qemu", 1);
    EXPECT_EQ(parse_ok({"info"}).global.engine, EngineChoice::Qemu);
    EXPECT_EQ(parse_ok({"--engine", "kvm", "info"}).global.engine, EngineChoice::Kvm);
    ::unsetenv("BOXLITE_ENGINE");
    ::setenv("BOXLITE_HOME", "/tmp/boxlite-home-env", 1);
    EXPECT_EQ(parse_ok({"info"}).global.home, "/tmp/boxlite-home-env");
    ::unsetenv("BOXLITE_HOME");
}

TEST(CommandLine, HelpIsSuccess) {
    auto help = parse({"run", "--help"});
    ASSERT_FALSE(help);
    EXPECT_EQ(help.error().status, 0);
    EXPECT_NE(help.error().out.find("--memory"), std::string::npos);
    auto version = parse({"--version"});
    ASSERT_FALSE(version);
    EXPECT_EQ(version.error().status, 0);
    EXPECT_NE(version.error().out.find("0.1.0"), std::string::npos);
}

TEST(CommandLine, UsageErrorsExitTwoWithOneLine) {
    const std::vector<std::vector<std::string>> bad = {
        {},
        {"frobnicate"},
        {"run"},
        {"run", "--memory", "lots", "alpine"},
        {"run", "--memory", "64", "alpine"},
        {"run", "--cpus", "0", "alpine"},
        {"run", "--disk-size", "5000", "alpine"},
        {"run", "--pids-limit", "0", "alpine"},
        {"run", "--pids-limit", "many", "alpine"},
        {"run", "-p", "99999", "alpine"},
        {"run", "-v", "named:/data", "alpine"},
        {"run", "--network", "maybe", "alpine"},
        {"run", "--network", "disabled", "--allow-net", "x.com", "alpine"},
        {"run", "-d", "-i", "alpine"},
        {"run", "--name", "bad name", "alpine"},
        {"run", "-w", "relative", "alpine"},
        {"run", "--rootfs", "/definitely/not/here", "sh"},
        {"run", "--no-such-flag", "alpine"},
        {"exec", "box"},
        {"exec", "box", "--"},
        {"exec", "-d", "-i", "box", "--", "sh"},
        {"start"},
        {"rm"},
        {"rm", "-a", "box"},
        {"ls", "-q", "--format", "json"},
        {"ls", "--format", "{{.ID"},
        {"ls", "--format", "{{nosuchfunc .ID}}"},
        {"ls", "--format", "xml"},
        {"inspect"},
        {"inspect", "-l", "box"},
        {"inspect", "-f", "toml", "box"},
        {"info", "--format", "table"},
        {"cp", "/a", "/b"},
        {"cp", "a:/x", "b:/y"},
        {"cp", "onlyone"},
        {"logs"},
        {"logs", "-n", "minus", "box"},
        {"stats"},
        {"pull"},
        {"images", "rm"},
        {"load"},
        {"--engine", "vmware", "info"},
        {"stop", "-t", "soon", "box"},
        {"serve", "--port", "70000"},
        {"serve", "--read-timeout", "0"},
        {"serve", "--max-connections", "0"},
        // What the runtime would refuse at create is refused here, before any pull.
        {"run", "--allow-net", "not a host", "alpine"},
        {"create", "--allow-net", "*.*.example.com", "alpine"},
        {"run", "--cpus", std::to_string(host_cpu_count() + 1), "alpine"},
        {"run", "-p", "8080:80", "-p", "8080:81", "alpine"},
        {"create", "-p", "127.0.0.1:53:53/udp", "-p", "53:5353/udp", "alpine"},
        {"run", "--entrypoint", "", "alpine"},
        {"create", "-u", "", "alpine"},
    };
    for (const auto& args : bad) {
        auto result = parse(args);
        std::string joined;
        for (const auto& a : args) joined += a + " ";
        ASSERT_FALSE(result) << "accepted: " << joined;
        EXPECT_EQ(result.error().status, 2) << joined;
        if (!args.empty()) {
            const auto& err = result.error().err;
            EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << joined << ": " << err;
            EXPECT_TRUE(err.starts_with("Error: ")) << joined << ": " << err;
        }
    }
}

}  // namespace
}  // namespace boxlite::cli
