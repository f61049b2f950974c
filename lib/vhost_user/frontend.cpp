#include "vhost_user/frontend.hpp"

#include "base/unix_address.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

namespace boxlite::vhost_user {
namespace {

template <class T>
std::span<const std::byte> bytes_of(const T& value) {
    return std::as_bytes(std::span<const T, 1>(&value, 1));
}

template <class T>
std::span<std::byte> writable_bytes_of(T& value) {
    return std::as_writable_bytes(std::span<T, 1>(&value, 1));
}

/// Ring sizes the split virtqueue allows (virtio 1.2 §2.7: a power of two, at most 32768).
bool valid_ring_size(std::uint16_t size) { return size != 0 && (size & (size - 1)) == 0 && size <= 32768; }

}  // namespace

Frontend::Frontend(base::OwnedFd connection, FrontendOptions options)
    : connection_(std::move(connection)), options_(std::move(options)) {
    if (!connection_) failure_ = "no connection";
}

BoxliteResult<Frontend> Frontend::connect(const std::filesystem::path& path, FrontendOptions options) {
    base::UnixAddress address;
    std::string error;
    if (!base::UnixAddress::make(path.string(), address, error))
        return fail(ErrorKind::Config, "vhost-user back end {}: {}", path.string(), error);
    base::OwnedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno(ErrorKind::Engine, "vhost-user frontend: socket", errno);
    int rc;
    do rc = ::connect(fd.get(), address.get(), address.size());
    while (rc != 0 && errno == EINTR);
    if (rc != 0)
        return fail_errno(ErrorKind::Engine, fmt::format("connecting to vhost-user back end {}", path.string()), errno);
    return Frontend(std::move(fd), std::move(options));
}

void Frontend::trace(std::string_view what) const {
    if (options_.trace) options_.trace(what);
}

tl::unexpected<BoxliteError> Frontend::broken(Request request, std::string why) {
    if (failure_.empty()) failure_ = fmt::format("{}: {}", request_name(request), why);
    connection_.reset();
    return fail(ErrorKind::Engine, "vhost-user back end: {} — the session is over", failure_);
}

BoxliteResult<void> Frontend::write_message(Request request, std::uint32_t flags, std::span<const std::byte> payload,
                                            std::span<const int> fds) {
    if (!connection_)
        return fail(ErrorKind::Engine, "vhost-user back end: {} after the session ended ({})", request_name(request),
                    failure_);
    if (payload.size() > kMaxPayload || fds.size() > kMaxFds)
        return fail(ErrorKind::Internal, "vhost-user {}: {} bytes and {} fds exceed the message bounds",
                    request_name(request), payload.size(), fds.size());
    const Header header{static_cast<std::uint32_t>(request), kVersion | flags,
                        static_cast<std::uint32_t>(payload.size())};
    std::array<std::byte, kHeaderSize + kMaxPayload> buffer{};
    std::memcpy(buffer.data(), &header, kHeaderSize);
    if (!payload.empty()) std::memcpy(buffer.data() + kHeaderSize, payload.data(), payload.size());
    const std::size_t total = kHeaderSize + payload.size();

    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
    std::size_t sent = 0;
    bool fds_sent = fds.empty();
    while (sent < total) {
        iovec iov{buffer.data() + sent, total - sent};
        msghdr message{};
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        if (!fds_sent) {
            message.msg_control = control.data();
            message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
            cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
        }
        // MSG_DONTWAIT + poll: a back end that stops reading cannot block us past the deadline.
        const ssize_t n = ::sendmsg(connection_.get(), &message, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                pollfd p{connection_.get(), POLLOUT, 0};
                const int ready = ::poll(&p, 1, static_cast<int>(options_.reply_timeout.count()));
                if (ready == 0) return broken(request, "the back end stopped reading its socket");
                if (ready < 0 && errno != EINTR) return broken(request, std::strerror(errno));
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET)
                return broken(request, "the back end closed the connection (it exited or died)");
            return broken(request, fmt::format("sending: {}", std::strerror(errno)));
        }
        fds_sent = true;
        sent += static_cast<std::size_t>(n);
    }
    return {};
}

