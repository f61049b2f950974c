// virtio-vsock (virtio 1.2 §5.10) in userspace, host side on a Unix socket speaking
// Firecracker's hybrid vsock protocol.
//
// ---- Primer: connections and credit flow --------------------------------------------------
// A vsock stream is identified by (guest cid, guest port, host port). Every packet carries a
// 44-byte header; `op` is REQUEST (open), RESPONSE (accept), RST (abort/close), SHUTDOWN
// (half-close: flag 1 = peer will not receive, 2 = will not send), RW (data), CREDIT_UPDATE,
// CREDIT_REQUEST.
//
// Credit: each side advertises in every header `buf_alloc` (how many bytes of this stream it
// can buffer) and `fwd_cnt` (how many bytes it has consumed so far, i.e. handed on to the
// application). A sender tracks `tx_cnt` (bytes it has sent) and may have at most
//     peer_buf_alloc - (tx_cnt - peer_fwd_cnt)
// bytes in flight. So: we never read more from a host socket than the guest has credit for
// (the bytes stay in the host socket's buffer — natural backpressure), and a guest that sends
// beyond the credit we advertised is violating the protocol and gets its stream reset. When
// we have forwarded enough of the guest's data to the host socket we tell it so with a
// CREDIT_UPDATE, and we answer every CREDIT_REQUEST at once.
//
// ---- The hybrid (Firecracker) host side ---------------------------------------------------
//   host → guest: a host program connects to the Unix socket `uds_path`, writes
//     "CONNECT <port>\n"; we send the guest a REQUEST to <port> from a fresh host port; when
//     the guest answers RESPONSE we write "OK <host port>\n" and the socket becomes the stream.
//   guest → host: a guest REQUEST to port P connects to the Unix socket "<uds_path>_<P>"; we
//     answer RESPONSE if that connect succeeds, RST otherwise.
//
// ---- Timeouts -------------------------------------------------------------------------------
// A stream waiting on the other side holds a host socket, so every waiting state has a bound
// (Firecracker bounds the same two guest waits): a host that connected but sent no CONNECT line
// (`connect_line`), a REQUEST the guest never answers (`connect`: RST to the guest, host socket
// closed — the host program sees EOF instead of "OK"), and a SHUTDOWN we sent after the host end
// closed that the guest never follows with RST (`shutdown`: we send the RST and drop the stream).
// The poller sleeps until the nearest deadline.
//
// Queues: 0 = rx (host → guest packets, guest-posted writable buffers), 1 = tx (guest → host),
// 2 = event (transport reset events; buffers are held, never needed here).
// One thread polls the listener and every stream socket; the vCPU thread handles tx notifies.
// Both take the device mutex. Everything in a guest header is hostile: lengths are checked
// against the chain and a 64 KiB packet limit, unknown streams get RST, wrong cids are dropped,
// and the number of streams is bounded.
#pragma once

#include "devices/virtio/device.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace boxlite::devices::virtio {

/// The 44-byte virtio-vsock packet header (little-endian, packed).
struct __attribute__((packed)) VsockHeader {
    std::uint64_t src_cid;
    std::uint64_t dst_cid;
    std::uint32_t src_port;
    std::uint32_t dst_port;
    std::uint32_t len;
    std::uint16_t type;
    std::uint16_t op;
    std::uint32_t flags;
    std::uint32_t buf_alloc;
    std::uint32_t fwd_cnt;
};
static_assert(sizeof(VsockHeader) == 44);

enum class VsockOp : std::uint16_t {
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7
};
inline constexpr std::uint16_t kVsockTypeStream = 1;
inline constexpr std::uint64_t kVsockHostCid = 2;

struct VsockTimeouts {
    std::chrono::milliseconds connect_line{5000};  ///< host connected, no "CONNECT <port>\n" yet
    std::chrono::milliseconds connect{2000};       ///< REQUEST sent, no RESPONSE from the guest
    std::chrono::milliseconds shutdown{2000};      ///< SHUTDOWN sent, no RST from the guest
};

struct VsockStats {
    std::uint64_t connections_opened = 0;
    std::uint64_t timeouts = 0;  ///< streams dropped because a side never answered
    std::uint64_t resets_sent = 0;
    std::uint64_t bad_packets = 0;
    std::uint64_t bytes_to_guest = 0;
    std::uint64_t bytes_to_host = 0;
};

class VsockDevice final : public VirtioDevice {
public:
    static constexpr std::uint16_t kQueueSize = 256;
    /// The largest payload we send or accept in one packet.
    static constexpr std::uint32_t kMaxPacketPayload = 64 * 1024;
    /// What we advertise as buf_alloc per stream (bytes from the guest we can hold).
    static constexpr std::uint32_t kBufferPerStream = 256 * 1024;
    static constexpr std::size_t kMaxStreams = 1024;

    /// Binds the listener at `uds_path` (replacing a stale socket file) and starts the thread.
    static BoxliteResult<std::shared_ptr<VsockDevice>> create(std::uint64_t guest_cid, std::filesystem::path uds_path,
                                                              VsockTimeouts timeouts = {});
    ~VsockDevice() override;

    [[nodiscard]] DeviceType device_type() const override { return DeviceType::Vsock; }
    [[nodiscard]] std::uint64_t device_features() const override {
        return kFeatureVersion1 | kFeatureRingEventIdx | kFeatureRingIndirectDesc;
    }
    [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override {
        return {kQueueSize, kQueueSize, kQueueSize};
    }
    void read_config(std::uint64_t offset, std::span<std::byte> data) override;
    BoxliteResult<void> activate(const ActivateContext& context) override;
    void queue_notify(std::uint16_t queue) override;
    void reset() override;

    [[nodiscard]] VsockStats stats() const;
    [[nodiscard]] std::size_t stream_count() const;
    [[nodiscard]] const std::filesystem::path& uds_path() const noexcept { return uds_path_; }

private:
    struct Stream;
    VsockDevice(std::uint64_t guest_cid, std::filesystem::path uds_path, int listener, int wake,
                VsockTimeouts timeouts);
    void run();
    void wake();
    void handle_tx_locked();
    void handle_packet_locked(const VsockHeader& header, std::span<const std::byte> payload);
    void deliver_rx_locked();
    void queue_control_locked(const Stream& stream, VsockOp op, std::uint32_t flags = 0);
    void queue_reset_locked(std::uint32_t host_port, std::uint32_t guest_port);
    void accept_host_connection_locked();
    void read_connect_line_locked(Stream& stream);
    void flush_to_host_locked(Stream& stream);
    void close_stream_locked(std::uint64_t key);
    void interrupt_rx_locked(bool delivered);
    /// Drops every stream whose deadline passed; returns the time until the next one (or -1 ms).
    std::chrono::milliseconds expire_streams_locked();

    const std::uint64_t guest_cid_;
    const std::filesystem::path uds_path_;
    const int listener_;
    const int wake_;
    const VsockTimeouts timeouts_;

    mutable std::mutex mutex_;
    ActivateContext context_;
    bool active_ = false;
    std::map<std::uint64_t, std::unique_ptr<Stream>> streams_;  // key: host_port << 32 | guest_port
    std::deque<VsockHeader> control_;                           // headers waiting for rx buffers
    std::uint32_t next_host_port_ = 1u << 30;
    VsockStats stats_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace boxlite::devices::virtio
