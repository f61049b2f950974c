// Validation, defaults and formatting of every public type.
#include <boxlite/boxlite.hpp>

#include <gtest/gtest.h>

#include <support/support.hpp>

namespace boxlite {
namespace {

using test::TempDir;

std::string config_error(const BoxOptions& o, std::uint32_t cpus = 8) {
    auto r = validate_box_options(o, cpus);
    return r ? std::string("ok") : r.error().to_string();
}

BoxOptions valid() {
    BoxOptions o;
    o.rootfs = RootfsSpec::image("alpine:latest");
    return o;
}

TEST(BoxOptions, DefaultsFollowTheReference) {
    BoxOptions o;
    EXPECT_EQ(o.cpus, 1U);
    EXPECT_EQ(o.memory_mib, 512U);
    EXPECT_FALSE(o.disk_size_gb);
    EXPECT_TRUE(o.auto_remove);
    EXPECT_FALSE(o.detach);
    EXPECT_EQ(o.rootfs, RootfsSpec::image("alpine:latest"));
    EXPECT_EQ(o.network.mode, NetworkMode::Enabled);
    EXPECT_EQ(o.security, SecurityOptions::standard());
    EXPECT_EQ(config_error(o), "ok");
}

TEST(BoxOptions, CpuAndMemoryAndDiskRanges) {
    auto o = valid();
    o.cpus = 0;
    EXPECT_EQ(config_error(o), "configuration error: CPU count must be between 1 and 8");
    o.cpus = 9;
    EXPECT_EQ(config_error(o), "configuration error: CPU count must be between 1 and 8");
    o.cpus = 8;
    EXPECT_EQ(config_error(o), "ok");
    o.memory_mib = 127;
    EXPECT_EQ(config_error(o), "configuration error: memory must be between 128 and 65536 MiB, got 127");
    o.memory_mib = 65537;
    EXPECT_NE(config_error(o), "ok");
    o.memory_mib = 65536;
    EXPECT_EQ(config_error(o), "ok");
    o.disk_size_gb = 0;
    EXPECT_EQ(config_error(o), "configuration error: disk size must be between 1 and 1024 GB, got 0");
    o.disk_size_gb = 1025;
    EXPECT_NE(config_error(o), "ok");
    o.disk_size_gb = 1024;
    EXPECT_EQ(config_error(o), "ok");
}

TEST(BoxOptions, DetachWithAutoRemoveIsRejected) {
    auto o = valid();
    o.detach = true;
    EXPECT_NE(config_error(o).find("auto_remove and detach cannot both be true"), std::string::npos);
    o.auto_remove = false;
    EXPECT_EQ(config_error(o), "ok");
}

TEST(BoxOptions, EnvWorkingDirUserAndLabels) {
    auto o = valid();
    o.working_dir = "relative";
    EXPECT_NE(config_error(o), "ok");
    o.working_dir = "/app";
    o.env = {{"A=B", "1"}};
    EXPECT_NE(config_error(o), "ok");
    o.env = {{"PATH", "/bin"}};
    EXPECT_EQ(config_error(o), "ok");
    o.user = "";
    EXPECT_NE(config_error(o), "ok");
    o.user = "1000:1000";
    o.labels = {{"", "x"}};
    EXPECT_NE(config_error(o), "ok");
    o.labels = {{"team", "x"}};
    o.entrypoint = std::vector<std::string>{};
    EXPECT_NE(config_error(o), "ok");
}

TEST(RootfsSpec, ImageReferenceAndPath) {
    EXPECT_FALSE(validate(RootfsSpec::image("")));
    EXPECT_FALSE(validate(RootfsSpec::image("alpine latest")));
    EXPECT_TRUE(validate(RootfsSpec::image("ghcr.io/org/app@sha256:abc")));
    TempDir dir;
    EXPECT_TRUE(validate(RootfsSpec::path(dir.path())));
    auto missing = validate(RootfsSpec::path(dir.path() / "nope"));
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::Config);
    EXPECT_EQ(fmt::format("{}", RootfsSpec::image("alpine:latest")), "image alpine:latest");
}

TEST(VolumeSpec, HostPathMustExistAndGuestPathBeAbsolute) {
    TempDir dir;
    VolumeSpec v{dir.path().string(), "/data", true};
    EXPECT_TRUE(validate(v));
    EXPECT_EQ(fmt::format("{}", v), dir.path().string() + ":/data:ro");
    v.host_path = (dir.path() / "missing").string();
    auto missing = validate(v);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().to_string(),
              fmt::format("configuration error: volume host path {} does not exist; create it first, or leave the "
                          "host path empty for an anonymous volume",
                          v.host_path));
    v.host_path = dir.path().string();
    for (const char* bad : {"data", "/", "/a/../etc", "", "//", "/./"}) {
        v.guest_path = bad;
        auto refused = validate(v);
        ASSERT_FALSE(refused) << bad;
        EXPECT_EQ(refused.error().kind(), ErrorKind::Config) << bad;
    }
    auto o = valid();
    o.volumes = {{dir.path().string(), "/x", false}, {dir.path().string(), "/x", true}};
    EXPECT_EQ(config_error(o),
              "configuration error: two volumes are mounted at guest path /x; each guest path takes one volume");
    o.volumes = {{dir.path().string(), "/x/", false}, {"", "//x/.", true}};  // one path, two spellings
    EXPECT_NE(config_error(o).find("two volumes are mounted at guest path /x;"), std::string::npos);
    o.volumes = {{dir.path().string(), "/x", false}, {"", "/x/y", true}};  // nested is fine
    EXPECT_EQ(config_error(o), "ok");
}

