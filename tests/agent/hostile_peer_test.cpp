// Each end of the protocol against a peer that breaks the rules:
//   - AgentVsHostileHost: raw frames to the real boxlite-agent (frames before hello, oversized
//     frames, a stream id in use, stdin beyond credit, stdin credit from the host);
//   - SessionVsHostileAgent: the host's Session and AgentClient against a scripted fake agent
//     (silence at every request/reply, output without credit, unknown streams, a second Started,
//     a copy-out archive that tries to land beside its destination).
#include <boxlite/execution.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/unix_transport.hpp>

#include "base/fd_passing.hpp"
#include "raw_peer.hpp"
#include "raw_tar.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <array>
#include <fstream>
#include <cstring>
#include <future>
#include <stdexcept>
#include <thread>

using namespace boxlite;
using namespace boxlite::protocol;
using namespace std::chrono_literals;
using boxlite::test::RawPeer;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> zeros(std::size_t n) { return std::vector<std::byte>(n, std::byte{0}); }

// ---------------------------------------------------------------------------------------------
// The real agent against a hostile host
// ---------------------------------------------------------------------------------------------

class AgentVsHostileHost : public ::testing::Test {
protected:
    void SetUp() override {
        const auto binary = test::built_binary("boxlite-agent");
        ASSERT_TRUE(fs::exists(binary)) << binary;
        socket_ = (dir_.path() / "agent.sock").string();
        agent_.emplace(binary.string(), socket_);
        auto stream = UnixTransport{}.connect("unix:" + socket_, 5s);
        ASSERT_TRUE(stream) << stream.error().to_string();
        peer_.emplace(::dup(stream->native_handle()));
    }

    void hello() {
        ASSERT_TRUE(peer_->send(FrameType::Hello, 0, Hello{}.encode()));
        auto ack = peer_->next();
        ASSERT_TRUE(ack);
        ASSERT_EQ(ack->type, FrameType::HelloAck);
    }

    /// Starts `sleep 1000` on `stream`; its pid.
    pid_t start_sleeper(std::uint32_t stream) {
        ExecRequest request;
        request.program = "/bin/sleep";
        request.args = {"1000"};
        EXPECT_TRUE(peer_->send(FrameType::Exec, stream, request.encode()));
        auto started = peer_->next_of(FrameType::Started);
        EXPECT_TRUE(started);
        if (!started) return -1;
        auto m = Started::decode(started->payload);
        EXPECT_TRUE(m);
        return m ? m->pid : -1;
    }

    /// The agent's closing error on stream 0, then the end of the connection.
    std::string expect_connection_error() {
        auto error = peer_->next_of(FrameType::Error);
        EXPECT_TRUE(error) << "no error frame before the connection ended";
        if (!error) return {};
        EXPECT_EQ(error->stream, 0U);
        EXPECT_TRUE(peer_->wait_closed()) << "the agent kept the connection open";
        return test::error_text(*error);
    }

    test::TempDir dir_{"boxlite-hostile-host"};
    std::string socket_;
    std::optional<test::AgentProcess> agent_;
    std::optional<RawPeer> peer_;
};

TEST_F(AgentVsHostileHost, FrameBeforeHelloIsRefused) {
    ASSERT_TRUE(peer_->send(FrameType::Ping, 0));
    EXPECT_NE(expect_connection_error().find("first frame must be hello"), std::string::npos);
}

TEST_F(AgentVsHostileHost, ExecBeforeHelloIsRefused) {
    ExecRequest request;
    request.program = "/bin/true";
    ASSERT_TRUE(peer_->send(FrameType::Exec, 1, request.encode()));
    EXPECT_NE(expect_connection_error().find("hello"), std::string::npos);
}

TEST_F(AgentVsHostileHost, OversizedFrameIsRefusedBeforeItsPayload) {
    hello();
    // Only the header: the agent must refuse on the length alone, not wait for 2 MiB.
    const auto header = encode_header(FrameType::Ping, 0, 2U << 20);
    ASSERT_TRUE(peer_->send_raw(header));
    EXPECT_NE(expect_connection_error().find("exceeds"), std::string::npos);
}

