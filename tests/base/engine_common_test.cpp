// lib/engine/common: one helper-binary policy for every engine (a bad explicit path is an error
// naming it, never skipped), and the shim spawn's ready line.
#include "engine/common/helper_binary.hpp"
#include "engine/common/shim_spawn.hpp"

#include "support/support.hpp"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace {

using namespace boxlite;
namespace fs = std::filesystem;

/// Sets an environment variable for one test.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const std::string& value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        ::setenv(name, value.c_str(), 1);
    }
    ~ScopedEnv() {
        if (old_) ::setenv(name_, old_->c_str(), 1);
        else ::unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

fs::path make_script(const fs::path& path, const std::string& body) {
    std::ofstream(path) << "#!/bin/sh\n" << body;
    fs::permissions(path, fs::perms(0755));
    return path;
}

TEST(HelperBinary, AnExplicitPathThatIsNotExecutableIsAnErrorNamingIt) {
    test::TempDir dir("boxlite-locator");
    const auto plain = dir.path() / "not-executable";
    std::ofstream(plain) << "data";
    auto found = engine::locate_helper_binary("boxlite-shim", "BOXLITE_TEST_NO_SUCH_VARIABLE", plain);
    ASSERT_FALSE(found);
    EXPECT_NE(found.error().message().find(plain.string()), std::string::npos) << found.error().message();
}

TEST(HelperBinary, ABadEnvironmentSettingIsAnErrorNotSkipped) {
    ScopedEnv env("BOXLITE_TEST_HELPER", "/nonexistent/boxlite-shim");
    // "sh" would be found elsewhere by name; the environment's wrong answer must win anyway.
    auto found = engine::locate_helper_binary("sh", "BOXLITE_TEST_HELPER");
    ASSERT_FALSE(found);
    EXPECT_NE(found.error().message().find("BOXLITE_TEST_HELPER=/nonexistent/boxlite-shim"), std::string::npos)
        << found.error().message();
}

TEST(HelperBinary, TheExplicitPathComesFirstThenTheEnvironment) {
    test::TempDir dir("boxlite-locator");
    const auto a = make_script(dir.path() / "a", "exit 0\n");
    const auto b = make_script(dir.path() / "b", "exit 0\n");
    ScopedEnv env("BOXLITE_TEST_HELPER", b.string());
    auto explicit_first = engine::locate_helper_binary("helper", "BOXLITE_TEST_HELPER", a);
    ASSERT_TRUE(explicit_first) << explicit_first.error().message();
    EXPECT_EQ(*explicit_first, a);
    auto from_env = engine::locate_helper_binary("helper", "BOXLITE_TEST_HELPER");
    ASSERT_TRUE(from_env) << from_env.error().message();
    EXPECT_EQ(*from_env, b);
}

TEST(HelperBinary, TheBuildTreeFindsItsOwnHelpers) {
    // This test links the library in its build tree: boxlite-shim comes from the tree's bin/.
    auto found = engine::locate_helper_binary("boxlite-shim", "BOXLITE_TEST_NO_SUCH_VARIABLE");
    ASSERT_TRUE(found) << found.error().message();
    EXPECT_EQ(found->filename(), "boxlite-shim");
}

TEST(ShimSpawn, HandsTheConfigAndReadyDescriptorsAndReturnsTheReadyLine) {
    test::TempDir dir("boxlite-shim-spawn");
    // A stand-in shim: echoes its config back as its ready line; the fd numbers come as options.
    const auto shim = make_script(dir.path() / "shim",
                                  "while [ $# -gt 0 ]; do case $1 in --config-fd) c=$2;; --ready-fd) r=$2;; esac; "
                                  "shift 2; done\nconfig=$(cat <&$c)\necho \"ok $config\" >&$r\n");
    engine::ShimProcessSpawn spawn;
    spawn.shim = shim;
    spawn.config = std::string("{\"hello\":1}");
    spawn.log = dir.path() / "shim.log";
    auto started = engine::spawn_shim_process(spawn);
    ASSERT_TRUE(started) << started.error().to_string();
    EXPECT_GT(started->pid, 0);
    ASSERT_TRUE(started->ready.has_value()) << test::read_file(spawn.log);
    EXPECT_EQ(*started->ready, "ok {\"hello\":1}");
    int status = 0;
    EXPECT_EQ(::waitpid(started->pid, &status, 0), started->pid);
}

TEST(ShimSpawn, AShimThatCannotBeExecutedSaysSoOnItsReadyLine) {
    test::TempDir dir("boxlite-shim-spawn");
    engine::ShimProcessSpawn spawn;
    spawn.shim = dir.path() / "missing-shim";
    spawn.log = dir.path() / "shim.log";
    auto started = engine::spawn_shim_process(spawn);
    ASSERT_TRUE(started);
    ASSERT_TRUE(started->ready.has_value());
    EXPECT_EQ(*started->ready, "error cannot execute missing-shim");
    (void)::waitpid(started->pid, nullptr, 0);
}

}  // namespace
