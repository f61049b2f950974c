// The BoxLite agent protocol's framing layer (docs/protocol.md is the full description).
//
// Every message is one frame: a fixed 12-byte little-endian header, then `length` bytes of payload.
//
//   offset 0  u32 length     payload bytes, 0 .. kMaxPayload
//   offset 4  u8  type       a FrameType; anything else is a protocol error
//   offset 5  u8  flags      must be 0 in version 1
//   offset 6  u16 reserved   must be 0
//   offset 8  u32 stream     0 = the connection itself; otherwise the execution it belongs to
//
// The host treats every byte from the agent as hostile: the decoder checks the length before it
// buffers anything, rejects unknown types and non-zero reserved bits, and payload decoders
// (messages.hpp) check every length against what is left. A decoder error ends the connection.
#pragma once

#include <boxlite/error.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace boxlite::protocol {

/// The protocol versions this build speaks. Hello carries [min, max]; the agent picks the highest
/// common one or refuses. Version 2 adds HelloAck's feature bits and ExecRequest's
/// stdin_descriptor (both trailing fields, see messages.hpp); a version-1 peer never sees either.
inline constexpr std::uint16_t kMinVersion = 1;
inline constexpr std::uint16_t kMaxVersion = 2;

inline constexpr std::size_t kHeaderSize = 12;
/// Largest payload of one frame. Data frames carry at most kMaxChunk; 1 MiB leaves room for an
/// exec request with a large environment while bounding what a hostile peer can make us buffer.
inline constexpr std::uint32_t kMaxPayload = 1U << 20;
/// Largest data chunk a sender puts in one Stdin/Stdout/Stderr frame (a quarter of
/// kMaxPayload: fewer frames and system calls per byte, measured in benchmark/agent). A stdin
/// frame the host splices from a pipe (Session::splice_stdin) may carry up to kMaxPayload: its
/// bytes are never copied by the host, and the agent splices them on into the command's pipe.
inline constexpr std::uint32_t kMaxChunk = 256U * 1024U;
/// Initial per-stream credit: how many data bytes a sender may have in flight before the
/// receiver grants more (see Credit). Credit returns per quarter of it, so a 2 MiB window
/// keeps the pipe full while the reader catches up; it is also what a reader that stops
/// reading holds buffered per stream.
inline constexpr std::uint32_t kDefaultWindow = 2U * 1024U * 1024U;

enum class FrameType : std::uint8_t {
    // connection level (stream 0)
    Hello = 1,     ///< host -> agent: Hello{min_version, max_version}; first frame
    HelloAck = 2,  ///< agent -> host: HelloAck{version, agent_version}
    Error = 3,     ///< either way: ErrorMessage{message}; on stream 0 the connection ends
    Ping = 4,      ///< host -> agent: empty; answered by Pong with the same payload
    Pong = 5,
    Shutdown = 6,        ///< host -> agent: stop every process and exit (graceful box stop)
    ShutdownAck = 7,     ///< agent -> host: about to exit
    MetricsRequest = 8,  ///< host -> agent: empty
    MetricsReply = 9,    ///< agent -> host: GuestMetrics
    // execution level (stream = execution id chosen by the host, never 0, unique per connection)
    Exec = 16,        ///< host -> agent: ExecRequest; answered by Started or Error
    Started = 17,     ///< agent -> host: Started{pid, stdin_window}
    Stdin = 18,       ///< host -> agent: raw bytes (counts against the agent's stdin credit)
    StdinClose = 19,  ///< host -> agent: empty; the process reads EOF once buffered bytes are written
    Stdout = 20,      ///< agent -> host: raw bytes (counts against the host's stdout credit)
    Stderr = 21,      ///< agent -> host: raw bytes (counts against the host's stderr credit)
    Credit = 22,      ///< either way: Credit{channel, bytes}; the receiver of data grants more
    Signal = 23,      ///< host -> agent: SignalRequest{signo}; sent to the process group
    Resize = 24,      ///< host -> agent: ResizeRequest{rows, cols}; TTY executions only
    Exit = 25,        ///< agent -> host: ExitStatus{code, message}; last frame of the stream
};

[[nodiscard]] constexpr bool is_known_frame_type(std::uint8_t value) noexcept {
    return (value >= 1 && value <= 9) || (value >= 16 && value <= 25);
}