TEST_F(AgentVsHostileHost, UnknownFrameTypeIsRefused) {
    hello();
    std::array<std::byte, kHeaderSize> header{};
    header[4] = std::byte{99};
    ASSERT_TRUE(peer_->send_raw(header));
    EXPECT_NE(expect_connection_error().find("unknown"), std::string::npos);
}

TEST_F(AgentVsHostileHost, StreamIdInUseIsRefusedAndItsProcessKilled) {
    hello();
    const pid_t pid = start_sleeper(1);
    ASSERT_GT(pid, 0);
    ExecRequest again;
    again.program = "/bin/true";
    ASSERT_TRUE(peer_->send(FrameType::Exec, 1, again.encode()));
    EXPECT_NE(expect_connection_error().find("already in use"), std::string::npos);
    EXPECT_TRUE(test::process_gone(pid)) << "the dropped connection's execution kept running";
}

TEST_F(AgentVsHostileHost, StdinBeyondCreditIsRefusedAndItsProcessKilled) {
    hello();
    const pid_t pid = start_sleeper(1);
    ASSERT_GT(pid, 0);
    // sleep never reads: once its pipe is full the agent buffers, and it may buffer only the
    // window it granted. Send far more without waiting for credit.
    const auto chunk = zeros(kMaxChunk);
    for (std::size_t sent = 0; sent < 4 * kDefaultWindow + (1U << 20); sent += chunk.size()) {
        if (!peer_->send(FrameType::Stdin, 1, chunk)) break;  // the agent already hung up
    }
    EXPECT_NE(expect_connection_error().find("overran its stdin window"), std::string::npos);
    EXPECT_TRUE(test::process_gone(pid));
}

TEST_F(AgentVsHostileHost, StdinCreditFromTheHostIsRefused) {
    hello();
    const pid_t pid = start_sleeper(1);
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(peer_->send(FrameType::Credit, 1, Credit{Channel::Stdin, 1U << 30}.encode()));
    EXPECT_NE(expect_connection_error().find("stdin credit"), std::string::npos);
    EXPECT_TRUE(test::process_gone(pid));
}

TEST_F(AgentVsHostileHost, PingsWhileNotReadingDoNotGrowTheAgentWithoutBound) {
    hello();
    // 1 MiB pings, never reading a pong. The agent stops reading once its queue for us backs
    // up, so our sends stall (the socket buffers fill) instead of its memory growing: check
    // that sending stalls, then that every pong still arrives once we read.
    int flags = ::fcntl(peer_->fd(), F_GETFL);
    ASSERT_EQ(::fcntl(peer_->fd(), F_SETFL, flags | O_NONBLOCK), 0);
    const auto frame = encode_frame(FrameType::Ping, 0, zeros(kMaxPayload));
    constexpr std::size_t kFarBeyondTheQueue = 512U << 20;  // 64 MiB queue + socket buffers
    std::size_t sent_bytes = 0;
    int idle_ms = 0;  // the agent may just be busy; a real stall lasts
    while (sent_bytes < kFarBeyondTheQueue && idle_ms < 2000) {
        const auto offset = sent_bytes % frame.size();
        const auto n = ::send(peer_->fd(), frame.data() + offset, frame.size() - offset, MSG_NOSIGNAL);
        if (n > 0) {
            sent_bytes += static_cast<std::size_t>(n);
            idle_ms = 0;
        } else if (n < 0 && errno == EAGAIN) {
            ::usleep(1000);
            ++idle_ms;
        } else {
            FAIL() << "the agent closed the connection: " << std::strerror(errno);
        }
    }
    EXPECT_LT(sent_bytes, kFarBeyondTheQueue) << "the agent kept reading 1 MiB pings it could not answer";
    ASSERT_EQ(::fcntl(peer_->fd(), F_SETFL, flags), 0);
    // Finish the partial frame so the stream stays in sync, then every pong comes back.
    const auto rest = frame.size() - sent_bytes % frame.size();
    std::thread finisher([&] {
        if (rest != frame.size()) (void)peer_->send_raw(std::span(frame).subspan(frame.size() - rest));
    });
    const auto pings = (sent_bytes + frame.size() - 1) / frame.size();
    std::size_t pongs = 0;
    while (pongs < pings) {
        auto pong = peer_->next_of(FrameType::Pong, 30s);
        if (!pong) break;
        ++pongs;
    }
    finisher.join();
    EXPECT_EQ(pongs, pings);
}

