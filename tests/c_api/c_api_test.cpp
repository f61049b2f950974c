// The C API's error paths, from C++: the options JSON parser (every key, every kind of bad input),
// NULL for every required pointer, errors that no exception crosses, and a freed handle used again
// (caught by ASan; that test exists only in the ASan build). The happy paths on a real box are
// tests/c_api/c_api_program.c's, compiled as C.
#include <boxlite/c/boxlite.h>

#include "c_api/options_json.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using boxlite::ErrorKind;
using boxlite::capi::parse_create_options;

// --- the options JSON ---------------------------------------------------------------------------

TEST(CApiOptionsJson, EveryKeyOfTheSchemaIsRead) {
    auto parsed = parse_create_options(R"({
        "name": "web",
        "rootfs": {"Image": "alpine:3.19"},
        "cpus": 2, "memory_mib": 1024, "disk_size_gb": 8, "working_dir": "/srv",
        "env": [["A", "1"], ["B", "two"]],
        "volumes": [{"host_path": "/tmp", "guest_path": "/data", "read_only": true}],
        "network": {"mode": "enabled", "allow_net": ["example.com", "10.0.0.0/8"]},
        "ports": [{"host_port": 8080, "guest_port": 80, "protocol": "Tcp", "host_ip": "127.0.0.1"},
                  {"host_port": null, "guest_port": 53, "protocol": "udp", "host_ip": null}],
        "auto_remove": false, "detach": true,
        "advanced": {"security": {"jailer_enabled": false, "seccomp_enabled": true, "uid": 1000, "gid": null,
                                  "new_pid_ns": true, "new_net_ns": false, "chroot_base": "/srv/jail",
                                  "chroot_enabled": false, "close_fds": true, "sanitize_env": false,
                                  "env_allowlist": ["PATH"], "network_enabled": true, "sandbox_profile": null,
                                  "resource_limits": {"max_open_files": 64, "max_file_size": null,
                                                      "max_processes": 10, "max_memory": 1048576,
                                                      "max_cpu_time": 30}},
                     "isolate_mounts": true, "health_check": null},
        "entrypoint": ["/bin/sh"], "cmd": ["-c", "true"], "user": "1000:1000",
        "secrets": [{"name": "TOKEN", "value": "s3cret", "hosts": ["api.example.com"]}]
    })");
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    const auto& o = parsed->options;
    EXPECT_EQ(parsed->name, "web");
    ASSERT_TRUE(o.rootfs.as_image());
    EXPECT_EQ(o.rootfs.as_image()->reference, "alpine:3.19");
    EXPECT_EQ(o.cpus, 2u);
    EXPECT_EQ(o.memory_mib, 1024u);
    EXPECT_EQ(o.disk_size_gb, 8u);
    EXPECT_EQ(o.working_dir, "/srv");
    ASSERT_EQ(o.env.size(), 2u);
    EXPECT_EQ(o.env[1].second, "two");
    ASSERT_EQ(o.volumes.size(), 1u);
    EXPECT_TRUE(o.volumes[0].read_only);
    EXPECT_EQ(o.network.allow_net.size(), 2u);
    ASSERT_EQ(o.ports.size(), 2u);
    EXPECT_EQ(o.ports[0].host_port, 8080);
    EXPECT_EQ(o.ports[0].host_ip, "127.0.0.1");
    EXPECT_EQ(o.ports[1].protocol, boxlite::PortProtocol::Udp);
    EXPECT_FALSE(o.ports[1].host_port);
    EXPECT_EQ(o.ports[1].host_ip, "0.0.0.0");
    EXPECT_FALSE(o.auto_remove);
    EXPECT_TRUE(o.detach);
    EXPECT_FALSE(o.security.jailer_enabled);
    EXPECT_EQ(o.security.uid, 1000u);
    EXPECT_FALSE(o.security.gid);
    EXPECT_FALSE(o.security.new_net_ns);
    EXPECT_EQ(o.security.chroot_base, "/srv/jail");
    EXPECT_EQ(o.security.env_allowlist, std::vector<std::string>{"PATH"});
    EXPECT_EQ(o.security.resource_limits.max_open_files, 64u);
    EXPECT_FALSE(o.security.resource_limits.max_file_size);
    EXPECT_EQ(o.security.resource_limits.max_cpu_time, 30u);
    EXPECT_EQ(o.entrypoint, std::vector<std::string>{"/bin/sh"});
    EXPECT_EQ(o.user, "1000:1000");
    ASSERT_EQ(o.secrets.size(), 1u);
    EXPECT_EQ(o.secrets[0].hosts, std::vector<std::string>{"api.example.com"});
}

