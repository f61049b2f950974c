// boxlite-agent run directly on the host (no namespaces): the protocol, streaming, flow control,
// signals, tty and copies, against the real static binary over a real Unix socket.
#include <boxlite/execution.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/unix_transport.hpp>
#include <boxlite/version.hpp>

#include "support/support.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

using namespace boxlite;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

class DirectAgent : public ::testing::Test {
protected:
    void SetUp() override {
        socket_ = dir_.path() / "agent.sock";
        const auto agent = test::built_binary("boxlite-agent");
        ASSERT_TRUE(fs::exists(agent)) << agent;
        pid_ = ::fork();
        ASSERT_GE(pid_, 0);
        if (pid_ == 0) {
            const std::string endpoint = "unix:" + socket_.string();
            ::execl(agent.c_str(), "boxlite-agent", "--listen", endpoint.c_str(), nullptr);
            ::_exit(127);
        }
        auto stream = UnixTransport{}.connect("unix:" + socket_.string(), 5s);
        ASSERT_TRUE(stream) << stream.error().to_string();
        auto client = protocol::AgentClient::connect(std::move(*stream));
        ASSERT_TRUE(client) << client.error().to_string();
        client_.emplace(std::move(*client));
    }
    void TearDown() override {
        client_.reset();
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }

    protocol::AgentClient& agent() { return *client_; }

    test::TempDir dir_{"boxlite-agent"};
    fs::path socket_;
    pid_t pid_ = -1;
    std::optional<protocol::AgentClient> client_;
};

TEST_F(DirectAgent, HandshakeAndPing) {
    EXPECT_EQ(agent().protocol_version(), protocol::kMaxVersion);
    EXPECT_EQ(agent().agent_version(), BOXLITE_VERSION_STRING);
    EXPECT_TRUE(agent().ping(2s));
    auto metrics = agent().metrics();
    ASSERT_TRUE(metrics) << metrics.error().to_string();
    EXPECT_GT(metrics->memory_total_bytes, 0U);
}

TEST_F(DirectAgent, EchoSeparatesStdoutAndStderr) {
    auto out = agent().run(BoxCommand("/bin/sh").args({"-c", "echo out; echo err >&2; exit 3"}));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->stdout_text, "out\n");
    EXPECT_EQ(out->stderr_text, "err\n");
    EXPECT_EQ(out->exit_code, 3);
}

TEST_F(DirectAgent, EnvAndWorkingDir) {
    auto out = agent().run(BoxCommand("/bin/sh").args({"-c", "echo $FOO; pwd"}).env("FOO", "bar").working_dir("/tmp"));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->stdout_text, "bar\n/tmp\n");
}

TEST_F(DirectAgent, MissingProgramIsAnExecutionError) {
    auto exec = agent().exec(BoxCommand("/no/such/program"));
    ASSERT_FALSE(exec);
    EXPECT_EQ(exec.error().kind(), ErrorKind::Execution);
    EXPECT_NE(exec.error().message().find("/no/such/program"), std::string::npos) << exec.error().to_string();
}

TEST_F(DirectAgent, KilledBySignalIsNegative) {
    auto exec = agent().exec(BoxCommand("/bin/sleep").arg("30"));
    ASSERT_TRUE(exec) << exec.error().to_string();
    ASSERT_TRUE(exec->signal(SIGTERM));
    auto result = exec->wait();
    ASSERT_TRUE(result) << result.error().to_string();
    EXPECT_EQ(result->exit_code, -SIGTERM);
}

TEST_F(DirectAgent, StdinLinesRoundTrip) {
    auto exec = agent().exec(BoxCommand("/bin/cat"));
    ASSERT_TRUE(exec);
    auto in = exec->stdin();
    auto out = exec->stdout();
    ASSERT_TRUE(in && out);
    ASSERT_TRUE(in->write("one\ntwo\nthree"));
    ASSERT_TRUE(in->close());
    std::vector<std::string> lines;
    while (true) {
        auto line = out->read_line();
        ASSERT_TRUE(line);
        if (!*line) break;
        lines.push_back(**line);
    }
    EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "three"}));
    EXPECT_FALSE(exec->stdout().has_value()) << "a stream is taken once";
    EXPECT_EQ(exec->wait()->exit_code, 0);
}

TEST_F(DirectAgent, TimeoutKills) {
    const auto start = std::chrono::steady_clock::now();
    auto out = agent().run(BoxCommand("/bin/sleep").arg("30").timeout(300ms));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_TRUE(out->timed_out);
    EXPECT_EQ(out->exit_code, -SIGKILL);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST_F(DirectAgent, CopyRoundTripWithSymlinks) {
    test::TempDir src("boxlite-copy-src");
    fs::create_directories(src.path() / "tree/sub");
    test::write_file(src.path() / "tree/a.txt", "alpha");
    test::write_file(src.path() / "tree/sub/b.bin", std::string(100000, 'b'));
    fs::create_symlink("a.txt", src.path() / "tree/link");
    fs::create_symlink("/etc/passwd", src.path() / "tree/abs-link");
    fs::permissions(src.path() / "tree/a.txt", fs::perms(0640));
    const auto guest = dir_.path() / "guest";
    fs::create_directories(guest);
    ASSERT_TRUE(agent().copy_in((src.path() / "tree").string(), guest.string() + "/"));
    EXPECT_EQ(test::read_file(guest / "tree/a.txt"), "alpha");
    EXPECT_EQ(fs::read_symlink(guest / "tree/link"), "a.txt");
    EXPECT_EQ(fs::read_symlink(guest / "tree/abs-link"), "/etc/passwd");
    EXPECT_EQ(fs::status(guest / "tree/a.txt").permissions() & fs::perms::all, fs::perms(0640));
    test::TempDir back("boxlite-copy-back");
    ASSERT_TRUE(agent().copy_out((guest / "tree").string(), (back.path() / "copy").string()));
    EXPECT_EQ(test::read_file(back.path() / "copy/sub/b.bin"), std::string(100000, 'b'));
    EXPECT_EQ(fs::read_symlink(back.path() / "copy/link"), "a.txt");
}

}  // namespace