// ---------------------------------------------------------------------------------------------
// The host's Session against a hostile agent
// ---------------------------------------------------------------------------------------------

class SessionVsHostileAgent : public ::testing::Test {
protected:
    void SetUp() override {
        int fds[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        host_fd_ = fds[0];
        fake_.emplace(fds[1]);
    }

    /// The client, after the fake answered the handshake.
    AgentClient connect() {
        auto answered = std::async(std::launch::async, [&] { return fake_->answer_hello(); });
        auto client = AgentClient::connect(UnixStream(host_fd_), 5s);
        // gtest fails the test on an exception; there is no client to go on with.
        if (!answered.get()) throw std::runtime_error("the fake agent did not see a hello");
        if (!client) throw std::runtime_error(client.error().to_string());
        return std::move(*client);
    }

    /// Runs exec() while the fake answers Exec with Started (or runs `answer`).
    BoxliteResult<Execution> exec_started(AgentClient& client, const BoxCommand& command,
                                          std::uint32_t* stream = nullptr) {
        auto answered = std::async(std::launch::async, [&] {
            auto exec = fake_->next_of(FrameType::Exec);
            if (!exec) return false;
            if (stream != nullptr) *stream = exec->stream;
            return fake_->send(FrameType::Started, exec->stream, Started{4242, kDefaultWindow}.encode());
        });
        auto execution = client.exec(command);
        EXPECT_TRUE(answered.get());
        return execution;
    }

    /// Waits until the session noticed the connection is unusable.
    static bool becomes_dead(AgentClient& client) {
        for (int i = 0; i < 1000 && client.alive(); ++i) std::this_thread::sleep_for(10ms);
        return !client.alive();
    }

    int host_fd_ = -1;
    std::optional<RawPeer> fake_;
};

// An agent that does not offer kFeatureStdinDescriptor (a VM's, or an older one) gets stdin as
// frames even when the caller gives a pipe: the Exec says nothing of a descriptor.
TEST_F(SessionVsHostileAgent, AnAgentWithoutTheFeatureGetsStdinAsFrames) {
    auto client = connect();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    auto answered = std::async(std::launch::async, [&]() -> std::optional<std::uint32_t> {
        auto exec = fake_->next_of(FrameType::Exec);
        if (!exec) return std::nullopt;
        auto request = ExecRequest::decode(exec->payload);
        if (!request || request->stdin_descriptor) return std::nullopt;
        if (!fake_->send(FrameType::Started, exec->stream, Started{4242, kDefaultWindow}.encode())) return std::nullopt;
        return exec->stream;
    });
    auto execution = client.exec(BoxCommand("cat").stdin_descriptor(p[0]));
    const auto stream = answered.get();
    ASSERT_TRUE(stream) << "the exec request asked for a descriptor the agent does not take";
    ASSERT_TRUE(execution) << execution.error().to_string();
    EXPECT_FALSE(execution->stdin_passed());
    auto in = execution->stdin();
    ASSERT_TRUE(in);
    ASSERT_TRUE(in->write("framed"));
    auto data = fake_->next_of(FrameType::Stdin);
    ASSERT_TRUE(data);
    EXPECT_EQ(data->stream, *stream);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(data->payload.data()), data->payload.size()), "framed");
    ::close(p[0]);
    ::close(p[1]);
}

TEST(SessionHandshake, AgentThatAcceptsAndNeverAnswersTimesOut) {
    test::TempDir dir("boxlite-silent-agent");
    const auto path = (dir.path() / "agent.sock").string();
    const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listener, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(listener, 4), 0);
    auto stream = UnixTransport{}.connect("unix:" + path, 5s);
    ASSERT_TRUE(stream) << stream.error().to_string();
    const int accepted = ::accept(listener, nullptr, nullptr);  // accepted, then silence
    ASSERT_GE(accepted, 0);
    auto client = AgentClient::connect(std::move(*stream), 300ms);
    ASSERT_FALSE(client) << "the handshake returned without an answer";
    EXPECT_EQ(client.error().kind(), ErrorKind::Rpc);
    EXPECT_NE(client.error().message().find("handshake"), std::string::npos) << client.error().to_string();
    ::close(accepted);
    ::close(listener);
}