TEST(VolumeSpec, EachBadSpecNamesWhatIsWrongAndWhatIsAllowed) {
    TempDir dir;
    const auto host = dir.path().string();
    auto message = [](const VolumeSpec& v) {
        auto r = validate(v);
        EXPECT_FALSE(r) << fmt::format("{}", v);
        if (r) return std::string();
        EXPECT_EQ(r.error().kind(), ErrorKind::Config);
        return r.error().message();
    };
    EXPECT_EQ(message({"relative/dir", "/data", false}),
              "volume host path 'relative/dir' is relative; it must be an absolute path (or empty for an anonymous "
              "volume)");
    EXPECT_EQ(message({host, "data", false}), "volume guest path 'data' must be an absolute path in the box");
    EXPECT_EQ(message({host, "/srv/../etc", false}), "volume guest path '/srv/../etc' must not contain '..'");
    EXPECT_EQ(message({host, "/", false}), "volume guest path must not be '/' (mount below it, e.g. /data)");
    for (const char* reserved : {"/proc", "/proc/sys", "/sys", "//sys/", "/dev", "/dev/shm", "/./dev"}) {
        const auto text = message({host, reserved, false});
        EXPECT_NE(text.find("mount elsewhere (not /proc, /sys or /dev)"), std::string::npos) << text;
        EXPECT_NE(text.find(fmt::format("'{}'", reserved)), std::string::npos) << text;
    }
    // Names that only start like the reserved ones are ordinary paths.
    for (const char* fine : {"/process", "/system", "/devices", "/srv/proc", "/data/dev"}) {
        EXPECT_TRUE(validate(VolumeSpec{host, fine, false})) << fine;
    }
    // Anonymous: no host path; the guest path rules are the same.
    EXPECT_TRUE(validate(VolumeSpec{"", "/scratch", false}));
    EXPECT_FALSE(validate(VolumeSpec{"", "/proc/x", false}));
    EXPECT_EQ(fmt::format("{}", VolumeSpec{"", "/scratch", true}), "/scratch:ro");
    EXPECT_EQ(anonymous_volume_path("/home/b/boxes/01X", 2), std::filesystem::path("/home/b/boxes/01X/volumes/2"));
}

