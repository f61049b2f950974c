// virtio-blk (virtio 1.2 §5.2) over a block::BlockBackend (QCOW2 image or raw file).
//
// Requests: a 16-byte header (type, sector), data buffers, and a final one-byte status the
// device writes. Every sector/length pair is checked against the capacity without overflow,
// writes/discards on a read-only disk fail with IOERR, and discard/write-zeroes segment
// lists are bounded by the limits advertised in the config space.
#pragma once

#include "devices/virtio/device.hpp"

#include "qcow2/block_backend.hpp"

#include <memory>
#include <mutex>
#include <string>

namespace boxlite::devices::virtio {

struct BlockStats {
    std::uint64_t reads = 0, writes = 0, flushes = 0, discards = 0, write_zeroes = 0;
    std::uint64_t errors = 0;      ///< requests answered IOERR / UNSUPP
    std::uint64_t bad_chains = 0;  ///< malformed descriptor chains
};

class BlockDevice final : public VirtioDevice {
public:
    static constexpr std::uint64_t kSectorSize = 512;
    static constexpr std::uint16_t kQueueSize = 256;
    /// Most segments in one discard / write-zeroes request (advertised in the config).
    static constexpr std::uint32_t kMaxDiscardSegments = 16;
    /// Largest discard / write-zeroes in sectors per segment (advertised): 1 GiB.
    static constexpr std::uint32_t kMaxDiscardSectors = (1u << 30) / 512;
    /// Most data segments in one request (advertised as seg_max).
    static constexpr std::uint32_t kSegMax = kQueueSize - 2;

    /// `id` is what VIRTIO_BLK_T_GET_ID returns (at most 20 bytes; the disk serial).
    BlockDevice(std::shared_ptr<block::BlockBackend> backend, std::string id, bool read_only = false);

    [[nodiscard]] DeviceType device_type() const override { return DeviceType::Block; }
    [[nodiscard]] std::uint64_t device_features() const override;
    [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
    void read_config(std::uint64_t offset, std::span<std::byte> data) override;
    BoxliteResult<void> activate(const ActivateContext& context) override;
    void queue_notify(std::uint16_t queue) override;
    void reset() override;

    [[nodiscard]] BlockStats stats() const;
    [[nodiscard]] bool read_only() const noexcept { return read_only_; }

private:
    std::uint32_t handle(const DescriptorChain& chain);

    std::shared_ptr<block::BlockBackend> backend_;
    std::string id_;
    bool read_only_;
    std::uint64_t capacity_sectors_;
    mutable std::mutex mutex_;
    ActivateContext context_;
    bool active_ = false;
    BlockStats stats_;
};

}  // namespace boxlite::devices::virtio
