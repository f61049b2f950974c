// virtio-net (virtio 1.2 §5.1): one rx/tx queue pair, no offloads, the frames handed to the host
// side as datagrams on a socket pair (one frame per send/recv).
//
// The host end of that socket pair (host_end()) is what lib/net's FramePump reads and writes as
// its "box" descriptor, exactly like the namespace engine's tap: the device knows nothing of
// passt or the firewall, and the pump nothing of virtqueues. The device is the same whether our
// virtio-mmio transport (kvm engine) or a vhost-user back end (qemu engine) serves it.
//
// Features: VERSION_1 (so every frame carries the 12-byte virtio_net_hdr_v1), MAC (the config
// space's address), STATUS (link always up), EVENT_IDX and INDIRECT_DESC. No checksum or GSO
// offload and no MRG_RXBUF: a frame is at most MTU + 14 bytes and fits one rx buffer chain; a
// frame that does not fit the chain the driver posted is dropped, as a NIC drops it.
//
// Everything from the guest is hostile: a tx chain shorter than its header or longer than
// kMaxFrame + header is completed with length 0 and counted; nothing of the header is trusted
// (no offload was negotiated, so its fields are ignored). rx never writes past a chain's writable
// bytes.
//
// Threads: queue_notify() runs on the transport's thread (a vCPU, or the vhost-user serve loop);
// the device's own thread polls the socket for frames to deliver (while the driver has posted rx
// buffers) and for room again after a full socket stopped tx. Both take the device mutex; reset()
// takes it too, so nothing touches guest memory after reset() returns.
#pragma once

#include "devices/virtio/device.hpp"

#include "base/fd.hpp"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>

namespace boxlite::devices::virtio {

/// The virtio-net config space (§5.1.4) up to the MTU field.
struct __attribute__((packed)) NetConfig {
    std::uint8_t mac[6];
    std::uint16_t status;
    std::uint16_t max_virtqueue_pairs;
    std::uint16_t mtu;
};
static_assert(sizeof(NetConfig) == 12);

/// The header in front of every frame once VERSION_1 is negotiated (virtio_net_hdr_v1).
struct __attribute__((packed)) NetHeader {
    std::uint8_t flags;
    std::uint8_t gso_type;
    std::uint16_t hdr_len;
    std::uint16_t gso_size;
    std::uint16_t csum_start;
    std::uint16_t csum_offset;
    std::uint16_t num_buffers;
};
static_assert(sizeof(NetHeader) == 12);

inline constexpr std::uint64_t kNetFeatureMac = 1ULL << 5;
inline constexpr std::uint64_t kNetFeatureStatus = 1ULL << 16;
inline constexpr std::uint16_t kNetStatusLinkUp = 1;

struct NetStats {
    std::uint64_t frames_to_guest = 0;
    std::uint64_t frames_from_guest = 0;
    std::uint64_t rx_dropped = 0;  ///< frames the posted rx chain could not hold
    std::uint64_t tx_dropped = 0;  ///< frames the host end refused (closed)
    std::uint64_t bad_chains = 0;  ///< malformed descriptor chains or tx frames out of bounds
    std::uint64_t tx_blocked = 0;  ///< times a full socket paused tx until it had room again
};

class NetDevice final : public VirtioDevice {
public:
    static constexpr std::uint16_t kQueueSize = 256;
    static constexpr std::uint16_t kRxQueue = 0;
    static constexpr std::uint16_t kTxQueue = 1;
    /// The largest frame either way (no FCS): an MTU of 65535 plus the Ethernet header.
    static constexpr std::size_t kMaxFrame = 65535 + 14;
    /// The smallest frame the device passes on (an Ethernet header).
    static constexpr std::size_t kMinFrame = 14;
    /// The MTU the config space states (the driver reads it only if VIRTIO_NET_F_MTU, which is
    /// not offered: the guest keeps its default, 1500).
    static constexpr std::uint16_t kMtu = 1500;

    /// Makes the socket pair and starts the device's thread; `socket_buffer` sizes both ends'
    /// buffers (best effort).
    static BoxliteResult<std::shared_ptr<NetDevice>> create(std::array<std::uint8_t, 6> mac,
                                                            int socket_buffer = 4 * 1024 * 1024);
    ~NetDevice() override;

    /// The host end: one Ethernet frame per read() (from the guest) and per write() (to it).
    /// Taken once (the pump owns it from then on); later calls give an empty fd.
    base::OwnedFd take_host_end() noexcept { return std::move(host_end_); }

    [[nodiscard]] DeviceType device_type() const override { return DeviceType::Net; }
    [[nodiscard]] std::uint64_t device_features() const override {
        return kFeatureVersion1 | kFeatureRingEventIdx | kFeatureRingIndirectDesc | kNetFeatureMac | kNetFeatureStatus;
    }
    [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
    void read_config(std::uint64_t offset, std::span<std::byte> data) override;
    BoxliteResult<void> activate(const ActivateContext& context) override;
    void queue_notify(std::uint16_t queue) override;
    void reset() override;

    [[nodiscard]] NetStats stats() const;
    [[nodiscard]] const std::array<std::uint8_t, 6>& mac() const noexcept { return mac_; }

private:
    NetDevice(std::array<std::uint8_t, 6> mac, base::OwnedFd device_end, base::OwnedFd host_end, base::OwnedFd wake);
    void run();
    void wake() noexcept;
    void deliver_rx_locked();
    void process_tx_locked();

    const std::array<std::uint8_t, 6> mac_;
    base::OwnedFd device_end_;
    base::OwnedFd host_end_;
    base::OwnedFd wake_;

    mutable std::mutex mutex_;
    ActivateContext context_;
    bool active_ = false;
    bool rx_starved_ = false;  ///< no rx chain posted: the socket waits until the driver posts one
    bool tx_blocked_ = false;  ///< the socket was full: tx resumes when it has room
    bool host_closed_ = false;
    std::vector<std::byte> rx_frame_;
    std::vector<std::byte> tx_frame_;
    NetStats stats_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace boxlite::devices::virtio