TEST(NetworkSpec, AllowNetPatterns) {
    for (const char* good :
         {"example.com", "*.example.com", "api.github.com", "10.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "localhost"}) {
        EXPECT_TRUE(validate_allow_net_pattern(good)) << good;
    }
    for (const char* bad : {"", "*", "*.", "a..b", "-a.com", "a-.com", "10.0.0.0/33", "::/129", "http://x.com",
                            "a.*.com", "exa mple.com", "10.0.0.0/"}) {
        EXPECT_FALSE(validate_allow_net_pattern(bad)) << bad;
    }
    NetworkSpec n{NetworkMode::Disabled, {"example.com"}};
    EXPECT_FALSE(validate(n));
    n.mode = NetworkMode::Enabled;
    EXPECT_TRUE(validate(n));
    EXPECT_EQ(fmt::format("{}", n), "enabled (allow: example.com)");
}

TEST(PortSpec, RangesAndNotation) {
    PortSpec p;
    EXPECT_FALSE(validate(p));  // guest port 0
    p.guest_port = 80;
    EXPECT_TRUE(validate(p));
    EXPECT_EQ(fmt::format("{}", p), "0.0.0.0:auto:80/tcp");
    p.host_port = 8080;
    p.protocol = PortProtocol::Udp;
    p.host_ip = "::1";
    EXPECT_EQ(fmt::format("{}", p), "[::1]:8080:80/udp");
    p.host_ip = "localhost";
    EXPECT_FALSE(validate(p));
    auto o = valid();
    o.ports = {PortSpec{8080, 80, PortProtocol::Tcp, "0.0.0.0"}, PortSpec{8080, 81, PortProtocol::Tcp, "0.0.0.0"}};
    EXPECT_NE(config_error(o).find("forwarded twice"), std::string::npos);
    o.ports[1].protocol = PortProtocol::Udp;
    EXPECT_EQ(config_error(o), "ok");
}

TEST(Secret, PlaceholderDefaultAndValidation) {
    Secret s{"GITHUB_TOKEN", "ghp_x", {"api.github.com"}, ""};
    EXPECT_EQ(s.effective_placeholder(), "<BOXLITE_SECRET:GITHUB_TOKEN>");
    EXPECT_TRUE(validate(s));
    EXPECT_EQ(fmt::format("{}", s), "GITHUB_TOKEN -> api.github.com (<BOXLITE_SECRET:GITHUB_TOKEN>)");
    EXPECT_EQ(fmt::format("{}", s).find("ghp_x"), std::string::npos);
    s.hosts.clear();
    EXPECT_FALSE(validate(s));
    s.hosts = {"not a host"};
    EXPECT_FALSE(validate(s));
    s.hosts = {"*.github.com"};
    s.name = "1BAD";
    EXPECT_FALSE(validate(s));
    auto o = valid();
    o.secrets = {Secret{"A", "1", {"a.com"}, ""}, Secret{"A", "2", {"b.com"}, ""}};
    EXPECT_NE(config_error(o).find("defined twice"), std::string::npos);
}

TEST(SecurityOptions, PresetsAndBuilder) {
    const auto dev = SecurityOptions::development();
    EXPECT_FALSE(dev.jailer_enabled);
    EXPECT_FALSE(dev.seccomp_enabled);
    const auto standard = SecurityOptions::standard();
    EXPECT_TRUE(standard.jailer_enabled);
    EXPECT_TRUE(standard.seccomp_enabled);
    const auto max = SecurityOptions::maximum();
    EXPECT_EQ(max.resource_limits.max_open_files, 1024U);
    EXPECT_EQ(max.uid, 65534U);
    EXPECT_EQ(preset_name(max), "maximum");
    EXPECT_EQ(fmt::format("{}", dev), "development (jailer off, seccomp off)");

    auto built = SecurityOptionsBuilder::standard().max_open_files(256).max_memory(Bytes::from_mib(256)).build();
    ASSERT_TRUE(built);
    EXPECT_EQ(built->resource_limits.max_open_files, 256U);
    EXPECT_EQ(built->resource_limits.max_memory, 256ULL << 20);
    EXPECT_EQ(preset_name(*built), "custom");
    EXPECT_FALSE(SecurityOptionsBuilder::standard().max_processes(0).build());
    EXPECT_FALSE(SecurityOptionsBuilder::standard().chroot_base("relative").build());
    EXPECT_EQ(fmt::format("{}", built->resource_limits), "max_open_files=256 max_memory=268435456");
    EXPECT_EQ(fmt::format("{}", ResourceLimits{}), "none");
}

TEST(Bytes, ParseAndFormat) {
    EXPECT_EQ(Bytes::parse("512M")->count(), 512ULL << 20);
    EXPECT_EQ(Bytes::parse("1GiB")->count(), 1ULL << 30);
    EXPECT_EQ(Bytes::parse("4096")->count(), 4096U);
    EXPECT_EQ(Bytes::parse("2g")->gib(), 2U);
    EXPECT_FALSE(Bytes::parse("M"));
    EXPECT_FALSE(Bytes::parse("12X"));
    EXPECT_FALSE(Bytes::parse("99999999999999999999"));
    EXPECT_FALSE(Bytes::parse("17179869184G"));
    EXPECT_EQ(fmt::format("{}", Bytes::from_mib(512)), "512 MiB");
    EXPECT_EQ(fmt::format("{}", Bytes(1536ULL << 20)), "1.5 GiB");
    EXPECT_EQ(fmt::format("{}", Bytes(100)), "100 B");
}

TEST(Seconds, ParseFormatAndChrono) {
    EXPECT_EQ(Seconds::parse("30")->count(), 30U);
    EXPECT_EQ(Seconds::parse("5m")->count(), 300U);
    EXPECT_EQ(Seconds::parse("2h")->count(), 7200U);
    EXPECT_FALSE(Seconds::parse("x"));
    EXPECT_FALSE(Seconds::parse("5d"));
    EXPECT_EQ(fmt::format("{}", Seconds{30}), "30s");
    const std::chrono::milliseconds ms = Seconds{2};
    EXPECT_EQ(ms.count(), 2000);
    auto cmd = BoxCommand("sleep").arg("1").timeout(Seconds{30});
    EXPECT_EQ(cmd.timeout_value()->count(), 30000);
}

TEST(ContainerID, GenerateParseShort) {
    const auto id = ContainerID::generate();
    EXPECT_EQ(id.str().size(), 64U);
    EXPECT_EQ(id.short_id().size(), 12U);
    EXPECT_EQ(*ContainerID::parse(id.str()), id);
    auto upper = id.str();
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(*ContainerID::parse(upper), id);
    EXPECT_FALSE(ContainerID::parse("abc"));
    EXPECT_FALSE(ContainerID::parse(std::string(64, 'g')));
    EXPECT_EQ(fmt::format("{}", id), id.str());
}

TEST(BoxID, ShortPrefixAndAliases) {
    const auto id = BoxID::generate();
    EXPECT_EQ(id.short_id(), id.str().substr(0, 12));
    EXPECT_TRUE(BoxID::is_valid_prefix("01j"));
    EXPECT_FALSE(BoxID::is_valid_prefix("01U"));
    EXPECT_FALSE(BoxID::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"));  // > 128 bits
    auto lower = id.str();
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(*BoxID::parse(lower), id);
    EXPECT_EQ(fmt::format("{}", id), id.str());
}

TEST(BoxStatus, PredicatesAndTransitions) {
    using enum BoxStatus;
    EXPECT_TRUE(can_start(Configured));
    EXPECT_TRUE(can_start(Stopped));
    EXPECT_FALSE(can_start(Running));
    EXPECT_TRUE(can_stop(Running));
    EXPECT_FALSE(can_stop(Stopped));
    EXPECT_TRUE(can_remove(Stopped));
    EXPECT_FALSE(can_remove(Running));
    EXPECT_TRUE(can_exec(Stopped));
    EXPECT_FALSE(can_exec(Stopping));
    EXPECT_TRUE(is_transient(Stopping));
    EXPECT_TRUE(is_active(Running));
    BoxState state;
    auto bad = state.transition_to(Stopping);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().to_string(), "invalid state: cannot transition from configured to stopping");
    EXPECT_EQ(fmt::format("{}", Running), "running");
    EXPECT_EQ(parse_box_status("stopped"), Stopped);
    EXPECT_FALSE(parse_box_status("paused"));
}

TEST(BoxStatus, EveryPredicate) {
    using enum BoxStatus;
    struct Row {
        BoxStatus status;
        bool running, configured, stopped, transient, start, stop, remove, exec;
    };
    const Row rows[] = {
        {Unknown, false, false, false, false, false, false, true, false},
        {Configured, false, true, false, false, true, false, true, true},
        {Running, true, false, false, false, false, true, false, true},
        {Stopping, false, false, false, true, false, false, false, false},
        {Stopped, false, false, true, false, true, false, true, true},
    };
    for (const auto& r : rows) {
        SCOPED_TRACE(to_string(r.status));
        EXPECT_EQ(is_running(r.status), r.running);
        EXPECT_EQ(is_active(r.status), r.running);
        EXPECT_EQ(is_configured(r.status), r.configured);
        EXPECT_EQ(is_stopped(r.status), r.stopped);
        EXPECT_EQ(is_transient(r.status), r.transient);
        EXPECT_EQ(can_start(r.status), r.start);
        EXPECT_EQ(can_stop(r.status), r.stop);
        EXPECT_EQ(can_remove(r.status), r.remove);
        EXPECT_EQ(can_exec(r.status), r.exec);
        EXPECT_EQ(parse_box_status(to_string(r.status)), r.status);
    }
}

TEST(BoxStatus, TheWholeTransitionTable) {
    using enum BoxStatus;
    const BoxStatus all[] = {Unknown, Configured, Running, Stopping, Stopped};
    // allowed[from][to], in the order of `all`.
    const bool allowed[5][5] = {
        /* Unknown    -> */ {true, true, true, true, true},
        /* Configured -> */ {true, false, true, false, true},
        /* Running    -> */ {true, false, false, true, true},
        /* Stopping   -> */ {true, false, false, false, true},
        /* Stopped    -> */ {true, false, true, false, false},
    };
    for (std::size_t f = 0; f < 5; ++f) {
        for (std::size_t t = 0; t < 5; ++t) {
            EXPECT_EQ(can_transition(all[f], all[t]), allowed[f][t])
                << to_string(all[f]) << " -> " << to_string(all[t]);
            BoxState state;
            state.status = all[f];
            auto moved = state.transition_to(all[t]);
            EXPECT_EQ(moved.has_value(), allowed[f][t]);
            EXPECT_EQ(state.status, allowed[f][t] ? all[t] : all[f]);
            if (!moved) {
                EXPECT_EQ(moved.error().kind(), ErrorKind::InvalidState);
            }
        }
    }
}

TEST(BoxCommand, BuilderKeepsEverySetting) {
    auto cmd = BoxCommand("env").arg("-0").env("A", "1").env("B", "2").working_dir("/srv").tty(true).user("1000:1000");
    EXPECT_EQ(cmd.program(), "env");
    EXPECT_EQ(cmd.arguments(), std::vector<std::string>{"-0"});
    EXPECT_EQ(cmd.environment(), (std::vector<std::pair<std::string, std::string>>{{"A", "1"}, {"B", "2"}}));
    EXPECT_EQ(cmd.working_directory(), "/srv");
    EXPECT_TRUE(cmd.is_tty());
    EXPECT_EQ(cmd.user_name(), "1000:1000");
    EXPECT_FALSE(cmd.timeout_value());
    // Defaults: nothing set means the box's own (image, BoxOptions) values.
    const BoxCommand plain("true");
    EXPECT_TRUE(plain.arguments().empty());
    EXPECT_TRUE(plain.environment().empty());
    EXPECT_FALSE(plain.working_directory());
    EXPECT_FALSE(plain.is_tty());
    EXPECT_FALSE(plain.user_name());
    // The lvalue form builds the same command as the chained temporary.
    BoxCommand step("env");
    step.arg("-0");
    step.env("A", "1");
    step.env("B", "2");
    step.working_dir("/srv");
    step.tty(true);
    step.user("1000:1000");
    EXPECT_EQ(step, cmd);
}

TEST(SecurityOptions, TheWholeOptionsAreValidatedWithTheBox) {
    auto o = valid();
    o.security.chroot_base = "relative/jail";
    EXPECT_EQ(config_error(o),
              "configuration error: chroot_base relative/jail must be an absolute path without '..' "
              "(or disable chroot)");
    o.security.chroot_base = "/srv/../etc";
    EXPECT_NE(config_error(o), "ok");
    o.security.chroot_enabled = false;  // the base is not used then
    EXPECT_EQ(config_error(o), "ok");
    o.security = SecurityOptions::standard();
    o.security.env_allowlist.push_back("BAD NAME");
    EXPECT_NE(config_error(o).find("env_allowlist entry 'BAD NAME'"), std::string::npos);
    o.security = SecurityOptions::standard();
    o.security.resource_limits.max_open_files = 0;
    EXPECT_NE(config_error(o).find("security.resource_limits: resource limit max_open_files"), std::string::npos)
        << config_error(o);
    for (const auto& preset :
         {SecurityOptions::development(), SecurityOptions::standard(), SecurityOptions::maximum()}) {
        EXPECT_TRUE(validate(preset));
    }
    // The builder applies the same rules.
    EXPECT_FALSE(SecurityOptionsBuilder::standard().allow_env("A=B").build());
    EXPECT_TRUE(SecurityOptionsBuilder::standard().chroot_enabled(false).chroot_base("relative").build());
}

TEST(BoxOptions, EntrypointAndCmdArguments) {
    auto o = valid();
    o.entrypoint = std::vector<std::string>{""};
    EXPECT_EQ(config_error(o), "configuration error: entrypoint, when set, must name a program");
    o.entrypoint = std::vector<std::string>{"/bin/sh", std::string("-c\0x", 4)};
    EXPECT_EQ(config_error(o), "configuration error: entrypoint and cmd arguments must not contain NUL");
    o.entrypoint.reset();
    o.cmd = std::vector<std::string>{std::string("a\0b", 3)};
    EXPECT_NE(config_error(o), "ok");
    o.cmd = std::vector<std::string>{};  // an empty cmd is allowed: the entrypoint alone runs
    EXPECT_EQ(config_error(o), "ok");
}

TEST(Formatters, EnumsAndRuntimeOptions) {
    EXPECT_EQ(fmt::format("{}", NetworkMode::Enabled), "enabled");
    EXPECT_EQ(fmt::format("{}", NetworkMode::Disabled), "disabled");
    EXPECT_EQ(fmt::format("{}", PortProtocol::Tcp), "tcp");
    EXPECT_EQ(fmt::format("{:>5}", PortProtocol::Udp), "  udp");  // the usual string specs apply
    BoxliteOptions options;
    options.home_dir = "/var/lib/boxlite";
    options.image_registries = {"ghcr.io", "docker.io"};
    options.engine = EngineKind::Namespace;
    EXPECT_EQ(fmt::format("{}", options), "home /var/lib/boxlite, engine namespace, registries ghcr.io, docker.io");
    options.image_registries.clear();
    EXPECT_EQ(fmt::format("{}", options), "home /var/lib/boxlite, engine namespace, registries none");
}

TEST(Formatters, InfoStateConfigCommandMetrics) {
    BoxConfig config;
    config.name = "web";
    config.engine = "mock";
    BoxState state;
    EXPECT_EQ(fmt::format("{}", state), "configured");
    state.status = BoxStatus::Running;
    state.handle = EngineHandle{42, 7, "unix:/tmp/a.sock", {}};
    EXPECT_EQ(fmt::format("{}", state), "running (pid 42 at unix:/tmp/a.sock)");
    const auto info = BoxInfo::from(config, state);
    EXPECT_EQ(info.pid, 42);
    EXPECT_TRUE(info.running());
    EXPECT_EQ(fmt::format("{}", info), fmt::format("{} web running alpine:latest 1cpu 512MiB", config.id.short_id()));
    EXPECT_NE(fmt::format("{}", config).find("(web) on mock: image alpine:latest, 1 cpu, 512 MiB"), std::string::npos);
    EXPECT_EQ(fmt::format("{}", BoxCommand("python3").args({"-c", "print('hi')"})),
              R"(python3 -c 'print('\''hi'\'')')");
    RuntimeMetrics rm;
    rm.boxes_created_total = 3;
    EXPECT_NE(fmt::format("{}", rm).find("boxes_created_total=3"), std::string::npos);
    BoxMetrics bm;
    bm.commands_executed_total = 2;
    EXPECT_NE(fmt::format("{}", bm).find("commands_executed_total=2"), std::string::npos);
    EXPECT_EQ(fmt::format("{}", EngineKind::Namespace), "namespace");
}

TEST(BoxInfo, PortsAreTheBindingsWhileRunningAndTheRequestOtherwise) {
    BoxConfig config;
    config.options.ports = {PortSpec{std::nullopt, 80, PortProtocol::Tcp, "127.0.0.1"}};
    BoxState state;
    EXPECT_EQ(BoxInfo::from(config, state).ports, config.options.ports);
    state.status = BoxStatus::Running;
    const std::vector<PortSpec> bound = {PortSpec{40123, 80, PortProtocol::Tcp, "127.0.0.1"}};
    state.handle = EngineHandle{42, 7, "unix:/tmp/a.sock", bound};
    EXPECT_EQ(BoxInfo::from(config, state).ports, bound);
    // The bindings are stored with the handle and read back.
    const nlohmann::json stored = state;
    EXPECT_EQ(stored.get<BoxState>().handle->ports, bound);
    // A handle stored before ports existed reads as none.
    auto old = stored;
    old["handle"].erase("ports");
    EXPECT_TRUE(old.get<BoxState>().handle->ports.empty());
    state.status = BoxStatus::Stopped;
    state.handle.reset();
    EXPECT_EQ(BoxInfo::from(config, state).ports, config.options.ports);
}

TEST(BoxliteOptions, HomeFromEnvironmentAndEngineKind) {
    const char* original_home = std::getenv("HOME");
    const std::string saved_home = original_home != nullptr ? original_home : "";
    ::setenv("BOXLITE_HOME", "/tmp/boxlite-home-test", 1);
    EXPECT_EQ(BoxliteOptions{}.home_dir, "/tmp/boxlite-home-test");
    ::unsetenv("BOXLITE_HOME");
    ::setenv("HOME", "/home/someone", 1);
    EXPECT_EQ(BoxliteOptions{}.home_dir, "/home/someone/.boxlite");
    ::setenv("BOXLITE_ENGINE", "namespace", 1);
    EXPECT_EQ(BoxliteOptions::from_environment()->engine, EngineKind::Namespace);
    ::setenv("BOXLITE_ENGINE", "docker", 1);
    auto bad = BoxliteOptions::from_environment();
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().to_string(),
              "unsupported engine kind: BOXLITE_ENGINE: 'docker' (allowed: auto, kvm, qemu, namespace, mock)");
    ::unsetenv("BOXLITE_ENGINE");
    ::setenv("HOME", saved_home.c_str(), 1);
    EXPECT_EQ(BoxliteOptions{}.image_registries, std::vector<std::string>{"docker.io"});
}