TEST(CApiOptionsJson, EmptyAndNullGiveTheDefaults) {
    for (const char* text : {"{}", "null", "{\"cpus\": null, \"memory_mib\": null, \"disk_size_gb\": null}"}) {
        auto parsed = parse_create_options(text);
        ASSERT_TRUE(parsed) << text << ": " << parsed.error().to_string();
        EXPECT_EQ(parsed->options, boxlite::BoxOptions{}) << text;
        EXPECT_FALSE(parsed->name);
    }
    auto path = parse_create_options(R"({"rootfs": {"RootfsPath": "/srv/root"}})");
    ASSERT_TRUE(path);
    ASSERT_TRUE(path->options.rootfs.as_path());
    EXPECT_EQ(path->options.rootfs.as_path()->path, "/srv/root");
}

struct BadOptions {
    const char* json;
    ErrorKind kind;
    const char* names;  ///< the message must contain it
};

class CApiOptionsJsonRejects : public ::testing::TestWithParam<BadOptions> {};

TEST_P(CApiOptionsJsonRejects, NamingTheKey) {
    const auto& bad = GetParam();
    auto parsed = parse_create_options(bad.json);
    ASSERT_FALSE(parsed) << bad.json;
    EXPECT_EQ(parsed.error().kind(), bad.kind) << bad.json << ": " << parsed.error().to_string();
    EXPECT_NE(parsed.error().message().find(bad.names), std::string::npos)
        << bad.json << ": " << parsed.error().to_string();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CApiOptionsJsonRejects,
    ::testing::Values(
        BadOptions{"{\"cpus\": 1", ErrorKind::InvalidArgument, "not valid JSON"},
        BadOptions{"", ErrorKind::InvalidArgument, "not valid JSON"},
        BadOptions{"[1, 2]", ErrorKind::Config, "must be a JSON object"},
        BadOptions{"{\"cpu\": 1}", ErrorKind::Config, "'cpu'"},
        BadOptions{"{\"cpus\": \"2\"}", ErrorKind::Config, "'cpus' must be an integer, got a string"},
        BadOptions{"{\"cpus\": 1.5}", ErrorKind::Config, "'cpus' must be an integer"},
        BadOptions{"{\"cpus\": 0}", ErrorKind::Config, "'cpus' is 0, out of range"},
        BadOptions{"{\"cpus\": 256}", ErrorKind::Config, "'cpus' is 256"},
        BadOptions{"{\"cpus\": -1}", ErrorKind::Config, "'cpus' is -1"},
        BadOptions{"{\"memory_mib\": 64}", ErrorKind::Config, "'memory_mib' is 64"},
        BadOptions{"{\"memory_mib\": 99999999999999999999}", ErrorKind::Config, "memory_mib"},
        BadOptions{"{\"disk_size_gb\": 5000}", ErrorKind::Config, "'disk_size_gb'"},
        BadOptions{"{\"working_dir\": 7}", ErrorKind::Config, "'working_dir' must be a string"},
        BadOptions{"{\"env\": {\"A\": \"1\"}}", ErrorKind::Config, "'env' must be an array"},
        BadOptions{"{\"env\": [[\"A\"]]}", ErrorKind::Config, "'env[0]'"},
        BadOptions{"{\"env\": [[\"A\", 1]]}", ErrorKind::Config, "'env[0][1]' must be a string"},
        BadOptions{"{\"rootfs\": \"alpine\"}", ErrorKind::Config, "'rootfs' must be an object"},
        BadOptions{"{\"rootfs\": {\"image\": \"alpine\"}}", ErrorKind::Config, "'rootfs.image'"},
        BadOptions{"{\"rootfs\": {}}", ErrorKind::Config, "exactly one of Image or RootfsPath"},
        BadOptions{"{\"volumes\": [{\"host_path\": \"/a\", \"guest_path\": \"/b\", \"readonly\": true}]}",
                   ErrorKind::Config, "'volumes[0].readonly' (the key is read_only)"},
        BadOptions{"{\"volumes\": [{\"guest_path\": \"/b\"}]}", ErrorKind::Config,
                   "'volumes[0].host_path' is required"},
        BadOptions{"{\"volumes\": [{\"host_path\": \"/a\", \"guest_path\": \"/b\", \"read_only\": 1}]}",
                   ErrorKind::Config, "'volumes[0].read_only' must be a boolean"},
        BadOptions{"{\"network\": {\"allow_net\": []}}", ErrorKind::Config, "'network.mode' is required"},
        BadOptions{"{\"network\": {\"mode\": \"on\"}}", ErrorKind::Config, "'network.mode' is 'on'"},
        BadOptions{"{\"allow_net\": [\"x.com\"]}", ErrorKind::Config, "belongs inside 'network'"},
        BadOptions{"{\"network\": {\"mode\": \"enabled\", \"allow_net\": [\"x.com\", \"not a host\"]}}",
                   ErrorKind::Config, "'network.allow_net[1]': allow_net entry 'not a host'"},
        BadOptions{"{\"network\": {\"mode\": \"enabled\", \"allow_net\": [\"10.1.0.0/8\"]}}", ErrorKind::Config,
                   "'network.allow_net[0]': allow_net entry '10.1.0.0/8' has bits set"},
        BadOptions{"{\"network\": {\"mode\": \"enabled\", \"allow_net\": [7]}}", ErrorKind::Config,
                   "network.allow_net"},
        BadOptions{"{\"network\": {\"mode\": \"disabled\", \"allow_net\": [\"x.com\"]}}", ErrorKind::Config,
                   "'network.allow_net' is set but 'network.mode' is disabled"},
        BadOptions{"{\"ports\": [{\"guest_port\": 80, \"host_ip\": \"localhost\"}]}", ErrorKind::Config,
                   "'ports[0].host_ip' is 'localhost'"},
        BadOptions{"{\"ports\": [{\"host_port\": 80}]}", ErrorKind::Config, "'ports[0].guest_port' is required"},
        BadOptions{"{\"ports\": [{\"guest_port\": 65536}]}", ErrorKind::Config, "'ports[0].guest_port' is 65536"},
        BadOptions{"{\"ports\": [{\"guest_port\": 80, \"protocol\": \"sctp\"}]}", ErrorKind::Config,
                   "'ports[0].protocol' is 'sctp'"},
        BadOptions{"{\"auto_remove\": null}", ErrorKind::Config, "'auto_remove' must be a value"},
        BadOptions{"{\"detach\": \"yes\"}", ErrorKind::Config, "'detach' must be a boolean"},
        BadOptions{"{\"advanced\": {\"security\": {\"uid\": 4294967296}}}", ErrorKind::Config,
                   "'advanced.security.uid' is 4294967296"},
        BadOptions{"{\"advanced\": {\"security\": {\"jailer\": true}}}", ErrorKind::Config,
                   "'advanced.security.jailer'"},
        BadOptions{"{\"advanced\": {\"security\": {\"resource_limits\": {\"max_processes\": 0}}}}", ErrorKind::Config,
                   "'advanced.security.resource_limits.max_processes' is 0"},
        BadOptions{"{\"advanced\": {\"security\": {\"sandbox_profile\": \"x\"}}}", ErrorKind::Unsupported,
                   "'advanced.security.sandbox_profile'"},
        BadOptions{"{\"advanced\": {\"isolate_mounts\": false}}", ErrorKind::Unsupported, "'advanced.isolate_mounts'"},
        BadOptions{"{\"advanced\": {\"health_check\": {\"retries\": 3}}}", ErrorKind::Unsupported,
                   "'advanced.health_check'"},
        BadOptions{"{\"entrypoint\": \"/bin/sh\"}", ErrorKind::Config, "'entrypoint' must be an array of strings"},
        BadOptions{"{\"cmd\": [1]}", ErrorKind::Config, "'cmd[0]' must be a string"},
        BadOptions{"{\"secrets\": [{\"name\": \"T\"}]}", ErrorKind::Config, "'secrets[0].value' is required"},
        BadOptions{"{\"secrets\": [{\"name\": \"T\", \"value\": \"v\", \"host\": []}]}", ErrorKind::Config,
                   "'secrets[0].host'"}),
    [](const ::testing::TestParamInfo<BadOptions>& case_info) { return "case" + std::to_string(case_info.index); });