TEST_F(SessionVsHostileAgent, SomethingElseThanHelloAckFailsTheHandshake) {
    auto answered = std::async(std::launch::async, [&] {
        (void)fake_->next();
        return fake_->send(FrameType::Pong, 0);
    });
    auto client = AgentClient::connect(UnixStream(host_fd_), 5s);
    ASSERT_TRUE(answered.get());
    ASSERT_FALSE(client);
    EXPECT_EQ(client.error().kind(), ErrorKind::Portal);
    EXPECT_NE(client.error().message().find("expected hello-ack"), std::string::npos) << client.error().to_string();
}

TEST_F(SessionVsHostileAgent, SilentAgentTimesOutPingMetricsAndShutdown) {
    auto client = connect();
    auto ping = client.ping(200ms);
    ASSERT_FALSE(ping);
    EXPECT_EQ(ping.error().kind(), ErrorKind::Rpc);
    auto metrics = client.metrics(200ms);
    ASSERT_FALSE(metrics);
    EXPECT_EQ(metrics.error().kind(), ErrorKind::Rpc);
    auto shutdown = client.shutdown(200ms);
    ASSERT_FALSE(shutdown);
    EXPECT_NE(shutdown.error().message().find("shutdown"), std::string::npos) << shutdown.error().to_string();
}

TEST_F(SessionVsHostileAgent, StartTimesOutAndALateStartedIsKilled) {
    auto client = connect();
    client.set_start_timeout(200ms);
    auto exec = client.exec(BoxCommand("/bin/true"));
    ASSERT_FALSE(exec);
    EXPECT_EQ(exec.error().kind(), ErrorKind::Rpc);
    EXPECT_NE(exec.error().message().find("did not start"), std::string::npos) << exec.error().to_string();
    // The agent starts it after all: the host kills it and drops its output, and the connection
    // (other executions on it) stays usable.
    auto request = fake_->next_of(FrameType::Exec);
    ASSERT_TRUE(request);
    ASSERT_TRUE(fake_->send(FrameType::Started, request->stream, Started{7, kDefaultWindow}.encode()));
    ASSERT_TRUE(fake_->send(FrameType::Stdout, request->stream, zeros(100)));
    auto signal = fake_->next_of(FrameType::Signal);
    ASSERT_TRUE(signal);
    EXPECT_EQ(signal->stream, request->stream);
    auto signo = SignalRequest::decode(signal->payload);
    ASSERT_TRUE(signo);
    EXPECT_EQ(signo->signo, 9);
    EXPECT_TRUE(client.alive());
}

TEST_F(SessionVsHostileAgent, OutputBeyondCreditEndsTheConnection) {
    auto client = connect();
    std::uint32_t stream = 0;
    auto exec = exec_started(client, BoxCommand("/bin/cat"), &stream);
    ASSERT_TRUE(exec) << exec.error().to_string();
    auto out = exec->stdout();  // taken and never read: no credit goes back
    for (std::uint32_t sent = 0; sent <= kDefaultWindow; sent += kMaxChunk) {
        ASSERT_TRUE(fake_->send(FrameType::Stdout, stream, zeros(kMaxChunk)));
    }
    auto result = exec->wait();
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().kind(), ErrorKind::Portal);
    EXPECT_NE(result.error().message().find("credit"), std::string::npos) << result.error().to_string();
    EXPECT_FALSE(client.alive());
}

TEST_F(SessionVsHostileAgent, OutputForAnUnknownStreamEndsTheConnection) {
    auto client = connect();
    ASSERT_TRUE(fake_->send(FrameType::Stdout, 77, zeros(10)));
    EXPECT_TRUE(becomes_dead(client));
    auto ping = client.ping(1s);
    ASSERT_FALSE(ping);
    EXPECT_NE(ping.error().message().find("unknown execution 77"), std::string::npos) << ping.error().to_string();
}

TEST_F(SessionVsHostileAgent, SecondStartedEndsTheConnection) {
    auto client = connect();
    std::uint32_t stream = 0;
    auto exec = exec_started(client, BoxCommand("/bin/true"), &stream);
    ASSERT_TRUE(exec) << exec.error().to_string();
    ASSERT_TRUE(fake_->send(FrameType::Started, stream, Started{1, kDefaultWindow}.encode()));
    auto result = exec->wait();
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().kind(), ErrorKind::Portal);
    EXPECT_NE(result.error().message().find("twice"), std::string::npos) << result.error().to_string();
}

