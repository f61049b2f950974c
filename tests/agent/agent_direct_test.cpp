// boxlite-agent run directly on the host (no namespaces): the protocol, streaming, flow control,
// signals, tty and copies, against the real static binary over a real Unix socket.
#include <boxlite/execution.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/unix_transport.hpp>
#include <boxlite/version.hpp>

#include "raw_peer.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
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

std::vector<pid_t> processes_with(const std::string& marker);

// A command that prints without end must not grow the caller's memory without end: collect()
// keeps at most max_output_bytes of stdout and stderr together; past it the command's group is
// killed and the result is an Execution error naming the limit. The connection serves on.
TEST_F(DirectAgent, CollectKillsACommandThatPrintsMoreThanItsLimitAndSaysSo) {
    const BoxCommand sixteen = BoxCommand("/bin/sh").args({"-c", "printf 12345678; printf abcdefgh >&2"});
    auto exact = agent().run(sixteen, {}, 16);
    ASSERT_TRUE(exact) << exact.error().to_string();
    EXPECT_EQ(exact->stdout_text, "12345678");
    EXPECT_EQ(exact->stderr_text, "abcdefgh");
    auto one_over = agent().run(sixteen, {}, 15);
    ASSERT_FALSE(one_over);
    EXPECT_EQ(one_over.error().kind(), ErrorKind::Execution);

    const std::string marker = "boxlite-collect-limit-" + std::to_string(::getpid());
    auto endless = agent().run(BoxCommand("/bin/sh").args({"-c", "while :; do echo out; echo err >&2; done", marker}),
                               {}, 1 << 20);
    ASSERT_FALSE(endless) << "an endless printer was collected";
    EXPECT_EQ(endless.error().kind(), ErrorKind::Execution);
    const auto message = endless.error().to_string();
    EXPECT_NE(message.find("more than 1048576 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("max_output_bytes"), std::string::npos) << message;
    EXPECT_TRUE(processes_with(marker).empty()) << "the printer outlived its collect()";

    auto after = agent().run(BoxCommand("/bin/sh").args({"-c", "echo still serving"}));
    ASSERT_TRUE(after) << after.error().to_string();
    EXPECT_EQ(after->stdout_text, "still serving\n");

    auto execution = agent().exec(BoxCommand("/bin/true"));
    ASSERT_TRUE(execution) << execution.error().to_string();
    auto zero = execution->collect(0);
    ASSERT_FALSE(zero);
    EXPECT_EQ(zero.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_TRUE(execution->wait());
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

// ---- process groups that outlive their leader ----------------------------------------------
// `sh -c 'sleep 1000 & echo $!'`: the leader exits at once, sleep keeps the group (and stdout)
// alive. Timeout, signal, kill and a dropped connection must still reach it.

constexpr const char* kLeavesABackgroundSleep = "sleep 1000 & echo $!";

pid_t first_line_pid(ExecOutputStream& out) {
    auto line = out.read_line();
    EXPECT_TRUE(line && *line);
    return line && *line ? static_cast<pid_t>(std::stol(**line)) : -1;
}

TEST_F(DirectAgent, TimeoutKillsWhatTheLeaderLeftBehind) {
    auto out = agent().run(BoxCommand("/bin/sh").args({"-c", kLeavesABackgroundSleep}).timeout(500ms));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_TRUE(out->timed_out);
    EXPECT_EQ(out->exit_code, 0) << "the exit code stays the leader's";
    EXPECT_FALSE(out->success());
    const pid_t sleeper = static_cast<pid_t>(std::stol(out->stdout_text));
    EXPECT_TRUE(test::process_gone(sleeper)) << "the background sleep survived the timeout";
}

TEST_F(DirectAgent, SignalReachesTheGroupAfterTheLeaderExited) {
    auto exec = agent().exec(BoxCommand("/bin/sh").args({"-c", kLeavesABackgroundSleep}));
    ASSERT_TRUE(exec) << exec.error().to_string();
    auto out = exec->stdout();
    const pid_t sleeper = first_line_pid(*out);
    ASSERT_GT(sleeper, 0);
    ASSERT_TRUE(test::process_gone(exec->pid())) << "the leader should exit right after echo";
    ASSERT_TRUE(exec->signal(SIGTERM));
    EXPECT_EQ(out->read_all().value_or("?"), "");
    auto result = exec->wait();
    ASSERT_TRUE(result) << result.error().to_string();
    EXPECT_EQ(result->exit_code, 0);
    EXPECT_FALSE(result->timed_out);
    EXPECT_TRUE(test::process_gone(sleeper));
}

TEST_F(DirectAgent, KillReachesTheGroupAfterTheLeaderExited) {
    auto exec = agent().exec(BoxCommand("/bin/sh").args({"-c", kLeavesABackgroundSleep}));
    ASSERT_TRUE(exec) << exec.error().to_string();
    auto out = exec->stdout();
    const pid_t sleeper = first_line_pid(*out);
    ASSERT_TRUE(test::process_gone(exec->pid()));
    ASSERT_TRUE(exec->kill());
    auto result = exec->wait();
    ASSERT_TRUE(result) << result.error().to_string();
    EXPECT_EQ(result->exit_code, 0);
    EXPECT_TRUE(test::process_gone(sleeper));
}

TEST_F(DirectAgent, DisconnectKillsTheGroupAfterTheLeaderExited) {
    pid_t sleeper = -1;
    {
        auto stream = UnixTransport{}.connect("unix:" + socket_.string(), 5s);
        ASSERT_TRUE(stream);
        auto client = protocol::AgentClient::connect(std::move(*stream));
        ASSERT_TRUE(client);
        auto exec = client->exec(BoxCommand("/bin/sh").args({"-c", kLeavesABackgroundSleep}));
        ASSERT_TRUE(exec);
        auto out = exec->stdout();
        sleeper = first_line_pid(*out);
        ASSERT_TRUE(test::process_gone(exec->pid()));
        ASSERT_FALSE(test::process_gone(sleeper, 0ms));
    }  // the connection closes with its last handle
    EXPECT_TRUE(test::process_gone(sleeper)) << "a dropped connection left its background process running";
}

TEST_F(DirectAgent, StdinCreditComesBackWhenTheLeaderExitsWithBytesBuffered) {
    // The leader never reads stdin and waits for a flag; its background sleep keeps stdout open,
    // so the execution outlives the leader. Bytes the agent buffered when the leader exited are
    // dropped: their credit must come back, or the writer waits forever.
    const auto flag = dir_.path() / "leader-may-exit";
    const std::string script = "sleep 1000 <&- & while [ ! -e '" + flag.string() + "' ]; do sleep 0.05; done";
    auto exec = agent().exec(BoxCommand("/bin/sh").args({"-c", script}));
    ASSERT_TRUE(exec) << exec.error().to_string();
    auto in = exec->stdin();
    auto writer = std::async(std::launch::async, [&] { return in->write(std::string(4U << 20, 'x')); });
    // Past the 64 KiB pipe plus as much again: the agent holds bytes the child has not read.
    for (int i = 0; i < 3000 && agent().counters().bytes_in.load() < 2 * 65536 + 4096; ++i)
        std::this_thread::sleep_for(10ms);
    ASSERT_GE(agent().counters().bytes_in.load(), 2U * 65536);
    test::write_file(flag, "");
    ASSERT_TRUE(test::process_gone(exec->pid()));
    const bool finished = writer.wait_for(60s) == std::future_status::ready;
    EXPECT_TRUE(finished) << "the stdin writer is still waiting for credit after the leader exited";
    ASSERT_TRUE(exec->kill());
    EXPECT_TRUE(writer.get()) << "writes after the leader's exit are accepted and dropped";
    EXPECT_TRUE(exec->wait());
}

TEST_F(DirectAgent, PingAndSignalPassAStdinPayloadWaitingForAFullPipe) {
    // The command never reads stdin: its pipe fills, and the agent leaves the next stdin payload
    // in the socket for a while (to splice it once the pipe has room). Frames the host sends
    // behind it (a ping, a signal) must still get through, and the writer must not hang.
    auto exec = agent().exec(BoxCommand("/bin/sleep").arg("1000"));
    ASSERT_TRUE(exec) << exec.error().to_string();
    auto in = exec->stdin();
    ASSERT_TRUE(in);
    auto writer = std::async(std::launch::async, [&] { return in->write(std::string(16U << 20, 'x')); });
    // Past the 1 MiB pipe plus half a window: a payload waits in the socket or the agent.
    for (int i = 0; i < 3000 && agent().counters().bytes_in.load() < (1U << 20) + (1U << 20); ++i)
        std::this_thread::sleep_for(10ms);
    ASSERT_GE(agent().counters().bytes_in.load(), (1U << 20) + (1U << 20));
    EXPECT_TRUE(agent().ping(30s)) << "a ping behind a waiting stdin payload got no answer";
    ASSERT_TRUE(exec->signal(SIGTERM));
    auto result = exec->wait();
    ASSERT_TRUE(result) << result.error().to_string();
    EXPECT_EQ(result->exit_code, -SIGTERM);
    const bool finished = writer.wait_for(60s) == std::future_status::ready;
    ASSERT_TRUE(finished) << "the stdin writer still waits after the command was killed";
    (void)writer.get();  // the execution ended: the rest of the 16 MiB is refused or dropped
}

// ---- program lookup, ids, error kinds ------------------------------------------------------

TEST_F(DirectAgent, ProgramIsFoundThroughTheCommandsPath) {
    test::TempDir bin("boxlite-path");
    test::write_file(bin.path() / "boxlite-probe", "#!/bin/sh\necho found \"$@\"\n");
    test::write_file(bin.path() / "boxlite-plain", "echo plain script\n");  // no #!: run by sh
    fs::permissions(bin.path() / "boxlite-probe", fs::perms(0755));
    fs::permissions(bin.path() / "boxlite-plain", fs::perms(0755));
    const auto path = "/nonexistent:" + bin.str() + ":/usr/bin:/bin";
    auto out = agent().run(BoxCommand("boxlite-probe").arg("x").env("PATH", path));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->stdout_text, "found x\n");
    out = agent().run(BoxCommand("boxlite-plain").env("PATH", path));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->stdout_text, "plain script\n");
    // Not found on the command's PATH, whatever the agent's own PATH holds.
    auto missing = agent().exec(BoxCommand("sh").env("PATH", bin.str()));
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::Execution);
}

TEST_F(DirectAgent, ExecutionIdsAreUniqueAcrossConnections) {
    std::set<std::string> ids;
    for (int connection = 0; connection < 3; ++connection) {
        auto stream = UnixTransport{}.connect("unix:" + socket_.string(), 5s);
        ASSERT_TRUE(stream);
        auto client = protocol::AgentClient::connect(std::move(*stream));
        ASSERT_TRUE(client);
        for (int i = 0; i < 2; ++i) {
            auto exec = client->exec(BoxCommand("/bin/true"));
            ASSERT_TRUE(exec) << exec.error().to_string();
            EXPECT_EQ(exec->id().size(), BoxID::kLength) << exec->id();
            ids.insert(exec->id());
            EXPECT_TRUE(exec->wait());
        }
    }
    EXPECT_EQ(ids.size(), 6U) << "every connection numbers its streams from 1; ids must not";
}

TEST_F(DirectAgent, CopyErrorsSayWhatIsWrongWithoutBlamingABox) {
    const auto guest = dir_.path() / "guest";
    fs::create_directories(guest);
    auto in = agent().copy_in((dir_.path() / "no-such-host-file").string(), guest.string() + "/");
    ASSERT_FALSE(in);
    EXPECT_EQ(in.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_EQ(in.error().to_string().find("box not found"), std::string::npos) << in.error().to_string();

    test::TempDir back("boxlite-copy-back");
    auto out = agent().copy_out((guest / "no-such-guest-file").string(), back.str() + "/");
    ASSERT_FALSE(out);
    EXPECT_EQ(out.error().kind(), ErrorKind::Execution);
    EXPECT_EQ(out.error().to_string().find("box not found"), std::string::npos) << out.error().to_string();

    test::write_file(guest / "f", "x");
    auto nowhere = agent().copy_out((guest / "f").string(), (back.path() / "missing-dir/f").string());
    ASSERT_FALSE(nowhere);
    EXPECT_EQ(nowhere.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(nowhere.error().message().find("does not exist"), std::string::npos) << nowhere.error().to_string();
}

// ---- users and groups from the box's own files ---------------------------------------------

/// An agent whose /etc/passwd and /etc/group are test files (bind-mounted in a private mount
/// namespace), so commands can run as users the host does not have.
class AgentWithOwnAccounts : public ::testing::Test {
protected:
    void SetUp() override {
        if (!test::is_root()) GTEST_SKIP() << "precondition: not root (switching users and private mounts)";
        passwd_ = (dir_.path() / "passwd").string();
        group_ = (dir_.path() / "group").string();
        test::write_file(passwd_,
                         "root:x:0:0:root:/root:/bin/sh\nboxtester:x:4242:4242::/tmp:/bin/sh\n"
                         "loner:x:4343:4343::/tmp:/bin/sh\n");
        test::write_file(group_,
                         "root:x:0:\nwheel:x:10:root\nboxtester:x:4242:\nalpha:x:5001:other,boxtester\n"
                         "beta:x:5002:boxtester\ngamma:x:5003:other\nloner:x:4343:\n");
        socket_ = (dir_.path() / "agent.sock").string();
        agent_.emplace(test::built_binary("boxlite-agent").string(), socket_, [this] {
            if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
                ::mount(passwd_.c_str(), "/etc/passwd", nullptr, MS_BIND, nullptr) != 0 ||
                ::mount(group_.c_str(), "/etc/group", nullptr, MS_BIND, nullptr) != 0) {
                ::_exit(126);
            }
        });
        auto stream = UnixTransport{}.connect("unix:" + socket_, 5s);
        ASSERT_TRUE(stream) << stream.error().to_string();
        auto client = protocol::AgentClient::connect(std::move(*stream));
        ASSERT_TRUE(client) << client.error().to_string();
        client_.emplace(std::move(*client));
    }

    /// uid, gid and the sorted group list of a command run as `user`.
    std::string identity_of(const std::string& user) {
        auto out = client_->run(BoxCommand("/bin/sh")
                                    .args({"-c",
                                           "awk '/^Uid:/{u=$2} /^Gid:/{g=$2} /^Groups:/{$1=\"\"; s=$0} "
                                           "END{print u, g \":\" s}' /proc/self/status"})
                                    .user(user));
        EXPECT_TRUE(out) << out.error().to_string();
        if (!out) return {};
        EXPECT_EQ(out->exit_code, 0) << out->stderr_text;
        auto text = out->stdout_text;
        while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
        return text;
    }

    test::TempDir dir_{"boxlite-accounts"};
    std::string passwd_, group_, socket_;
    std::optional<test::AgentProcess> agent_;
    std::optional<protocol::AgentClient> client_;
};

TEST_F(AgentWithOwnAccounts, SupplementaryGroupsComeFromTheBoxGroupFile) {
    EXPECT_EQ(identity_of("boxtester"), "4242 4242: 4242 5001 5002");
    EXPECT_EQ(identity_of("boxtester:5003"), "4242 5003: 5001 5002 5003") << "an explicit gid replaces the primary";
    EXPECT_EQ(identity_of("loner"), "4343 4343: 4343");
    EXPECT_EQ(identity_of("root"), "0 0: 0 10") << "root gets its own groups too, not the agent's";
    EXPECT_EQ(identity_of("4242"), "4242 4242: 4242 5001 5002") << "a uid from passwd is that user";
    EXPECT_EQ(identity_of("777"), "777 777: 777") << "a uid the box does not list has no supplementary groups";
}

TEST_F(AgentWithOwnAccounts, UnknownUserIsAnExecutionError) {
    auto exec = client_->exec(BoxCommand("/bin/true").user("nobody-here"));
    ASSERT_FALSE(exec);
    EXPECT_EQ(exec.error().kind(), ErrorKind::Execution);
    EXPECT_NE(exec.error().message().find("nobody-here"), std::string::npos) << exec.error().to_string();
}

// --- the non-blocking calls an event loop uses (the Python SDK's asyncio layer) ----------------

/// Counts waker calls; wait_past() blocks until the count moves past what the caller saw.
struct WakeCounter {
    std::mutex mutex;
    std::condition_variable cv;
    int count = 0;
    void notify() {
        std::lock_guard lock(mutex);
        ++count;
        cv.notify_all();
    }
    int seen() {
        std::lock_guard lock(mutex);
        return count;
    }
    bool wait_past(int seen_count) {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, 30s, [&] { return count > seen_count; });
    }
};

TEST_F(DirectAgent, BeginExecAndTryCallsNeverBlock) {
    auto wakes = std::make_shared<WakeCounter>();
    auto pending = agent().begin_exec(BoxCommand("/bin/sh").args({"-c", "read line; echo got $line; exit 4"}),
                                      [wakes] { wakes->notify(); });
    ASSERT_TRUE(pending) << pending.error().to_string();
    std::optional<Execution> execution;
    while (!execution) {
        const int seen = wakes->seen();
        if (auto started = pending->poll()) {
            ASSERT_TRUE(*started) << started->error().to_string();
            execution.emplace(std::move(**started));
            break;
        }
        ASSERT_TRUE(wakes->wait_past(seen)) << "no wake-up while the execution started";
    }
    auto again = pending->poll();
    ASSERT_TRUE(again && !*again);
    EXPECT_EQ(again->error().kind(), ErrorKind::InvalidState);

    execution->set_waker([wakes] { wakes->notify(); });
    auto out = *execution->stdout();
    auto in = *execution->stdin();
    std::array<std::byte, 64> buffer{};
    auto nothing_yet = out.try_read_some(buffer);
    ASSERT_TRUE(nothing_yet);
    EXPECT_FALSE(nothing_yet->has_value()) << "the process waits for input: no output yet";
    EXPECT_FALSE(execution->try_wait().has_value());

    const std::string_view line = "hello\n";
    auto sent = in.try_write_some(std::as_bytes(std::span(line.data(), line.size())));
    ASSERT_TRUE(sent) << sent.error().to_string();
    EXPECT_EQ(*sent, line.size());  // far below the stdin window
    ASSERT_TRUE(in.close());

    std::string received;
    while (true) {
        const int seen = wakes->seen();
        auto n = out.try_read_some(buffer);
        ASSERT_TRUE(n) << n.error().to_string();
        if (n->has_value()) {
            if (**n == 0) break;
            received.append(reinterpret_cast<const char*>(buffer.data()), **n);
            continue;
        }
        ASSERT_TRUE(wakes->wait_past(seen)) << "no wake-up for output";
    }
    EXPECT_EQ(received, "got hello\n");
    std::optional<BoxliteResult<ExecResult>> result;
    while (!(result = execution->try_wait())) {
        const int seen = wakes->seen();
        if ((result = execution->try_wait())) break;
        ASSERT_TRUE(wakes->wait_past(seen));
    }
    ASSERT_TRUE(*result) << result->error().to_string();
    EXPECT_EQ((*result)->exit_code, 4);
    auto closed = in.try_write_some(std::as_bytes(std::span(line.data(), line.size())));
    ASSERT_FALSE(closed);
    EXPECT_EQ(closed.error().kind(), ErrorKind::InvalidState);
}

TEST_F(DirectAgent, BeginExecOfAMissingProgramIsRefusedThroughPoll) {
    auto wakes = std::make_shared<WakeCounter>();
    auto pending = agent().begin_exec(BoxCommand("/nonexistent/program"), [wakes] { wakes->notify(); });
    ASSERT_TRUE(pending) << pending.error().to_string();
    while (true) {
        const int seen = wakes->seen();
        if (auto started = pending->poll()) {
            ASSERT_FALSE(*started);
            EXPECT_EQ(started->error().kind(), ErrorKind::Execution);
            EXPECT_NE(started->error().message().find("/nonexistent/program"), std::string::npos)
                << started->error().to_string();
            break;
        }
        ASSERT_TRUE(wakes->wait_past(seen));
    }
    // The connection still serves other executions.
    auto out = agent().run(BoxCommand("/bin/echo").arg("still fine"));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->stdout_text, "still fine\n");
}