/// Whether the agent may send a frame of this type (the others are the host's requests and
/// data: a host reading one from the agent ends the connection).
[[nodiscard]] constexpr bool agent_may_send(FrameType type) noexcept {
    switch (type) {
        case FrameType::HelloAck:
        case FrameType::Error:
        case FrameType::Pong:
        case FrameType::ShutdownAck:
        case FrameType::MetricsReply:
        case FrameType::Started:
        case FrameType::Stdout:
        case FrameType::Stderr:
        case FrameType::Credit:
        case FrameType::Exit: return true;
        default: return false;
    }
}

[[nodiscard]] constexpr std::string_view to_string(FrameType type) noexcept {
    switch (type) {
        case FrameType::Hello: return "hello";
        case FrameType::HelloAck: return "hello-ack";
        case FrameType::Error: return "error";
        case FrameType::Ping: return "ping";
        case FrameType::Pong: return "pong";
        case FrameType::Shutdown: return "shutdown";
        case FrameType::ShutdownAck: return "shutdown-ack";
        case FrameType::MetricsRequest: return "metrics-request";
        case FrameType::MetricsReply: return "metrics-reply";
        case FrameType::Exec: return "exec";
        case FrameType::Started: return "started";
        case FrameType::Stdin: return "stdin";
        case FrameType::StdinClose: return "stdin-close";
        case FrameType::Stdout: return "stdout";
        case FrameType::Stderr: return "stderr";
        case FrameType::Credit: return "credit";
        case FrameType::Signal: return "signal";
        case FrameType::Resize: return "resize";
        case FrameType::Exit: return "exit";
    }
    return "unknown";
}

struct FrameHeader {
    std::uint32_t length = 0;
    FrameType type = FrameType::Ping;
    std::uint32_t stream = 0;
};

struct Frame {
    FrameType type = FrameType::Ping;
    std::uint32_t stream = 0;
    std::vector<std::byte> payload;
};

namespace detail {
inline void put_le32(std::byte* out, std::uint32_t v) noexcept {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<std::byte>((v >> (8 * i)) & 0xFFU);
}
inline std::uint32_t get_le32(const std::byte* in) noexcept {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(in[i]);
    return v;
}
}  // namespace detail

[[nodiscard]] inline std::array<std::byte, kHeaderSize> encode_header(FrameType type, std::uint32_t stream,
                                                                      std::uint32_t length) noexcept {
    std::array<std::byte, kHeaderSize> header{};
    detail::put_le32(header.data(), length);
    header[4] = static_cast<std::byte>(type);
    detail::put_le32(header.data() + 8, stream);
    return header;
}

/// Header + payload in one buffer, ready for one write.
[[nodiscard]] inline std::vector<std::byte> encode_frame(FrameType type, std::uint32_t stream,
                                                         std::span<const std::byte> payload) {
    std::vector<std::byte> out(kHeaderSize + payload.size());
    const auto header = encode_header(type, stream, static_cast<std::uint32_t>(payload.size()));
    std::memcpy(out.data(), header.data(), kHeaderSize);
    if (!payload.empty()) std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
    return out;
}

/// Validates a header read from the peer.
[[nodiscard]] inline BoxliteResult<FrameHeader> decode_header(std::span<const std::byte, kHeaderSize> bytes) {
    FrameHeader header;
    header.length = detail::get_le32(bytes.data());
    const auto type = std::to_integer<std::uint8_t>(bytes[4]);
    const auto flags = std::to_integer<std::uint8_t>(bytes[5]);
    const auto reserved = std::to_integer<std::uint16_t>(bytes[6]) | std::to_integer<std::uint16_t>(bytes[7]);
    header.stream = detail::get_le32(bytes.data() + 8);
    if (header.length > kMaxPayload) {
        return fail(ErrorKind::Portal, "agent frame of {} bytes exceeds the {}-byte limit", header.length, kMaxPayload);
    }
    if (!is_known_frame_type(type)) {
        return fail(ErrorKind::Portal, "unknown agent frame type {} (allowed: 1-9, 16-25)", type);
    }
    if (flags != 0 || reserved != 0) {
        return fail(ErrorKind::Portal, "agent frame type {} has non-zero flags/reserved bits", type);
    }
    header.type = static_cast<FrameType>(type);
    return header;
}

/// A decoded frame whose payload still lies in the decoder's buffer (no copy): valid until the
/// decoder's next call.
struct FrameView {
    FrameType type = FrameType::Ping;
    std::uint32_t stream = 0;
    std::span<const std::byte> payload;
};