BoxliteResult<void> Frontend::read_exact(std::span<std::byte> out, std::chrono::steady_clock::time_point deadline,
                                         Request request) {
    std::size_t got = 0;
    while (got < out.size()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return broken(request, fmt::format("no reply within {} ms", options_.reply_timeout.count()));
        pollfd p{connection_.get(), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0) {
            if (errno == EINTR) continue;
            return broken(request, fmt::format("poll: {}", std::strerror(errno)));
        }
        if (ready == 0) continue;  // the deadline check above ends it
        // Replies never carry descriptors; any that arrive are closed by the kernel (no
        // msg_control buffer: MSG_CTRUNC) and the reply is refused.
        iovec iov{out.data() + got, out.size() - got};
        msghdr message{};
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        const ssize_t n = ::recvmsg(connection_.get(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            if (errno == ECONNRESET) return broken(request, "the back end closed the connection (it exited or died)");
            return broken(request, fmt::format("reading its reply: {}", std::strerror(errno)));
        }
        if (n == 0) return broken(request, "the back end closed the connection (it exited or died)");
        if (message.msg_flags & MSG_CTRUNC) return broken(request, "the reply carried file descriptors");
        got += static_cast<std::size_t>(n);
    }
    return {};
}

BoxliteResult<void> Frontend::read_reply(Request request, std::span<std::byte> reply) {
    const auto deadline = std::chrono::steady_clock::now() + options_.reply_timeout;
    Header header{};
    BOXLITE_TRY_VOID(read_exact(writable_bytes_of(header), deadline, request));
    if (header.request != static_cast<std::uint32_t>(request))
        return broken(request, fmt::format("the reply answers request {}, not this one", header.request));
    if ((header.flags & kVersionMask) != kVersion || !(header.flags & kFlagReply))
        return broken(request, fmt::format("reply flags {:#x} lack version 1 or the reply bit", header.flags));
    // Exactly the size this request's reply has: a larger size is never read into anything.
    if (header.size != reply.size())
        return broken(request, fmt::format("reply of {} bytes where {} belong", header.size, reply.size()));
    return read_exact(reply, deadline, request);
}

BoxliteResult<void> Frontend::send(Request request, std::span<const std::byte> payload, std::span<const int> fds,
                                   bool ack) {
    const bool need_reply = ack && (protocol_features_ & kProtocolReplyAck);
    trace(fmt::format("-> {} ({} bytes, {} fds{})", request_name(request), payload.size(), fds.size(),
                      need_reply ? ", ack" : ""));
    BOXLITE_TRY_VOID(write_message(request, need_reply ? kFlagNeedReply : 0, payload, fds));
    if (!need_reply) return {};
    std::uint64_t status = 0;
    BOXLITE_TRY_VOID(read_reply(request, writable_bytes_of(status)));
    // A refusal is the back end's answer, not a broken session: the caller decides.
    if (status != 0)
        return fail(ErrorKind::Engine, "vhost-user back end refused {} (status {})", request_name(request), status);
    return {};
}

BoxliteResult<void> Frontend::call(Request request, std::span<const std::byte> payload, std::span<std::byte> reply) {
    trace(fmt::format("-> {} (reply of {} bytes)", request_name(request), reply.size()));
    BOXLITE_TRY_VOID(write_message(request, 0, payload, {}));
    return read_reply(request, reply);
}

BoxliteResult<void> Frontend::open() {
    // No acks yet: REPLY_ACK is not negotiated before SET_PROTOCOL_FEATURES.
    BOXLITE_TRY_VOID(send(Request::SetOwner, {}, {}, false));
    BOXLITE_TRY_VOID(call(Request::GetFeatures, {}, writable_bytes_of(backend_features_)));
    if (backend_features_ & kFeatureProtocolFeatures) {
        std::uint64_t offered = 0;
        BOXLITE_TRY_VOID(call(Request::GetProtocolFeatures, {}, writable_bytes_of(offered)));
        const std::uint64_t wanted = offered & kProtocolReplyAck;
        BOXLITE_TRY_VOID(send(Request::SetProtocolFeatures, bytes_of(wanted), {}, false));
        protocol_features_ = wanted;
    }
    trace(fmt::format("back end features {:#x}, protocol features {:#x}", backend_features_, protocol_features_));
    return {};
}

BoxliteResult<void> Frontend::set_features(std::uint64_t features) {
    if ((features & ~backend_features_) != 0)
        return fail(ErrorKind::Internal, "vhost-user SET_FEATURES {:#x}: outside what the back end offered ({:#x})",
                    features, backend_features_);
    if (backend_features_ & kFeatureProtocolFeatures) features |= kFeatureProtocolFeatures;
    return send(Request::SetFeatures, bytes_of(features));
}

BoxliteResult<void> Frontend::set_mem_table(const vmm::GuestMemory& memory) {
    const auto regions = memory.regions();
    if (memory.memfd() < 0) return fail(ErrorKind::Internal, "vhost-user SET_MEM_TABLE: guest memory has no memfd");
    if (regions.empty() || regions.size() > kMaxRegions)
        return fail(ErrorKind::Internal, "vhost-user SET_MEM_TABLE: {} regions (1 to {} allowed)", regions.size(),
                    kMaxRegions);
    std::array<std::byte, sizeof(MemoryTableHeader) + kMaxRegions * sizeof(MemoryRegionDesc)> payload{};
    const MemoryTableHeader header{static_cast<std::uint32_t>(regions.size()), 0};
    std::memcpy(payload.data(), &header, sizeof header);
    std::vector<int> fds;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const MemoryRegionDesc desc{regions[i].guest_address, regions[i].size,
                                    reinterpret_cast<std::uint64_t>(regions[i].host), regions[i].memfd_offset};
        std::memcpy(payload.data() + sizeof header + i * sizeof desc, &desc, sizeof desc);
        fds.push_back(memory.memfd());  // one descriptor per region, as the protocol wants
    }
    const std::size_t size = sizeof header + regions.size() * sizeof(MemoryRegionDesc);
    return send(Request::SetMemTable, std::span(payload.data(), size), fds);
}

