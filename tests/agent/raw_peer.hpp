// One end of an agent connection driven frame by frame, for tests that play a hostile host
// against the real agent, or a hostile agent against the host's Session.
#pragma once

#include <boxlite/protocol/frame.hpp>
#include <boxlite/protocol/messages.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace boxlite::test {

class RawPeer {
public:
    explicit RawPeer(int fd) : fd_(fd) {}
    RawPeer(const RawPeer&) = delete;
    RawPeer& operator=(const RawPeer&) = delete;
    ~RawPeer() {
        if (fd_ >= 0) ::close(fd_);
    }

    /// Sends bytes as they are; false once the other end is gone (EPIPE, ECONNRESET).
    bool send_raw(std::span<const std::byte> data) {
        while (!data.empty()) {
            const auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            data = data.subspan(static_cast<std::size_t>(n));
        }
        return true;
    }
    bool send(protocol::FrameType type, std::uint32_t stream, const std::vector<std::byte>& payload = {}) {
        return send_raw(protocol::encode_frame(type, stream, payload));
    }

    /// The next frame within `timeout`; nullopt on timeout, end of stream or a malformed frame
    /// (eof() tells which).
    std::optional<protocol::Frame> next(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (true) {
            auto frame = decoder_.next();
            if (!frame) {
                eof_ = true;
                return std::nullopt;
            }
            if (*frame) return std::move(**frame);
            if (eof_) return std::nullopt;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                    std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            std::byte buf[64 * 1024];
            const auto n = ::recv(fd_, buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                eof_ = true;
                continue;
            }
            decoder_.feed(std::span<const std::byte>(buf, static_cast<std::size_t>(n)));
        }
    }

    /// The next frame of `type` (others are skipped: credits, output), within `timeout`.
    std::optional<protocol::Frame> next_of(protocol::FrameType type,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            auto frame = next(
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
            if (!frame) return std::nullopt;
            if (frame->type == type) return frame;
        }
        return std::nullopt;
    }

    /// Reads (and drops) frames until the other end closes; false if it did not within `timeout`.
    bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!eof_ && std::chrono::steady_clock::now() < deadline) {
            (void)next(
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
        }
        return eof_;
    }

    [[nodiscard]] bool eof() const { return eof_; }
    [[nodiscard]] int fd() const { return fd_; }

    /// Plays the agent's side of the handshake.
    bool answer_hello() {
        auto hello = next();
        if (!hello || hello->type != protocol::FrameType::Hello) return false;
        return send(protocol::FrameType::HelloAck, 0, protocol::HelloAck{protocol::kMaxVersion, "fake-agent"}.encode());
    }

private:
    int fd_;
    protocol::FrameDecoder decoder_;
    bool eof_ = false;
};

inline std::string error_text(const protocol::Frame& frame) {
    auto message = protocol::ErrorMessage::decode(frame.payload);
    return message ? message->message : std::string("(malformed error frame)");
}

/// boxlite-agent started directly (no namespaces) on `socket`; `before_exec` runs in the child
/// (e.g. to give it private mounts). Killed and reaped on destruction.
class AgentProcess {
public:
    AgentProcess(const std::string& agent_binary, const std::string& socket,
                 const std::function<void()>& before_exec = {}) {
        pid_ = ::fork();
        if (pid_ == 0) {
            if (before_exec) before_exec();
            const std::string endpoint = "unix:" + socket;
            ::execl(agent_binary.c_str(), "boxlite-agent", "--listen", endpoint.c_str(), nullptr);
            ::_exit(127);
        }
    }
    AgentProcess(const AgentProcess&) = delete;
    AgentProcess& operator=(const AgentProcess&) = delete;
    ~AgentProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    [[nodiscard]] pid_t pid() const { return pid_; }

private:
    pid_t pid_ = -1;
};

/// True once `pid` has exited (gone, or a zombie nobody reaped yet), polling up to `timeout`.
inline bool process_gone(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        char path[64];
        std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
        FILE* f = std::fopen(path, "r");
        if (f == nullptr) return true;
        char state = '?';
        const int matched = std::fscanf(f, "%*d (%*[^)]) %c", &state);
        std::fclose(f);
        if (matched == 1 && (state == 'Z' || state == 'X')) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        ::usleep(10000);
    }
}

}  // namespace boxlite::test
