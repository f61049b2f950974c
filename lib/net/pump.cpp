#include "net/pump.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace boxlite::net {
namespace {

void set_nonblocking(int fd) {
    if (fd < 0) return;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

}  // namespace

FramePump::FramePump(int box_fd, int passt_fd, EgressFirewall& firewall)
    : box_fd_(box_fd), passt_fd_(passt_fd), firewall_(firewall), frame_(kMaxStreamFrame + 1), scratch_(kBatchBytes) {
    set_nonblocking(box_fd_);
    set_nonblocking(passt_fd_);
}

void FramePump::send_to_box(std::span<const std::uint8_t> frame) {
    for (;;) {
        const ssize_t n = ::write(box_fd_, frame.data(), frame.size());
        if (n >= 0) {
            ++stats_.frames_to_box;
            return;
        }
        if (errno == EINTR) continue;
        // The device's queue is full, or it refuses this frame: a NIC drops it too.
        ++stats_.frames_dropped_to_box;
        return;
    }
}

// Reads frames from the box until it has none, the buffer towards passt is full, or one batch
// (kBatchBytes) was read. Returns whether anything was read.
BoxliteResult<bool> FramePump::read_box() {
    bool any = false;
    std::size_t batch = 0;
    while (batch < kBatchBytes && pending_.size() - pending_sent_ + kMaxStreamFrame + 4 <= kMaxPending) {
        const ssize_t n = ::read(box_fd_, frame_.data(), frame_.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            if (would_block(errno)) return any;
            return fail(ErrorKind::Internal, "reading a frame from the box's network device: {}", std::strerror(errno));
        }
        if (n == 0) return fail(ErrorKind::Internal, "the box's network device closed");
        any = true;
        const auto size = static_cast<std::size_t>(n);
        batch += size;
        // Oversized (cut by the buffer) or runt frames never reach passt.
        if (size > kMaxStreamFrame || size < kMinStreamFrame) continue;
        const std::span<std::uint8_t> frame(frame_.data(), size);
        switch (firewall_.egress(frame, reply_)) {
            case Verdict::Forward:
                append_stream_frame(pending_, frame);
                ++stats_.frames_to_passt;
                if (!reply_.empty()) send_to_box(reply_);  // the ACK passt leaves out
                break;
            case Verdict::Reject:
            case Verdict::Answer:
                if (!reply_.empty()) {
                    send_to_box(reply_);
                    ++stats_.rejections_sent;
                }
                // A connection reset for its server name: passt's side is closed too.
                if (auto& to_passt = firewall_.to_passt(); !to_passt.empty()) {
                    append_stream_frame(pending_, to_passt);
                    to_passt.clear();
                }
                break;
            case Verdict::Drop: break;
        }
    }
    return any;
}

BoxliteResult<void> FramePump::write_passt() {
    while (pending_sent_ < pending_.size()) {
        const ssize_t n = ::write(passt_fd_, pending_.data() + pending_sent_, pending_.size() - pending_sent_);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (would_block(errno)) break;
            return fail(ErrorKind::Internal, "writing frames to passt: {}", std::strerror(errno));
        }
        pending_sent_ += static_cast<std::size_t>(n);
    }
    if (pending_sent_ == pending_.size()) {
        pending_.clear();
        pending_sent_ = 0;
    } else if (pending_sent_ > kMaxPending / 2) {
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(pending_sent_));
        pending_sent_ = 0;
    }
    return {};
}

// Reads one batch (at most scratch_'s size) from passt and hands its frames on. Returns false
// when passt closed its end.
BoxliteResult<bool> FramePump::read_passt() {
    for (;;) {
        const ssize_t n = ::read(passt_fd_, scratch_.data(), scratch_.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            if (would_block(errno)) return true;
            return fail(ErrorKind::Internal, "reading frames from passt: {}", std::strerror(errno));
        }
        if (n == 0) return false;
        decoder_.feed(std::span<const std::uint8_t>(scratch_.data(), static_cast<std::size_t>(n)));
        std::span<const std::uint8_t> frame;
        for (;;) {
            const auto status = decoder_.next(frame);
            if (status == StreamDecoder::Status::NeedMore) break;
            if (status == StreamDecoder::Status::Invalid) {
                return fail(ErrorKind::Internal, "passt sent a frame length outside {}-{} bytes", kMinStreamFrame,
                            kMaxStreamFrame);
            }
            // The decoder's buffer is ours: the firewall may rewrite the frame in place.
            std::span<std::uint8_t> writable(const_cast<std::uint8_t*>(frame.data()), frame.size());
            if (firewall_.ingress(writable) == Verdict::Forward) send_to_box(writable);
        }
        return true;
    }
}

// One wake-up does one batch each way, then polls again (at once when more is waiting): a stream
// in one direction must not keep the other's frames — the box's ACKs and window updates for that
// very stream — waiting until it pauses, or each side's TCP stalls on a window the other end has
// already opened.
BoxliteResult<void> FramePump::run(int stop_fd) {
    for (;;) {
        const bool room = pending_.size() - pending_sent_ + kMaxStreamFrame + 4 <= kMaxPending;
        pollfd fds[3] = {};
        fds[0] = {box_fd_, static_cast<short>(room ? POLLIN : 0), 0};
        fds[1] = {passt_fd_, static_cast<short>(POLLIN | (pending_sent_ < pending_.size() ? POLLOUT : 0)), 0};
        fds[2] = {stop_fd, POLLIN, 0};
        const nfds_t count = stop_fd >= 0 ? 3 : 2;
        if (::poll(fds, count, -1) < 0) {
            if (errno == EINTR) continue;
            return fail(ErrorKind::Internal, "poll in the frame pump: {}", std::strerror(errno));
        }
        if (count == 3 && (fds[2].revents & (POLLIN | POLLHUP)) != 0) return {};
        if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            auto open = read_passt();
            if (!open) return tl::unexpected(open.error());
            if (!*open) return {};
        }
        if ((fds[0].revents & POLLERR) != 0 && (fds[0].revents & POLLIN) == 0) {
            return fail(ErrorKind::Internal, "the box's network device reported an error");
        }
        if ((fds[0].revents & POLLIN) != 0) {
            auto read = read_box();
            if (!read) return tl::unexpected(read.error());
        }
        if (pending_sent_ < pending_.size()) BOXLITE_TRY_VOID(write_passt());
    }
}

}  // namespace boxlite::net
