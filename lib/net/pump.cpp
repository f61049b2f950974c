#include "net/pump.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
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

/// struct virtio_net_hdr (linux/virtio_net.h, which does not compile as C++ here), in host order
/// as a tap wants it by default.
struct VnetHeader {
    std::uint8_t flags = 0;
    std::uint8_t gso_type = 0;
    std::uint16_t hdr_len = 0;
    std::uint16_t gso_size = 0;
    std::uint16_t csum_start = 0;
    std::uint16_t csum_offset = 0;
};
static_assert(sizeof(VnetHeader) == 10);
constexpr std::uint8_t kNeedsChecksum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
constexpr std::uint8_t kGsoNone = 0;        // VIRTIO_NET_HDR_GSO_NONE

/// The header for a frame to the box. An IPv4 TCP segment (not a fragment) goes as a partial
/// checksum, as a NIC with checksum offload hands it over: its checksum field becomes the
/// pseudo-header's sum and NEEDS_CSUM names where the sum starts, so the box's stack takes the
/// segment as verified instead of summing every byte again (a tap ignores DATA_VALID on write),
/// and a box that forwards it elsewhere completes a correct checksum. passt made the checksum
/// and the frame crossed no wire; anything else goes with no flags and is checked as usual.
VnetHeader header_for_box(std::span<std::uint8_t> frame) {
    VnetHeader header{};
    constexpr std::size_t kEthernet = 14;
    if (frame.size() < kEthernet + 20 || frame[12] != 0x08 || frame[13] != 0x00) return header;
    std::uint8_t* ip = frame.data() + kEthernet;
    const std::size_t ihl = static_cast<std::size_t>(ip[0] & 0x0f) * 4;
    const std::size_t total = (static_cast<std::size_t>(ip[2]) << 8) | ip[3];
    const bool fragment = ((ip[6] & 0x3f) | ip[7]) != 0;  // MF or an offset
    if ((ip[0] >> 4) != 4 || ihl < 20 || ip[9] != 6 || fragment || total < ihl + 20 || kEthernet + total > frame.size())
        return header;
    const std::size_t segment = total - ihl;
    std::uint32_t sum = 6 + static_cast<std::uint32_t>(segment);
    for (std::size_t at = 12; at < 20; at += 2) sum += (static_cast<std::uint32_t>(ip[at]) << 8) | ip[at + 1];
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    std::uint8_t* check = ip + ihl + 16;
    check[0] = static_cast<std::uint8_t>(sum >> 8);
    check[1] = static_cast<std::uint8_t>(sum);
    header.flags = kNeedsChecksum;
    header.csum_start = static_cast<std::uint16_t>(kEthernet + ihl);
    header.csum_offset = 16;
    return header;
}

}  // namespace

FramePump::FramePump(int box_fd, int passt_fd, EgressFirewall& firewall, BoxFraming box_framing)
    : box_fd_(box_fd),
      passt_fd_(passt_fd),
      firewall_(firewall),
      box_framing_(box_framing),
      frame_(kMaxStreamFrame + 1),
      scratch_(kBatchBytes + 4 + kMaxStreamFrame) {
    set_nonblocking(box_fd_);
    set_nonblocking(passt_fd_);
}