// --- the C functions ------------------------------------------------------------------------------

/// A fresh home with the mock engine: runtimes and boxes without starting anything.
class CApi : public ::testing::Test {
protected:
    void SetUp() override {
        // A death test's child (the "threadsafe" style re-runs the test in a new process) works
        // inside its parent's home, which the parent removes: it dies before its own TearDown.
        const bool death_test_child = !GTEST_FLAG_GET(internal_run_death_test).empty();
        home_ = fs::temp_directory_path() /
                ("boxlite-c-api-test-" + std::to_string(death_test_child ? ::getppid() : ::getpid()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
        if (death_test_child) home_ /= "death-test-child-" + std::to_string(::getpid());
        fs::remove_all(home_);
        fs::create_directories(home_ / "rootfs");
        ::setenv("BOXLITE_ENGINE", "mock", 1);
    }
    void TearDown() override {
        boxlite_error_free(&err_);
        fs::remove_all(home_);
    }

    CBoxliteRuntime* runtime() {
        CBoxliteRuntime* rt = nullptr;
        EXPECT_EQ(boxlite_runtime_new(home_.c_str(), nullptr, &rt, &err_), BOXLITE_OK) << err_.message;
        return rt;
    }
    std::string options() const {
        return R"({"name": "b", "rootfs": {"RootfsPath": ")" + (home_ / "rootfs").string() + "\"}}";
    }

    fs::path home_;
    CBoxliteError err_{BOXLITE_OK, nullptr};
};

#define EXPECT_NULL_ARGUMENT(call, name)                                                               \
    do {                                                                                               \
        CBoxliteError e{BOXLITE_OK, nullptr};                                                          \
        EXPECT_EQ((call), BOXLITE_ERR_INVALID_ARGUMENT) << #call;                                      \
        EXPECT_EQ(e.code, BOXLITE_ERR_INVALID_ARGUMENT);                                               \
        ASSERT_NE(e.message, nullptr) << #call;                                                        \
        EXPECT_NE(std::string(e.message).find(name), std::string::npos) << #call << ": " << e.message; \
        boxlite_error_free(&e);                                                                        \
    } while (false)

TEST_F(CApi, NullWhereAPointerIsRequiredIsInvalidArgument) {
    CBoxliteRuntime* rt = runtime();
    ASSERT_NE(rt, nullptr);
    CBoxHandle* box = nullptr;
    ASSERT_EQ(boxlite_create_box(rt, options().c_str(), &box, &err_), BOXLITE_OK) << err_.message;
    char* json = nullptr;
    int code = 0;
    int exited = 0;
    size_t size = 0;
    CBoxHandle* out_box = nullptr;
    CExecutionHandle* execution = nullptr;
    CBoxliteImageHandle* images = nullptr;
    CBoxliteSimple* simple = nullptr;
    CBoxliteExecResult* result = nullptr;
    BoxliteCommand command{};
    command.command = "true";

    EXPECT_NULL_ARGUMENT(boxlite_runtime_new(nullptr, nullptr, nullptr, &e), "out_runtime");
    EXPECT_NULL_ARGUMENT(boxlite_runtime_shutdown(nullptr, 0, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_runtime_metrics(nullptr, &json, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_runtime_metrics(rt, nullptr, &e), "out_json");
    EXPECT_NULL_ARGUMENT(boxlite_create_box(nullptr, "{}", &out_box, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_create_box(rt, "{}", nullptr, &e), "out_box");
    EXPECT_NULL_ARGUMENT(boxlite_get(nullptr, "b", &out_box, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_get(rt, nullptr, &out_box, &e), "id_or_name");
    EXPECT_NULL_ARGUMENT(boxlite_get(rt, "b", nullptr, &e), "out_box");
    EXPECT_NULL_ARGUMENT(boxlite_start_box(nullptr, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_stop_box(nullptr, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_remove(nullptr, "b", 0, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_remove(rt, nullptr, 0, &e), "id_or_name");
    EXPECT_NULL_ARGUMENT(boxlite_list_info(nullptr, &json, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_list_info(rt, nullptr, &e), "out_json");
    EXPECT_NULL_ARGUMENT(boxlite_get_info(nullptr, "b", &json, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_get_info(rt, nullptr, &json, &e), "id_or_name");
    EXPECT_NULL_ARGUMENT(boxlite_get_info(rt, "b", nullptr, &e), "out_json");
    EXPECT_NULL_ARGUMENT(boxlite_box_info(nullptr, &json, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_box_info(box, nullptr, &e), "out_json");
    EXPECT_NULL_ARGUMENT(boxlite_box_metrics(nullptr, &json, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_box_metrics(box, nullptr, &e), "out_json");
    EXPECT_NULL_ARGUMENT(boxlite_execute(nullptr, "true", nullptr, nullptr, nullptr, &code, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_execute(box, nullptr, nullptr, nullptr, nullptr, &code, &e), "command");
    EXPECT_NULL_ARGUMENT(boxlite_execute(box, "true", nullptr, nullptr, nullptr, nullptr, &e), "out_exit_code");
    EXPECT_NULL_ARGUMENT(boxlite_execute_cmd(nullptr, &command, nullptr, nullptr, &code, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_execute_cmd(box, nullptr, nullptr, nullptr, &code, &e), "command");
    EXPECT_NULL_ARGUMENT(boxlite_execute_cmd(box, &command, nullptr, nullptr, nullptr, &e), "out_exit_code");
    BoxliteCommand no_program{};
    EXPECT_NULL_ARGUMENT(boxlite_execute_cmd(box, &no_program, nullptr, nullptr, &code, &e), "command->command");
    EXPECT_NULL_ARGUMENT(boxlite_box_exec(nullptr, &command, &execution, &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_box_exec(box, nullptr, &execution, &e), "command");
    EXPECT_NULL_ARGUMENT(boxlite_box_exec(box, &command, nullptr, &e), "out_execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_on_stdout(nullptr, nullptr, nullptr, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_on_stderr(nullptr, nullptr, nullptr, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_fd(nullptr, &code, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_pump(nullptr, 0, nullptr, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_read(nullptr, 0, nullptr, 0, &size, &exited, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_stdin_write(nullptr, nullptr, 0, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_stdin_close(nullptr, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_wait(nullptr, 0, &code, &exited, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_kill(nullptr, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_signal(nullptr, 15, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_execution_tty_resize(nullptr, 24, 80, &e), "execution");
    EXPECT_NULL_ARGUMENT(boxlite_copy_in(nullptr, "/a", "/b", &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_copy_in(box, nullptr, "/b", &e), "host_path");
    EXPECT_NULL_ARGUMENT(boxlite_copy_in(box, "/a", nullptr, &e), "box_path");
    EXPECT_NULL_ARGUMENT(boxlite_copy_out(nullptr, "/a", "/b", &e), "box");
    EXPECT_NULL_ARGUMENT(boxlite_copy_out(box, nullptr, "/b", &e), "box_path");
    EXPECT_NULL_ARGUMENT(boxlite_copy_out(box, "/a", nullptr, &e), "host_path");
    EXPECT_NULL_ARGUMENT(boxlite_runtime_images(nullptr, &images, &e), "runtime");
    EXPECT_NULL_ARGUMENT(boxlite_runtime_images(rt, nullptr, &e), "out_images");
    EXPECT_NULL_ARGUMENT(boxlite_image_pull(nullptr, "alpine", &json, &e), "images");
    EXPECT_NULL_ARGUMENT(boxlite_image_list(nullptr, &json, &e), "images");
    EXPECT_NULL_ARGUMENT(boxlite_simple_new(nullptr, 0, 0, &simple, &e), "image");
    EXPECT_NULL_ARGUMENT(boxlite_simple_new("alpine", 0, 0, nullptr, &e), "out_runner");
    EXPECT_NULL_ARGUMENT(boxlite_simple_run(nullptr, "true", nullptr, 0, &result, &e), "runner");
    EXPECT_EQ(boxlite_box_id(nullptr), nullptr);

    ASSERT_EQ(boxlite_runtime_images(rt, &images, &err_), BOXLITE_OK);
    EXPECT_NULL_ARGUMENT(boxlite_image_pull(images, nullptr, &json, &e), "reference");
    EXPECT_NULL_ARGUMENT(boxlite_image_pull(images, "alpine", nullptr, &e), "out_json");
    EXPECT_NULL_ARGUMENT(boxlite_image_list(images, nullptr, &e), "out_json");
    boxlite_image_free(images);
    boxlite_box_free(box);
    boxlite_runtime_free(rt);
}

TEST_F(CApi, SuccessLeavesNoMessageAndFailureNamesTheProblem) {
    CBoxliteRuntime* rt = runtime();
    ASSERT_NE(rt, nullptr);
    EXPECT_EQ(err_.code, BOXLITE_OK);
    EXPECT_EQ(err_.message, nullptr);
    CBoxHandle* box = nullptr;
    EXPECT_EQ(boxlite_get(rt, "missing-box", &box, &err_), BOXLITE_ERR_NOT_FOUND);
    ASSERT_NE(err_.message, nullptr);
    EXPECT_NE(std::string(err_.message).find("missing-box"), std::string::npos);
    boxlite_error_free(&err_);
    EXPECT_EQ(err_.message, nullptr);
    boxlite_error_free(&err_);  // twice is harmless

    ASSERT_EQ(boxlite_create_box(rt, options().c_str(), &box, &err_), BOXLITE_OK) << err_.message;
    CBoxHandle* same = nullptr;
    EXPECT_EQ(boxlite_create_box(rt, options().c_str(), &same, &err_), BOXLITE_ERR_ALREADY_EXISTS);
    EXPECT_EQ(same, nullptr);
    boxlite_error_free(&err_);
    // A rootfs directory that is not there: create's own validation, a Config error.
    EXPECT_EQ(boxlite_create_box(rt, R"({"rootfs": {"RootfsPath": "/no/such/dir"}})", &same, &err_),
              BOXLITE_ERR_CONFIG);
    ASSERT_NE(err_.message, nullptr);
    EXPECT_NE(std::string(err_.message).find("/no/such/dir"), std::string::npos) << err_.message;
    boxlite_error_free(&err_);
    char* id = boxlite_box_id(box);
    ASSERT_NE(id, nullptr);
    EXPECT_EQ(std::strlen(id), 26u);
    boxlite_free_string(id);
    boxlite_box_free(box);
    boxlite_runtime_free(rt);
}

// An allocation failure inside the library comes back as an error code, not as a C++ exception
// unwinding into C. Address-space limits do not mix with ASan's shadow memory, so this test is
// compiled only without it.
#if !defined(__SANITIZE_ADDRESS__)
/// In a child process: calls into the library with too little address space left for `huge`.
[[noreturn]] void call_without_memory(const std::string& home, const std::string& huge) {
    rlimit limit{};
    ::getrlimit(RLIMIT_AS, &limit);
    // Room for what the process maps now plus a little: far less than the parsed JSON needs.
    std::size_t mapped_pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%zu", &mapped_pages) != 1) mapped_pages = 0;
        std::fclose(f);
    }
    limit.rlim_cur = mapped_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) + (std::size_t{64} << 20);
    ::setrlimit(RLIMIT_AS, &limit);
    CBoxliteRuntime* rt = nullptr;
    CBoxliteError e{BOXLITE_OK, nullptr};
    const auto code = boxlite_runtime_new(home.c_str(), huge.c_str(), &rt, &e);
    const bool ok = code == BOXLITE_ERR_RESOURCE_EXHAUSTED && e.message != nullptr && rt == nullptr;
    std::fprintf(stderr, "code %d: %s\n", static_cast<int>(code), e.message ? e.message : "(none)");
    std::_Exit(ok ? 0 : 1);
}

TEST_F(CApi, OutOfMemoryIsAnErrorCodeNotAnException) {
    // One long string: the parser's token buffer grows past the limit. (Millions of small values
    // would not do: nlohmann::json's destructor allocates to tear a large array down, and an
    // allocation failure in a destructor terminates, inside or outside this library.)
    const std::string huge = "[\"" + std::string(std::size_t{128} << 20, 'a') + "\"]";
    EXPECT_EXIT(call_without_memory(home_.string(), huge), ::testing::ExitedWithCode(0),
                "code 20: resource exhausted: out of memory");
}
#endif

// Using a handle after freeing it is undefined behaviour (docs/c-api.md); the ASan build catches
// it. Only that build has this test: without ASan nothing would be caught, reliably.
#if defined(__SANITIZE_ADDRESS__)
/// Creates a box, frees its handle, then uses the handle.
[[noreturn]] void use_freed_box(const std::string& home, const std::string& options) {
    CBoxliteRuntime* rt = nullptr;
    CBoxliteError e{BOXLITE_OK, nullptr};
    if (boxlite_runtime_new(home.c_str(), nullptr, &rt, &e) != BOXLITE_OK) std::_Exit(3);
    CBoxHandle* box = nullptr;
    if (boxlite_create_box(rt, options.c_str(), &box, &e) != BOXLITE_OK) std::_Exit(3);
    boxlite_box_free(box);
    char* json = nullptr;
    (void)boxlite_box_info(box, &json, &e);  // use after free
    std::_Exit(4);
}

/// Frees a runtime handle, then uses it.
[[noreturn]] void use_freed_runtime(const std::string& home) {
    CBoxliteRuntime* rt = nullptr;
    CBoxliteError e{BOXLITE_OK, nullptr};
    if (boxlite_runtime_new(home.c_str(), nullptr, &rt, &e) != BOXLITE_OK) std::_Exit(3);
    boxlite_runtime_free(rt);
    char* json = nullptr;
    (void)boxlite_runtime_metrics(rt, &json, &e);  // use after free
    std::_Exit(4);
}

TEST_F(CApi, AFreedHandleUsedAgainIsCaughtByAsan) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(use_freed_box(home_.string(), options()), "heap-use-after-free");
    EXPECT_DEATH(use_freed_runtime(home_.string()), "heap-use-after-free");
}
#endif

TEST_F(CApi, OneRuntimeFromManyThreadsAtOnce) {
    CBoxliteRuntime* rt = runtime();
    ASSERT_NE(rt, nullptr);
    constexpr int kThreads = 4;
    constexpr int kBoxesEach = 5;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kBoxesEach; ++i) {
                const std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
                const std::string json = R"({"name": ")" + name + R"(", "rootfs": {"RootfsPath": ")" +
                                         (home_ / "rootfs").string() + "\"}}";
                CBoxliteError e{BOXLITE_OK, nullptr};
                CBoxHandle* box = nullptr;
                char* text = nullptr;
                if (boxlite_create_box(rt, json.c_str(), &box, &e) != BOXLITE_OK) ++failures;
                if (boxlite_get_info(rt, name.c_str(), &text, &e) != BOXLITE_OK) ++failures;
                boxlite_free_string(text);
                text = nullptr;
                if (boxlite_list_info(rt, &text, &e) != BOXLITE_OK) ++failures;
                boxlite_free_string(text);
                text = nullptr;
                if (boxlite_runtime_metrics(rt, &text, &e) != BOXLITE_OK) ++failures;
                boxlite_free_string(text);
                boxlite_error_free(&e);
                boxlite_box_free(box);
            }
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failures.load(), 0);
    char* list = nullptr;
    ASSERT_EQ(boxlite_list_info(rt, &list, &err_), BOXLITE_OK);
    std::size_t boxes = 0;
    for (const char* at = list; (at = std::strstr(at, "\"state\"")) != nullptr; ++at) ++boxes;
    EXPECT_EQ(boxes, std::size_t{kThreads * kBoxesEach});
    boxlite_free_string(list);
    boxlite_runtime_free(rt);
}

TEST_F(CApi, ShutdownRefusesLaterCallsAndIsIdempotent) {
    CBoxliteRuntime* rt = runtime();
    ASSERT_NE(rt, nullptr);
    CBoxHandle* box = nullptr;
    ASSERT_EQ(boxlite_create_box(rt, options().c_str(), &box, &err_), BOXLITE_OK) << err_.message;
    EXPECT_EQ(boxlite_runtime_shutdown(rt, 87000, &err_), BOXLITE_ERR_INVALID_ARGUMENT);
    boxlite_error_free(&err_);
    EXPECT_EQ(boxlite_runtime_shutdown(rt, -1, &err_), BOXLITE_OK) << err_.message;
    EXPECT_EQ(boxlite_runtime_shutdown(rt, 0, &err_), BOXLITE_OK) << err_.message;
    char* json = nullptr;
    EXPECT_EQ(boxlite_runtime_metrics(rt, &json, &err_), BOXLITE_ERR_STOPPED);
    boxlite_error_free(&err_);
    EXPECT_EQ(boxlite_box_info(box, &json, &err_), BOXLITE_ERR_STOPPED);
    boxlite_error_free(&err_);
    EXPECT_EQ(json, nullptr);
    boxlite_box_free(box);
    boxlite_runtime_free(rt);
}

}  // namespace