TEST_F(SessionVsHostileAgent, HostOnlyFrameFromTheAgentEndsTheConnection) {
    auto client = connect();
    ASSERT_TRUE(fake_->send(FrameType::Exec, 1, ExecRequest{}.encode()));
    EXPECT_TRUE(becomes_dead(client));
}

TEST(SessionCredit, ReturnsPerChannelWindow) {
    // Unequal windows (exec() always asks for equal ones, so the request is built by hand):
    // credit must come back after a quarter of *each* window. With a shared threshold, a quarter
    // of the larger window, the 4 KiB channel would never be credited again.
    ExecRequest request;
    request.program = "/bin/cat";
    request.stdout_window = 1U << 20;
    request.stderr_window = 4096;
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    RawPeer fake(fds[1]);
    auto own = std::make_shared<Session>(ErasedStream::from(UnixStream(fds[0])));
    auto answered = std::async(std::launch::async, [&] { return fake.answer_hello(); });
    ASSERT_TRUE(own->handshake(5s));
    ASSERT_TRUE(answered.get());
    auto started = std::async(std::launch::async, [&] {
        auto exec = fake.next_of(FrameType::Exec);
        return exec && fake.send(FrameType::Started, exec->stream, Started{1, kDefaultWindow}.encode());
    });
    auto state = own->start(request, 5s);
    ASSERT_TRUE(started.get());
    ASSERT_TRUE(state) << state.error().to_string();
    ASSERT_TRUE(fake.send(FrameType::Stderr, (*state)->id, zeros(4096)));
    std::array<std::byte, 4096> buf{};
    std::size_t got = 0;
    while (got < 4096) {
        auto n = own->read_output(**state, Channel::Stderr, std::span(buf).subspan(got));
        ASSERT_TRUE(n) << n.error().to_string();
        ASSERT_GT(*n, 0U);
        got += *n;
    }
    std::uint64_t credited = 0;
    while (credited < 4096) {
        auto credit = fake.next_of(FrameType::Credit, 5s);
        ASSERT_TRUE(credit) << "no stderr credit after the consumer took the whole 4 KiB window";
        auto m = Credit::decode(credit->payload);
        ASSERT_TRUE(m);
        EXPECT_EQ(m->channel, Channel::Stderr);
        credited += m->bytes;
    }
    EXPECT_EQ(credited, 4096U);
}

