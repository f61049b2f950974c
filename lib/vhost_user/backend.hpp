// Backend: serves one of our virtio device models (lib/devices/virtio) to a vhost-user frontend
// (QEMU's vhost-user-blk, vhost-user-vsock-device). The device model is the very code the kvm
// engine's virtio-mmio transport drives: this class is only another transport for it.
//
// The protocol is described in protocol.hpp. The device is activated (VirtioDevice::activate)
// once every ring the frontend uses is started, enabled and inside the memory table, and reset
// (VirtioDevice::reset) before anything it uses changes: a ring stopped (GET_VRING_BASE), a new
// memory table, a ring reconfigured, a reset, or the frontend gone. Memory is unmapped only after
// the device was reset, so the device's own threads (vsock) never touch a mapping that is gone.
//
// Teardown is safe at any point: serve() returns when the frontend closes the socket or dies
// (mid-message included), on a malformed message, or when stop() is called from another thread;
// in each case the device is reset, every fd closed and the memory unmapped before it returns.
//
// Threads: serve() runs the protocol and the kick fds on the calling thread (queue_notify runs
// there); the device may interrupt the guest from its own threads: the call fds are guarded.
#pragma once

#include "devices/virtio/device.hpp"
#include "memory/guest_memory.hpp"
#include "vhost_user/protocol.hpp"

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::vhost_user {

struct BackendOptions {
    /// How many of the device's queues the frontend drives (QEMU's vhost-user-vsock-device keeps
    /// the event queue to itself: 2 of 3; vhost-user-blk: 1). 0 = all of them.
    std::uint16_t frontend_queues = 0;
    /// The largest ring the frontend may set up. QEMU's virtio-mmio tells the driver 1024
    /// (VIRTQUEUE_MAX_SIZE) whatever the device is, so a back end must take that; the device
    /// models bound their work per chain, not per ring size.
    std::uint16_t max_ring_size = 1024;
    /// Called with one line per message and per decision (tests, `--trace`); may be empty.
    std::function<void(std::string_view)> trace;
};

struct BackendStats {
    std::uint64_t messages = 0;
    std::uint64_t unsupported = 0;  ///< requests answered "not supported" or ignored
    std::uint64_t kicks = 0;
    std::uint64_t calls = 0;
    std::uint64_t activations = 0;
    std::uint64_t bad_kick_fds = 0;  ///< kick fds that were not eventfds (dropped)
};

class Backend {
public:
    Backend(std::shared_ptr<devices::virtio::VirtioDevice> device, BackendOptions options = {});
    ~Backend();
    Backend(const Backend&) = delete;
    Backend& operator=(const Backend&) = delete;

    /// Serves one frontend on the connected socket `connection` until it goes away (success),
    /// sends something malformed (the error says what), or stop() is called (success).
    BoxliteResult<void> serve(base::OwnedFd connection);
    /// Makes a running (or the next) serve() return. Any thread.
    void stop() noexcept;

    [[nodiscard]] BackendStats stats() const;
    [[nodiscard]] bool device_active() const noexcept { return active_.load(); }

private:
    struct Ring;
    class CallInterrupt;
    struct Message;

    BoxliteResult<void> handle(Message& message);
    BoxliteResult<void> handle_mem_table(Message& message);
    BoxliteResult<void> handle_vring_fd(Message& message);
    BoxliteResult<Ring*> ring_at(std::uint64_t index);
    BoxliteResult<void> reply(const Header& request, const void* payload, std::uint32_t size);
    BoxliteResult<void> ack(const Header& request, bool ok);
    BoxliteResult<std::uint64_t> translate(std::uint64_t user_address) const;
    void try_activate();
    void deactivate();
    void forget_session();
    void on_kick(std::size_t ring);
    void trace(std::string_view what) const;
    [[nodiscard]] std::uint64_t offered_features() const;
    [[nodiscard]] std::uint64_t offered_protocol_features() const;

    std::shared_ptr<devices::virtio::VirtioDevice> device_;
    BackendOptions options_;
    std::uint16_t frontend_queues_;
    base::OwnedFd stop_fd_;
    base::OwnedFd connection_;

    std::vector<Ring> rings_;
    std::vector<devices::virtio::VirtQueue> queues_;
    std::unique_ptr<CallInterrupt> interrupt_;
    std::optional<vmm::GuestMemory> memory_;
    std::vector<MemoryRegionDesc> table_;
    std::uint64_t features_ = 0;
    std::uint64_t protocol_features_ = 0;
    std::atomic<bool> active_{false};
    mutable std::mutex stats_mutex_;
    BackendStats stats_;
};

/// Binds a listening Unix socket at `path` (any length: base/unix_address.hpp), replacing a
/// stale socket file.
BoxliteResult<base::OwnedFd> listen_unix(const std::filesystem::path& path);
/// Waits for one connection on `listener`; gives up (Engine error) when `stop_fd` becomes
/// readable (-1: wait for ever).
BoxliteResult<base::OwnedFd> accept_one(int listener, int stop_fd = -1);

}  // namespace boxlite::vhost_user