TEST(BoxliteOptions, LogCapIsCheckedAndTakenFromTheEnvironment) {
    BoxliteOptions options;
    EXPECT_EQ(options.log_max_bytes, std::uint64_t{4} << 20);
    EXPECT_TRUE(options.validate());
    options.log_max_bytes = 1000;
    auto small = options.validate();
    ASSERT_FALSE(small);
    EXPECT_EQ(small.error().to_string(),
              "configuration error: log_max_bytes 1000 is out of range (allowed: 65536 to 1073741824 bytes)");
    options.log_max_bytes = std::uint64_t{2} << 30;
    EXPECT_FALSE(options.validate());
    // open_runtime refuses it before touching the home.
    TempDir home;
    options.home_dir = home.path() / "home";
    auto runtime = open_runtime(options);
    ASSERT_FALSE(runtime);
    EXPECT_EQ(runtime.error().kind(), ErrorKind::Config);
    EXPECT_FALSE(std::filesystem::exists(options.home_dir));

    ::setenv("BOXLITE_LOG_MAX_BYTES", "1048576", 1);
    EXPECT_EQ(BoxliteOptions::from_environment()->log_max_bytes, std::uint64_t{1} << 20);
    for (const char* bad : {"lots", "-5", "12k", "99"}) {
        ::setenv("BOXLITE_LOG_MAX_BYTES", bad, 1);
        auto parsed = BoxliteOptions::from_environment();
        ASSERT_FALSE(parsed) << bad;
        EXPECT_NE(parsed.error().to_string().find("BOXLITE_LOG_MAX_BYTES"), std::string::npos) << bad;
    }
    ::unsetenv("BOXLITE_LOG_MAX_BYTES");
}

