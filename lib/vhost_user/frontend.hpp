// Frontend: our VMM's side of vhost-user — the mirror of Backend. The VMM owns guest RAM and the
// virtio-mmio transport; a back end in another process (Debian's virtiofsd) runs a device's
// queues in the very same pages (protocol.hpp has the primer).
//
// Session, in the order QEMU uses and libvhost-user expects:
//   open()         SET_OWNER, GET_FEATURES, and when the back end offers protocol features
//                  GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES (we take REPLY_ACK only).
//   on DRIVER_OK   SET_FEATURES (what the driver accepted), SET_MEM_TABLE (the guest RAM memfd,
//                  one entry per RAM region), then per ring SET_VRING_NUM / ADDR / BASE / CALL /
//                  KICK and, with protocol features, SET_VRING_ENABLE 1.
//   on reset       GET_VRING_BASE per started ring (the back end stops it and says where).
//
// The back end is not trusted. Every reply is read with a deadline (FrontendOptions), must carry
// the reply flag and the request it answers, and must be exactly the size that request's reply
// has; nothing from it is used as a size or an address. A back end that dies, stalls or answers
// nonsense ends the session: the socket is closed, this and every later call fail with an Engine
// error naming the request, and the VMM carries on (the device stops working; nothing hangs).
//
// Threads: one caller at a time (the device model serializes under its own lock).
#pragma once

#include "memory/guest_memory.hpp"
#include "vhost_user/protocol.hpp"

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace boxlite::vhost_user {

struct FrontendOptions {
    /// How long one reply may take. virtiofsd answers in microseconds; a back end that takes
    /// longer is stuck or hostile.
    std::chrono::milliseconds reply_timeout{5000};
    /// Called with one line per message sent (tests, `--trace`); may be empty.
    std::function<void(std::string_view)> trace;
};

/// One ring as the driver laid it out: guest physical addresses, its size, and the eventfds the
/// back end waits on (kick) and signals (call). The fds stay the caller's.
struct FrontendRing {
    std::uint32_t index = 0;
    std::uint16_t size = 0;
    std::uint64_t desc_table = 0;
    std::uint64_t avail_ring = 0;
    std::uint64_t used_ring = 0;
    std::uint16_t next_avail = 0;
    int kick_fd = -1;
    int call_fd = -1;
};

class Frontend {
public:
    /// Takes a connected stream socket to a back end (an inherited socketpair end, or accepted).
    explicit Frontend(base::OwnedFd connection, FrontendOptions options = {});
    /// Connects to a back end listening at `path` (any length: base/unix_address.hpp).
    static BoxliteResult<Frontend> connect(const std::filesystem::path& path, FrontendOptions options = {});

    Frontend(Frontend&&) noexcept = default;
    Frontend& operator=(Frontend&&) noexcept = default;

    /// SET_OWNER and the feature discovery; the back end's virtio features are then features().
    BoxliteResult<void> open();
    [[nodiscard]] std::uint64_t features() const noexcept { return backend_features_; }
    [[nodiscard]] std::uint64_t protocol_features() const noexcept { return protocol_features_; }

    /// SET_FEATURES: `features` (a subset of features()), plus the protocol-features bit when
    /// that was negotiated (rings then start disabled, until SET_VRING_ENABLE).
    BoxliteResult<void> set_features(std::uint64_t features);
    /// SET_MEM_TABLE: every region of `memory` (which must be backed by its memfd) with the
    /// memfd; our own virtual addresses are the "user" addresses rings are given in.
    BoxliteResult<void> set_mem_table(const vmm::GuestMemory& memory);
    /// SET_VRING_NUM / ADDR / BASE / CALL / KICK (/ ENABLE). The ring must lie in `memory`.
    BoxliteResult<void> start_ring(const FrontendRing& ring, const vmm::GuestMemory& memory);
    /// GET_VRING_BASE: stops ring `index`; its next available index.
    BoxliteResult<std::uint16_t> stop_ring(std::uint32_t index);

    /// False once the session ended (the back end died, stalled or misbehaved).
    [[nodiscard]] bool connected() const noexcept { return connection_.valid(); }
    /// Why the session ended (empty while it lasts).
    [[nodiscard]] const std::string& failure() const noexcept { return failure_; }

private:
    /// Sends `request` with `payload` and `fds`; with REPLY_ACK negotiated and `ack`, asks for
    /// and checks the u64 status.
    BoxliteResult<void> send(Request request, std::span<const std::byte> payload, std::span<const int> fds = {},
                             bool ack = true);
    /// Sends `request` and reads its reply of exactly `reply.size()` bytes.
    BoxliteResult<void> call(Request request, std::span<const std::byte> payload, std::span<std::byte> reply);
    BoxliteResult<void> write_message(Request request, std::uint32_t flags, std::span<const std::byte> payload,
                                      std::span<const int> fds);
    BoxliteResult<void> read_reply(Request request, std::span<std::byte> reply);
    BoxliteResult<void> read_exact(std::span<std::byte> out, std::chrono::steady_clock::time_point deadline,
                                   Request request);
    /// Ends the session: closes the socket and remembers why; returns the error to pass on.
    tl::unexpected<BoxliteError> broken(Request request, std::string why);
    void trace(std::string_view what) const;

    base::OwnedFd connection_;
    FrontendOptions options_;
    std::uint64_t backend_features_ = 0;
    std::uint64_t protocol_features_ = 0;
    std::string failure_;
};
}  // namespace boxlite::vhost_user
