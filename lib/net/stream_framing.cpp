#include "net/stream_framing.hpp"

namespace boxlite::net {

void append_stream_frame(std::vector<std::uint8_t>& out, std::span<const std::uint8_t> frame) {
    const auto length = static_cast<std::uint32_t>(frame.size());
    out.push_back(static_cast<std::uint8_t>(length >> 24));
    out.push_back(static_cast<std::uint8_t>(length >> 16));
    out.push_back(static_cast<std::uint8_t>(length >> 8));
    out.push_back(static_cast<std::uint8_t>(length));
    out.insert(out.end(), frame.begin(), frame.end());
}

void StreamDecoder::feed(std::span<const std::uint8_t> bytes) {
    if (invalid_) return;
    // Drop what was handed out before growing, so the buffer stays about one frame long.
    if (consumed_ > 0) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
        consumed_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

StreamDecoder::Status StreamDecoder::next(std::span<const std::uint8_t>& frame) {
    if (invalid_) return Status::Invalid;
    const std::size_t available = buffer_.size() - consumed_;
    if (available < 4) return Status::NeedMore;
    const std::uint8_t* head = buffer_.data() + consumed_;
    const std::size_t length = stream_frame_length(head);
    if (length < kMinStreamFrame || length > kMaxStreamFrame) {
        invalid_ = true;
        buffer_.clear();
        consumed_ = 0;
        return Status::Invalid;
    }
    if (available - 4 < length) return Status::NeedMore;
    frame = std::span<const std::uint8_t>(head + 4, length);
    consumed_ += 4 + length;
    return Status::Frame;
}

}  // namespace boxlite::net