TEST(Json, BoxConfigAndStateRoundTrip) {
    TempDir dir;
    BoxConfig config;
    config.name = "rt";
    config.engine = "namespace";
    auto& o = config.options;
    o.cpus = 2;
    o.disk_size_gb = 10;
    o.working_dir = "/app";
    o.env = {{"B", "2"}, {"A", "1"}, {"B", "3"}};
    o.rootfs = RootfsSpec::path(dir.path());
    o.volumes = {{dir.path().string(), "/data", true}};
    o.network = NetworkSpec{NetworkMode::Enabled, {"*.example.com", "10.0.0.0/8"}};
    o.ports = {PortSpec{std::nullopt, 80, PortProtocol::Udp, "127.0.0.1"}};
    o.auto_remove = false;
    o.detach = true;
    o.security = SecurityOptions::maximum();
    o.resource_limits.max_memory = 1 << 30;
    o.labels = {{"team", "infra"}};
    o.secrets = {Secret{"TOKEN", "v", {"api.example.com"}, ""}};
    o.entrypoint = std::vector<std::string>{"/bin/sh"};
    o.cmd = std::vector<std::string>{"-c", "true"};
    o.user = "1000";
    auto back = parse_json_as<BoxConfig>(to_json_text(config), "config");
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(*back, config);

    BoxState state;
    state.status = BoxStatus::Running;
    state.handle = EngineHandle{7, 99, "unix:/x", {}};
    state.container_id = ContainerID::generate();
    state.started_at = std::chrono::system_clock::now();
    state.stages.image_prepare_ms = 840;
    state.stages.box_spawn_ms = 0;
    auto state_back = parse_json_as<BoxState>(to_json_text(state), "state");
    ASSERT_TRUE(state_back);
    EXPECT_EQ(*state_back, state);
}

