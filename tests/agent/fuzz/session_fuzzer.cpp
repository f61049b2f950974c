// libFuzzer target: the host's Session (reader thread, dispatch, credit accounting, the waits of
// start/read/write/exit) fed by a hostile agent. A scripted agent answers the handshake, waits
// for the host's Exec on stream 1, then sends the fuzz input as its reply and hangs up; the host
// meanwhile runs an execution as a caller would. Nothing may crash, hang, or trip a sanitizer.
#include <boxlite/protocol/messages.hpp>
#include <boxlite/protocol/session.hpp>
#include <boxlite/transport/unix_transport.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <thread>

using namespace boxlite;
using namespace boxlite::protocol;
using namespace std::chrono_literals;

namespace {

/// The fake agent: hello-ack, then `input` once Exec arrived, then EOF; drains what the host
/// sends until the host closes.
void play_agent(int fd, const std::uint8_t* input, std::size_t size) {
    FrameDecoder decoder;
    bool replied_hello = false;
    bool sent_input = false;
    std::array<std::byte, 16 * 1024> buf{};
    while (true) {
        const auto n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        decoder.feed(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)));
        while (true) {
            auto frame = decoder.next();
            if (!frame || !*frame) break;
            if ((*frame)->type == FrameType::Hello && !replied_hello) {
                const auto ack = encode_frame(FrameType::HelloAck, 0, HelloAck{kMaxVersion, "fuzz"}.encode());
                (void)::send(fd, ack.data(), ack.size(), MSG_NOSIGNAL);
                replied_hello = true;
            } else if ((*frame)->type == FrameType::Exec && !sent_input) {
                (void)::send(fd, input, size, MSG_NOSIGNAL);
                ::shutdown(fd, SHUT_WR);
                sent_input = true;
            }
        }
    }
    if (!sent_input) ::shutdown(fd, SHUT_WR);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;
    std::thread agent([&] { play_agent(fds[1], data, size); });
    {
        auto session = std::make_shared<Session>(ErasedStream::from(UnixStream(fds[0])));
        // Every wait below ends when the fake hangs up; the deadlines only guard against bugs.
        if (session->handshake(10s)) {
            ExecRequest request;
            request.program = "fuzzed";
            request.stderr_window = 4096;  // unequal windows exercise per-channel credit
            if (auto state = session->start(request, 10s)) {
                auto& e = **state;
                const std::array<std::byte, 8> input{};
                (void)session->write_stdin(e, input);
                (void)session->close_stdin(e);
                std::array<std::byte, 1000> out{};
                for (auto channel : {Channel::Stdout, Channel::Stderr}) {
                    while (true) {
                        auto n = session->read_output(e, channel, out);
                        if (!n || *n == 0) break;
                    }
                }
                (void)session->wait_exit(e, 10s);
                session->forget(e.id);
            }
            (void)session->ping(0ms);
        }
    }  // closes the host end; the fake sees EOF
    agent.join();
    ::close(fds[1]);
    return 0;
}