void FramePump::send_to_box(std::span<std::uint8_t> frame) {
    const bool with_header = box_framing_ == BoxFraming::VnetHeader;
    VnetHeader header = with_header ? header_for_box(frame) : VnetHeader{};
    iovec parts[2] = {{&header, sizeof header}, {frame.data(), frame.size()}};
    for (;;) {
        const ssize_t n = with_header ? ::writev(box_fd_, parts, 2) : ::write(box_fd_, frame.data(), frame.size());
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
    const bool with_header = box_framing_ == BoxFraming::VnetHeader;
    VnetHeader header{};
    iovec parts[2] = {{&header, sizeof header}, {frame_.data(), frame_.size()}};
    while (batch < kBatchBytes && pending_.size() - pending_sent_ + kMaxStreamFrame + 4 <= kMaxPending) {
        const ssize_t n = with_header ? ::readv(box_fd_, parts, 2) : ::read(box_fd_, frame_.data(), frame_.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            if (would_block(errno)) return any;
            return fail(ErrorKind::Internal, "reading a frame from the box's network device: {}", std::strerror(errno));
        }
        if (n == 0) return fail(ErrorKind::Internal, "the box's network device closed");
        any = true;
        auto size = static_cast<std::size_t>(n);
        batch += size;
        if (with_header) {
            // A short read, or a frame that asks for an offload the tap never offered: not passed on.
            if (size < sizeof header || header.gso_type != kGsoNone || (header.flags & kNeedsChecksum) != 0) continue;
            size -= sizeof header;
        }
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

// Writes what waits for passt in writes of whole frames (kMaxAtomicWrite bytes at most, or one
// larger frame alone), many per sendmmsg(); each is queued whole or not at all (pump.hpp).
BoxliteResult<void> FramePump::write_passt() {
    constexpr std::size_t kWrites = 64;
    while (pending_sent_ < pending_.size()) {
        std::array<iovec, kWrites> parts{};
        std::array<mmsghdr, kWrites> writes{};
        std::size_t count = 0;
        for (std::size_t at = pending_sent_; count < kWrites && at < pending_.size(); ++count) {
            std::size_t end = at;
            if (at < pending_cut_end_) {
                end = pending_cut_end_;  // the rest of a cut write, alone
            } else {
                while (end < pending_.size()) {
                    const std::size_t next = end + 4 + stream_frame_length(pending_.data() + end);
                    if (end > at && next - at > kMaxAtomicWrite) break;
                    end = next;
                }
            }
            parts[count] = {pending_.data() + at, end - at};
            writes[count].msg_hdr.msg_iov = &parts[count];
            writes[count].msg_hdr.msg_iovlen = 1;
            at = end;
        }
        const int sent = ::sendmmsg(passt_fd_, writes.data(), static_cast<unsigned>(count),
                                    MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (would_block(errno)) break;
            return fail(ErrorKind::Internal, "writing frames to passt: {}", std::strerror(errno));
        }
        bool full = static_cast<std::size_t>(sent) < count;
        for (int i = 0; i < sent; ++i) {
            const auto wrote = static_cast<std::size_t>(writes[static_cast<std::size_t>(i)].msg_len);
            const std::size_t wanted = parts[static_cast<std::size_t>(i)].iov_len;
            pending_sent_ += wrote;
            if (wrote < wanted) {
                // Only a write larger than one socket buffer can be cut: its rest goes next, alone.
                pending_cut_end_ = pending_sent_ + (wanted - wrote);
                full = true;
                break;
            }
        }
        if (full) break;
    }
    if (pending_sent_ == pending_.size()) {
        pending_.clear();
        pending_sent_ = 0;
        pending_cut_end_ = 0;
    } else if (pending_sent_ > kMaxPending / 2) {
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(pending_sent_));
        pending_cut_end_ = pending_cut_end_ > pending_sent_ ? pending_cut_end_ - pending_sent_ : 0;
        pending_sent_ = 0;
    }
    return {};
}

// Reads one batch (kBatchBytes at most) from passt and hands its whole frames on, checked and
// written to the box from where they lie. Returns false when passt closed its end.
BoxliteResult<bool> FramePump::read_passt() {
    for (;;) {
        const ssize_t n = ::read(passt_fd_, scratch_.data() + passt_kept_, kBatchBytes);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (would_block(errno)) return true;
            return fail(ErrorKind::Internal, "reading frames from passt: {}", std::strerror(errno));
        }
        if (n == 0) return false;
        const std::size_t end = passt_kept_ + static_cast<std::size_t>(n);
        std::size_t at = 0;
        while (end - at >= 4) {
            const std::size_t length = stream_frame_length(scratch_.data() + at);
            if (length < kMinStreamFrame || length > kMaxStreamFrame) {
                return fail(ErrorKind::Internal, "passt sent a frame length outside {}-{} bytes", kMinStreamFrame,
                            kMaxStreamFrame);
            }
            if (end - at - 4 < length) break;
            // The buffer is ours: the firewall may rewrite the frame in place.
            const std::span<std::uint8_t> frame(scratch_.data() + at + 4, length);
            if (firewall_.ingress(frame) == Verdict::Forward) send_to_box(frame);
            at += 4 + length;
        }
        // What is left is less than one frame (its length was checked, or fewer than 4 bytes).
        passt_kept_ = end - at;
        if (passt_kept_ > 0 && at > 0) std::memmove(scratch_.data(), scratch_.data() + at, passt_kept_);
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
