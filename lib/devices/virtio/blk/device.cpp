#include "devices/virtio/blk/device.hpp"

namespace boxlite::devices::virtio {
namespace {

// Feature bits (§5.2.3).
constexpr std::uint64_t kBlkSegMax = 1ULL << 2;
constexpr std::uint64_t kBlkReadOnly = 1ULL << 5;
constexpr std::uint64_t kBlkBlockSize = 1ULL << 6;
constexpr std::uint64_t kBlkFlush = 1ULL << 9;
constexpr std::uint64_t kBlkDiscard = 1ULL << 13;
constexpr std::uint64_t kBlkWriteZeroes = 1ULL << 14;

// Request types and status values (§5.2.6).
constexpr std::uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8, kTypeDiscard = 11,
                        kTypeWriteZeroes = 13;
constexpr std::uint8_t kStatusOk = 0, kStatusIoError = 1, kStatusUnsupported = 2;
constexpr std::size_t kIdBytes = 20;

struct RequestHeader {
    std::uint32_t type;
    std::uint32_t reserved;
    std::uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

struct DiscardSegment {
    std::uint64_t sector;
    std::uint32_t num_sectors;
    std::uint32_t flags;
};
static_assert(sizeof(DiscardSegment) == 16);

// The config layout (§5.2.4) up to the write-zeroes fields.
struct __attribute__((packed)) BlockConfig {
    std::uint64_t capacity;
    std::uint32_t size_max;
    std::uint32_t seg_max;
    std::uint16_t cylinders;
    std::uint8_t heads;
    std::uint8_t sectors;
    std::uint32_t blk_size;
    std::uint8_t physical_block_exp;
    std::uint8_t alignment_offset;
    std::uint16_t min_io_size;
    std::uint32_t opt_io_size;
    std::uint8_t writeback;
    std::uint8_t unused0;
    std::uint16_t num_queues;
    std::uint32_t max_discard_sectors;
    std::uint32_t max_discard_seg;
    std::uint32_t discard_sector_alignment;
    std::uint32_t max_write_zeroes_sectors;
    std::uint32_t max_write_zeroes_seg;
    std::uint8_t write_zeroes_may_unmap;
    std::uint8_t unused1[3];
};
static_assert(sizeof(BlockConfig) == 60);

// [sector, sector + count) inside a disk of `capacity` sectors, with no overflow anywhere.
bool in_range(std::uint64_t sector, std::uint64_t count, std::uint64_t capacity) {
    return sector <= capacity && count <= capacity - sector;
}

}  // namespace

BlockDevice::BlockDevice(std::shared_ptr<block::BlockBackend> backend, std::string id, bool read_only)
    : backend_(std::move(backend)),
      id_(std::move(id)),
      read_only_(read_only || backend_->read_only()),
      capacity_sectors_(backend_->size() / kSectorSize) {}

std::uint64_t BlockDevice::device_features() const {
    std::uint64_t features = kFeatureVersion1 | kFeatureRingEventIdx | kFeatureRingIndirectDesc | kBlkSegMax |
                             kBlkBlockSize | kBlkFlush;
    if (read_only_) features |= kBlkReadOnly;
    else features |= kBlkDiscard | kBlkWriteZeroes;
    return features;
}

void BlockDevice::read_config(std::uint64_t offset, std::span<std::byte> data) {
    BlockConfig config{};
    config.capacity = capacity_sectors_;
    config.seg_max = kSegMax;
    config.blk_size = kSectorSize;
    config.num_queues = 1;
    config.max_discard_sectors = kMaxDiscardSectors;
    config.max_discard_seg = kMaxDiscardSegments;
    config.discard_sector_alignment = 1;
    config.max_write_zeroes_sectors = kMaxDiscardSectors;
    config.max_write_zeroes_seg = kMaxDiscardSegments;
    config.write_zeroes_may_unmap = 0;
    read_config_bytes(as_bytes_of(config), offset, data);
}

BoxliteResult<void> BlockDevice::activate(const ActivateContext& context) {
    std::lock_guard lock(mutex_);
    if (context.queues.size() != 1 || !context.queues[0].ready)
        return fail(ErrorKind::InvalidArgument, "virtio-blk needs its one request queue set up before DRIVER_OK");
    context_ = context;
    active_ = true;
    return {};
}

void BlockDevice::reset() {
    std::lock_guard lock(mutex_);
    active_ = false;
    context_ = {};
}

BlockStats BlockDevice::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

void BlockDevice::queue_notify(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    if (!active_ || queue != 0) return;
    drain_queue(
        context_, 0, [this](const DescriptorChain& chain) { return handle(chain); }, &stats_.bad_chains);
}

std::uint32_t BlockDevice::handle(const DescriptorChain& chain) {
    ChainReader reader(chain);
    ChainWriter writer(chain);
    const std::uint64_t writable = chain.writable_bytes();
    // No room for even the status byte: nothing we can tell the driver.
    if (writable == 0) {
        ++stats_.errors;
        return 0;
    }
    auto finish = [&](std::uint8_t status, std::uint64_t data_bytes) -> std::uint32_t {
        if (status != kStatusOk) ++stats_.errors;
        // The status is the last writable byte, whatever came before it.
        ChainWriter status_writer(chain);
        status_writer.advance(static_cast<std::size_t>(writable - 1));
        const std::byte byte{status};
        status_writer.write(std::span<const std::byte>(&byte, 1));
        return static_cast<std::uint32_t>(data_bytes + 1);
    };
    auto header = reader.read_obj<RequestHeader>();
    if (!header) return finish(kStatusIoError, 0);
    const std::uint64_t data_in = writable - 1;  // guest buffer room for a read, before the status

    switch (header->type) {
        case kTypeIn: {
            if (data_in % kSectorSize != 0 || !in_range(header->sector, data_in / kSectorSize, capacity_sectors_))
                return finish(kStatusIoError, 0);
            auto iov = writer.iovecs(data_in);
            ++stats_.reads;
            if (!backend_->read(header->sector * kSectorSize, iov)) return finish(kStatusIoError, 0);
            return finish(kStatusOk, data_in);
        }
        case kTypeOut: {
            if (read_only_) return finish(kStatusIoError, 0);
            const std::uint64_t length = reader.remaining();
            if (length % kSectorSize != 0 || !in_range(header->sector, length / kSectorSize, capacity_sectors_))
                return finish(kStatusIoError, 0);
            auto iov = reader.remaining_iovecs();
            ++stats_.writes;
            if (!backend_->write(header->sector * kSectorSize, iov)) return finish(kStatusIoError, 0);
            return finish(kStatusOk, 0);
        }
        case kTypeFlush:
            ++stats_.flushes;
            if (!read_only_ && !backend_->flush()) return finish(kStatusIoError, 0);
            return finish(kStatusOk, 0);
        case kTypeGetId: {
            std::array<std::byte, kIdBytes> id{};
            std::memcpy(id.data(), id_.data(), std::min(id_.size(), kIdBytes));
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(data_in, kIdBytes));
            writer.write(std::span<const std::byte>(id.data(), n));
            return finish(kStatusOk, n);
        }
        case kTypeDiscard:
        case kTypeWriteZeroes: {
            if (read_only_) return finish(kStatusIoError, 0);
            const std::uint64_t length = reader.remaining();
            if (length == 0 || length % sizeof(DiscardSegment) != 0 ||
                length / sizeof(DiscardSegment) > kMaxDiscardSegments)
                return finish(kStatusUnsupported, 0);
            const bool discard = header->type == kTypeDiscard;
            while (reader.remaining() > 0) {
                auto segment = reader.read_obj<DiscardSegment>();
                if (!segment || segment->num_sectors > kMaxDiscardSectors ||
                    !in_range(segment->sector, segment->num_sectors, capacity_sectors_))
                    return finish(kStatusIoError, 0);
                // Discard's flags must be 0; write-zeroes may only carry UNMAP (bit 0).
                if ((discard && segment->flags != 0) || (!discard && (segment->flags & ~1u) != 0))
                    return finish(kStatusUnsupported, 0);
                const std::uint64_t offset = segment->sector * kSectorSize;
                const std::uint64_t bytes = std::uint64_t{segment->num_sectors} * kSectorSize;
                auto done = discard ? backend_->discard(offset, bytes) : backend_->write_zeroes(offset, bytes);
                if (!done) return finish(kStatusIoError, 0);
            }
            ++(discard ? stats_.discards : stats_.write_zeroes);
            return finish(kStatusOk, 0);
        }
        default: return finish(kStatusUnsupported, 0);
    }
}

}  // namespace boxlite::devices::virtio