/// Processes whose command line contains `marker` (read from /proc; the caller's own excluded).
std::vector<pid_t> processes_with(const std::string& marker) {
    std::vector<pid_t> found;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        const std::string cmdline = boxlite::test::read_proc_file(entry.path() / "cmdline");
        const auto pid = static_cast<pid_t>(std::stoi(name));
        if (pid != ::getpid() && cmdline.find(marker) != std::string::npos) found.push_back(pid);
    }
    return found;
}

TEST_F(DirectAgent, AnAbandonedBeginIsKilled) {
    for (bool wait_for_start : {false, true}) {
        // The marker stays in the shell's command line (no exec): the shell and its sleep are
        // one process group, which the kill ends.
        const auto marker = (dir_.path() / (wait_for_start ? "started" : "starting")).string();
        auto wakes = std::make_shared<WakeCounter>();
        auto pending = agent().begin_exec(BoxCommand("/bin/sh").args({"-c", "sleep 1000; : " + marker}),
                                          [wakes] { wakes->notify(); });
        ASSERT_TRUE(pending) << pending.error().to_string();
        if (wait_for_start) {  // started and not yet polled
            while (processes_with(marker).empty()) std::this_thread::sleep_for(1ms);
        }
        pending->abandon();
        // Once a later command on the same connection has run, the agent has handled the kill
        // (or the refusal to start) of the abandoned one; the process is then reaped.
        auto sentinel = agent().run(BoxCommand("/bin/true"));
        ASSERT_TRUE(sentinel) << sentinel.error().to_string();
        for (int i = 0; i < 30000 && !processes_with(marker).empty(); ++i) std::this_thread::sleep_for(1ms);
        EXPECT_TRUE(processes_with(marker).empty()) << "the abandoned execution still runs";
    }
}