/// Incremental decoder: feed it whatever the socket returned, take complete frames out.
/// Buffers at most one header plus one payload (<= kMaxPayload), whatever the peer sends.
/// A reader may also receive straight into the decoder (prepare(), then commit()) and take
/// frames as views (next_view()), which saves both copies of the payload.
class FrameDecoder {
public:
    /// Appends bytes; call next() until it yields nullopt before feeding more.
    void feed(std::span<const std::byte> bytes) {
        if (bytes.empty()) return;
        auto space = prepare(bytes.size());
        std::memcpy(space.data(), bytes.data(), bytes.size());
        commit(bytes.size());
    }

    /// Room for `max` more bytes after what is buffered: receive into it, then commit() the count
    /// received. Like feed(), only once next_view()/next() yielded nullopt.
    [[nodiscard]] std::span<std::byte> prepare(std::size_t max) {
        compact();
        if (buffer_.size() - end_ < max) buffer_.resize(end_ + max);
        return {buffer_.data() + end_, max};
    }
    /// Marks `n` bytes of the span prepare() returned as received (n <= its size).
    void commit(std::size_t n) noexcept { end_ = std::min(end_ + n, buffer_.size()); }

    /// Bytes still missing of the frame whose header is buffered, so that a reader can receive
    /// exactly up to the frame's end (then nothing is left to move); 0 while no whole valid
    /// header is buffered.
    [[nodiscard]] std::size_t missing() const noexcept {
        const auto have = end_ - consumed_;
        if (have < kHeaderSize) return 0;
        const auto length = detail::get_le32(buffer_.data() + consumed_);
        if (length > kMaxPayload) return 0;
        const auto whole = kHeaderSize + static_cast<std::size_t>(length);
        return whole > have ? whole - have : 0;
    }

    /// The header at the front when a whole valid one is buffered, without taking it.
    [[nodiscard]] std::optional<FrameHeader> peek_header() const {
        if (poisoned_ || end_ - consumed_ < kHeaderSize) return std::nullopt;
        auto header = decode_header(std::span<const std::byte, kHeaderSize>(buffer_.data() + consumed_, kHeaderSize));
        if (!header) return std::nullopt;
        return *header;
    }
    /// Takes the buffered header peek_header() returned, leaving its payload to the caller
    /// (which reads exactly `length` bytes of the stream itself before the decoder's next use).
    void take_header() noexcept {
        if (end_ - consumed_ >= kHeaderSize) consumed_ += kHeaderSize;
    }

    /// The next complete frame as a view into the buffer (valid until the next call on this
    /// decoder), nullopt when more bytes are needed, or a Portal error (after which the decoder
    /// is poisoned: the stream is out of sync and must be closed).
    [[nodiscard]] BoxliteResult<std::optional<FrameView>> next_view() {
        if (poisoned_) return fail(ErrorKind::Portal, "agent stream already failed to decode");
        if (end_ - consumed_ < kHeaderSize) {
            compact();
            return std::optional<FrameView>{};
        }
        std::span<const std::byte, kHeaderSize> head(buffer_.data() + consumed_, kHeaderSize);
        auto header = decode_header(head);
        if (!header) {
            poisoned_ = true;
            return fail(header.error());
        }
        if (end_ - consumed_ - kHeaderSize < header->length) {
            compact();
            return std::optional<FrameView>{};
        }
        FrameView frame;
        frame.type = header->type;
        frame.stream = header->stream;
        frame.payload = std::span<const std::byte>(buffer_.data() + consumed_ + kHeaderSize, header->length);
        consumed_ += kHeaderSize + header->length;
        return std::optional<FrameView>{frame};
    }

    /// The next complete frame (its payload copied out), nullopt when more bytes are needed, or
    /// a Portal error as next_view().
    [[nodiscard]] BoxliteResult<std::optional<Frame>> next() {
        auto view = next_view();
        if (!view) return fail(view.error());
        if (!*view) return std::optional<Frame>{};
        Frame frame;
        frame.type = (*view)->type;
        frame.stream = (*view)->stream;
        frame.payload.assign((*view)->payload.begin(), (*view)->payload.end());
        return std::optional<Frame>{std::move(frame)};
    }

    [[nodiscard]] std::size_t buffered() const noexcept { return end_ - consumed_; }

private:
    void compact() {
        if (consumed_ == 0) return;
        if (end_ > consumed_) std::memmove(buffer_.data(), buffer_.data() + consumed_, end_ - consumed_);
        end_ -= consumed_;
        consumed_ = 0;
    }

    std::vector<std::byte> buffer_;  // [consumed_, end_) is buffered; the rest is room to receive
    std::size_t end_ = 0;
    std::size_t consumed_ = 0;
    bool poisoned_ = false;
};

}  // namespace boxlite::protocol
