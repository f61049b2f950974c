// The frame stream of QEMU's `-netdev stream` and of passt's UNIX socket: each Ethernet frame is
// preceded by its length as a 4-byte big-endian number, with no virtio-net header. The decoder
// takes bytes as they arrive (any split) and hands out whole frames; a length outside
// [kMinStreamFrame, kMaxStreamFrame] means the peer is broken or hostile and ends the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace boxlite::net {

/// An Ethernet header: anything shorter is not a frame.
inline constexpr std::size_t kMinStreamFrame = 14;
/// The largest frame either end may send: a 65535-byte IP packet plus its Ethernet header (passt
/// sends up to 65490 bytes; a tap device with MTU 65520 gives 65534).
inline constexpr std::size_t kMaxStreamFrame = 65535 + 14;

/// The length a 4-byte prefix at `head` announces (not yet checked against the bounds above).
[[nodiscard]] inline std::size_t stream_frame_length(const std::uint8_t* head) noexcept {
    return (static_cast<std::size_t>(head[0]) << 24) | (static_cast<std::size_t>(head[1]) << 16) |
           (static_cast<std::size_t>(head[2]) << 8) | head[3];
}

/// Appends the 4-byte length prefix and the frame to `out`.
void append_stream_frame(std::vector<std::uint8_t>& out, std::span<const std::uint8_t> frame);

class StreamDecoder {
public:
    enum class Status : std::uint8_t { NeedMore, Frame, Invalid };

    /// Adds bytes received from the stream; the caller then takes frames with next() until it
    /// says NeedMore. Holds at most one frame plus what the last read brought.
    void feed(std::span<const std::uint8_t> bytes);
    /// Frame: `frame` points at one whole frame, valid until the next feed()/next().
    /// Invalid: a length prefix out of range; the stream cannot be resynchronised.
    [[nodiscard]] Status next(std::span<const std::uint8_t>& frame);
    [[nodiscard]] std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }

private:
    std::vector<std::uint8_t> buffer_;
    std::size_t consumed_ = 0;
    bool invalid_ = false;
};

}  // namespace boxlite::net