TEST_F(SessionVsHostileAgent, CopyOutArchiveLandsOnlyUnderItsOwnNameWithoutSetuid) {
    auto client = connect();
    test::TempDir host;
    const auto archive =
        test::RawTar{}.file("sibling/evil", "x", 0644).file("sibling/suid", "#!/bin/sh\n", 04755).finish();
    auto agent_side = std::async(std::launch::async, [&] {
        auto exec = fake_->next_of(FrameType::Exec);
        if (!exec) return false;
        auto request = ExecRequest::decode(exec->payload);
        if (!request || request->kind != ExecKind::CopyOut || request->path != "/data") return false;
        const auto s = exec->stream;
        bool ok = fake_->send(FrameType::Started, s, Started{9, kDefaultWindow}.encode());
        for (std::size_t off = 0; ok && off < archive.size(); off += kMaxChunk) {
            const auto n = std::min<std::size_t>(kMaxChunk, archive.size() - off);
            ok = fake_->send(FrameType::Stdout, s,
                             std::vector<std::byte>(reinterpret_cast<const std::byte*>(archive.data() + off),
                                                    reinterpret_cast<const std::byte*>(archive.data() + off + n)));
        }
        return ok && fake_->send(FrameType::Exit, s, ExitStatus{0, false, {}}.encode());
    });
    auto copied = client.copy_out("/data", host.str() + "/");
    ASSERT_TRUE(agent_side.get());
    ASSERT_TRUE(copied) << copied.error().to_string();
    EXPECT_FALSE(fs::exists(host.path() / "sibling")) << "the guest chose where the copy landed";
    EXPECT_EQ(test::read_file(host.path() / "data/evil"), "x");
    struct stat st {};
    ASSERT_EQ(::lstat((host.path() / "data/suid").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755U) << "a setuid file from the guest reached the host";
}

// ---- stdin as a descriptor (ExecRequest::stdin_descriptor, SCM_RIGHTS) ----------------------

/// Whether every read end of the pipe whose write end is `write_fd` is closed (POLLERR).
bool readers_gone(int write_fd) {
    pollfd p{write_fd, POLLOUT, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLERR) != 0;
}

/// An exec frame for `cat` on `stream` saying its stdin is a descriptor, sent with `fds`.
bool send_exec_with_fds(RawPeer& peer, std::uint32_t stream, std::span<const int> fds, bool tty = false) {
    ExecRequest request;
    request.program = "/bin/cat";
    request.tty = tty;
    request.stdin_descriptor = true;
    const auto frame = encode_frame(FrameType::Exec, stream, request.encode());
    return base::send_with_fds(peer.fd(), frame, fds) == static_cast<ssize_t>(frame.size());
}

TEST_F(AgentVsHostileHost, UnixConnectionOffersStdinDescriptors) {
    ASSERT_TRUE(peer_->send(FrameType::Hello, 0, Hello{}.encode()));
    auto ack = peer_->next();
    ASSERT_TRUE(ack);
    ASSERT_EQ(ack->type, FrameType::HelloAck);
    auto decoded = HelloAck::decode(ack->payload);
    ASSERT_TRUE(decoded) << decoded.error().to_string();
    EXPECT_NE(decoded->features & kFeatureStdinDescriptor, 0U);
}

TEST_F(AgentVsHostileHost, StdinDescriptorThatIsNotOneReadOnlyPipeIsRefusedAndClosed) {
    hello();
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    const auto file = dir_.path() / "plain";
    std::ofstream(file) << "x";
    const int regular = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(regular, 0);
    const auto fifo = dir_.path() / "named";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const int named = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(named, 0);
    struct Case {
        std::vector<int> fds;
        bool tty;
        std::string expected;
    };
    const std::vector<Case> cases = {
        {{regular}, false, "not an anonymous pipe"}, {{named}, false, "not an anonymous pipe"},
        {{p[1]}, false, "open for writing"},         {{}, false, "0 descriptors"},
        {{p[0], p[0]}, false, "2 descriptors"},      {{p[0]}, true, "without a tty"},
    };
    std::uint32_t stream = 1;
    for (const auto& c : cases) {
        SCOPED_TRACE(c.expected);
        ASSERT_TRUE(send_exec_with_fds(*peer_, stream, c.fds, c.tty));
        auto error = peer_->next_of(FrameType::Error);
        ASSERT_TRUE(error) << "no refusal";
        EXPECT_EQ(error->stream, stream);
        EXPECT_NE(test::error_text(*error).find(c.expected), std::string::npos) << test::error_text(*error);
        ++stream;
    }
    // The connection still works, and the agent kept none of the descriptors: with ours closed,
    // the pipe has no reader left.
    ASSERT_TRUE(peer_->send(FrameType::Ping, 0));
    ASSERT_TRUE(peer_->next_of(FrameType::Pong));
    ::close(p[0]);
    EXPECT_TRUE(readers_gone(p[1])) << "the agent still holds a refused stdin descriptor";
    ::close(p[1]);
    ::close(regular);
    ::close(named);
}

TEST_F(AgentVsHostileHost, DescriptorsBesideOtherFramesAreClosed) {
    hello();
    int p[2];
    ASSERT_TRUE(::pipe(p) == 0);
    // With a ping, and with an exec that does not ask for one: neither keeps it.
    const auto ping = encode_frame(FrameType::Ping, 0, {});
    const int fds[1] = {p[0]};
    ASSERT_EQ(base::send_with_fds(peer_->fd(), ping, fds), static_cast<ssize_t>(ping.size()));
    ASSERT_TRUE(peer_->next_of(FrameType::Pong));
    ExecRequest request;
    request.program = "/bin/true";
    const auto exec = encode_frame(FrameType::Exec, 1, request.encode());
    ASSERT_EQ(base::send_with_fds(peer_->fd(), exec, fds), static_cast<ssize_t>(exec.size()));
    ASSERT_TRUE(peer_->next_of(FrameType::Exit));
    ::close(p[0]);
    EXPECT_TRUE(readers_gone(p[1])) << "the agent kept a descriptor no frame asked for";
    ::close(p[1]);
}

}  // namespace