BoxliteResult<void> Frontend::start_ring(const FrontendRing& ring, const vmm::GuestMemory& memory) {
    if (ring.index > kVringIndexMask)
        return fail(ErrorKind::Internal, "vhost-user ring {}: past the protocol's 256 rings", ring.index);
    if (!valid_ring_size(ring.size))
        return fail(ErrorKind::Config, "vhost-user ring {}: size {} is not a power of two up to 32768", ring.index,
                    ring.size);
    if (ring.kick_fd < 0 || ring.call_fd < 0)
        return fail(ErrorKind::Internal, "vhost-user ring {}: no kick or call eventfd", ring.index);
    const std::uint64_t size = ring.size;
    const auto desc = memory.slice(ring.desc_table, 16 * size);
    const auto avail = memory.slice(ring.avail_ring, 6 + 2 * size);
    const auto used = memory.slice(ring.used_ring, 6 + 8 * size);
    if (!desc || !avail || !used)
        return fail(ErrorKind::Config, "vhost-user ring {}: its tables ({:#x}, {:#x}, {:#x}) are not in guest RAM",
                    ring.index, ring.desc_table, ring.avail_ring, ring.used_ring);

    const VringState num{ring.index, ring.size};
    BOXLITE_TRY_VOID(send(Request::SetVringNum, bytes_of(num)));
    const VringAddr addr{ring.index,
                         0,
                         reinterpret_cast<std::uint64_t>(desc->data()),
                         reinterpret_cast<std::uint64_t>(used->data()),
                         reinterpret_cast<std::uint64_t>(avail->data()),
                         0};
    BOXLITE_TRY_VOID(send(Request::SetVringAddr, bytes_of(addr)));
    const VringState base{ring.index, ring.next_avail};
    BOXLITE_TRY_VOID(send(Request::SetVringBase, bytes_of(base)));
    const std::uint64_t index = ring.index;
    const int call_fd = ring.call_fd;
    BOXLITE_TRY_VOID(send(Request::SetVringCall, bytes_of(index), std::span(&call_fd, 1)));
    const int kick_fd = ring.kick_fd;
    BOXLITE_TRY_VOID(send(Request::SetVringKick, bytes_of(index), std::span(&kick_fd, 1)));
    if (backend_features_ & kFeatureProtocolFeatures) {  // rings then start disabled
        const VringState enable{ring.index, 1};
        BOXLITE_TRY_VOID(send(Request::SetVringEnable, bytes_of(enable)));
    }
    return {};
}

BoxliteResult<std::uint16_t> Frontend::stop_ring(std::uint32_t index) {
    const VringState state{index, 0};
    VringState reply{};
    BOXLITE_TRY_VOID(call(Request::GetVringBase, bytes_of(state), writable_bytes_of(reply)));
    if (reply.index != index)
        return broken(Request::GetVringBase, fmt::format("it answered for ring {}, not {}", reply.index, index));
    // The value itself is only ever handed back to this back end (SET_VRING_BASE), never used
    // as an index into anything of ours.
    return static_cast<std::uint16_t>(reply.num);
}

}  // namespace boxlite::vhost_user