// ---- stdin as a descriptor: the command reads a host pipe itself --------------------------------

/// Whether process `pid` has the pipe `fd` (any end) open.
bool holds_pipe(pid_t pid, int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return false;
    const auto wanted = "pipe:[" + std::to_string(st.st_ino) + "]";
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(fmt::format("/proc/{}/fd", pid), ec)) {
        if (fs::read_symlink(entry.path(), ec).string() == wanted) return true;
    }
    return false;
}

TEST_F(DirectAgent, StdinPipeIsReadByTheCommandItself) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    auto exec = agent().exec(BoxCommand("/bin/sh").args({"-c", "cat | wc -c"}).stdin_descriptor(p[0]));
    ASSERT_TRUE(exec) << exec.error().to_string();
    EXPECT_TRUE(exec->stdin_passed());
    EXPECT_FALSE(holds_pipe(pid_, p[0])) << "the agent kept a copy of the command's stdin";
    ::close(p[0]);
    // Nothing goes through the connection: writing fails, closing does nothing.
    auto in = exec->stdin();
    ASSERT_TRUE(in);
    EXPECT_FALSE(in->write("x"));
    EXPECT_TRUE(in->close());
    std::thread writer([&] {
        std::vector<char> chunk(1 << 20, 'a');
        for (int i = 0; i < 8; ++i) {
            for (std::size_t done = 0; done < chunk.size();) {
                const auto n = ::write(p[1], chunk.data() + done, chunk.size() - done);
                if (n <= 0) return;
                done += static_cast<std::size_t>(n);
            }
        }
        ::close(p[1]);
    });
    auto out = exec->collect();
    writer.join();
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->exit_code, 0) << out->stderr_text;
    EXPECT_EQ(out->stdout_text, "8388608\n");
}

TEST_F(DirectAgent, StdinThatIsNotAReadOnlyPipeStreamsAsFrames) {
    const auto file = dir_.path() / "input";
    std::ofstream(file) << "from a file";
    const int regular = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    for (const int fd : {regular, p[1]}) {
        auto exec = agent().exec(BoxCommand("/bin/cat").stdin_descriptor(fd));
        ASSERT_TRUE(exec) << exec.error().to_string();
        EXPECT_FALSE(exec->stdin_passed());
        auto in = exec->stdin();
        ASSERT_TRUE(in);
        ASSERT_TRUE(in->write("framed"));
        ASSERT_TRUE(in->close());
        auto out = exec->stdout();
        ASSERT_TRUE(out);
        auto text = out->read_all();
        ASSERT_TRUE(text);
        EXPECT_EQ(*text, "framed");
        auto result = exec->wait();
        ASSERT_TRUE(result);
        EXPECT_EQ(result->exit_code, 0);
    }
    ::close(regular);
    ::close(p[0]);
    ::close(p[1]);
}

}  // namespace