TEST(Json, HostileInputIsAnErrorNotACrash) {
    for (const char* text : {"", "{", "[]", R"({"id": 5})", R"({"id": "not-a-ulid"})",
                             R"({"id": "01JJNH8QW3ZKABCDEFGHJKMNPQ", "options": {"cpus": "many"}})",
                             R"({"id": "01JJNH8QW3ZKABCDEFGHJKMNPQ", "created_at": "yesterday"})",
                             R"({"id": "01JJNH8QW3ZKABCDEFGHJKMNPQ", "options": {"rootfs": {}}})",
                             R"({"id": "01JJNH8QW3ZKABCDEFGHJKMNPQ", "options": {"env": [["A"]]}})",
                             R"({"id": "01JJNH8QW3ZKABCDEFGHJKMNPQ", "options": {"network": {"mode": "maybe"}}})"}) {
        auto r = parse_json_as<BoxConfig>(text, "config");
        ASSERT_FALSE(r) << text;
        EXPECT_EQ(r.error().kind(), ErrorKind::MetadataError) << text;
    }
    // A container id must be one.
    auto bad_container = parse_json_as<BoxState>(R"({"status": "running", "container_id": "abc"})", "state");
    ASSERT_FALSE(bad_container);
    EXPECT_EQ(bad_container.error().kind(), ErrorKind::MetadataError);
    EXPECT_NE(bad_container.error().message().find("container id 'abc'"), std::string::npos)
        << bad_container.error().message();
    // Missing keys take defaults (older records still load).
    auto minimal = parse_json_as<BoxConfig>(R"({"id": "01JJNH8QW3ZKABCDEFGHJKMNPQ"})", "config");
    ASSERT_TRUE(minimal) << minimal.error().to_string();
    EXPECT_EQ(minimal->options, BoxOptions{});
}

TEST(Time, Rfc3339RoundTripAndRejects) {
    const auto now = std::chrono::system_clock::now();
    EXPECT_EQ(*detail::parse_rfc3339(detail::format_rfc3339(now)), now);
    EXPECT_EQ(detail::format_rfc3339(std::chrono::system_clock::time_point{}), "1970-01-01T00:00:00.000000000Z");
    EXPECT_TRUE(detail::parse_rfc3339("2024-02-29T23:59:59Z"));
    for (const char* bad : {"2024-13-01T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00+01:00",
                            "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00.1234567890Z", "x"}) {
        EXPECT_FALSE(detail::parse_rfc3339(bad)) << bad;
    }
}

}  // namespace
}  // namespace boxlite
