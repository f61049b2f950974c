#include "devices/virtio/queue.hpp"

#include <atomic>
#include <cstring>

namespace boxlite::devices::virtio {
namespace {

// Ring layouts (§2.7.6, §2.7.8): avail = flags, idx, ring[size], used_event;
// used = flags, idx, ring[size] of {id, len}, avail_event.
constexpr std::uint64_t kRingHeader = 4;
constexpr std::uint64_t kUsedElementSize = 8;
constexpr std::uint16_t kAvailNoInterrupt = 1;

std::uint64_t avail_bytes(std::uint16_t size) { return kRingHeader + 2ULL * size + 2; }
std::uint64_t used_bytes(std::uint16_t size) { return kRingHeader + kUsedElementSize * size + 2; }

}  // namespace

std::uint64_t DescriptorChain::readable_bytes() const noexcept {
    std::uint64_t total = 0;
    for (const auto& buffer : readable) total += buffer.host.size();
    return total;
}

std::uint64_t DescriptorChain::writable_bytes() const noexcept {
    std::uint64_t total = 0;
    for (const auto& buffer : writable) total += buffer.host.size();
    return total;
}

// ---- ChainReader / ChainWriter --------------------------------------------------------------

std::size_t ChainReader::read(std::span<std::byte> out) noexcept {
    std::size_t done = 0;
    while (done < out.size() && index_ < buffers_.size()) {
        auto source = buffers_[index_].host.subspan(offset_);
        const std::size_t n = std::min(source.size(), out.size() - done);
        if (n) std::memcpy(out.data() + done, source.data(), n);
        done += n;
        offset_ += n;
        if (offset_ == buffers_[index_].host.size()) {
            ++index_;
            offset_ = 0;
        }
    }
    return done;
}

std::size_t ChainReader::skip(std::size_t n) noexcept {
    std::size_t done = 0;
    while (done < n && index_ < buffers_.size()) {
        const std::size_t available = buffers_[index_].host.size() - offset_;
        const std::size_t step = std::min(available, n - done);
        done += step;
        offset_ += step;
        if (offset_ == buffers_[index_].host.size()) {
            ++index_;
            offset_ = 0;
        }
    }
    return done;
}

std::vector<iovec> ChainReader::remaining_iovecs() const {
    std::vector<iovec> out;
    for (std::size_t i = index_; i < buffers_.size(); ++i) {
        auto bytes = buffers_[i].host.subspan(i == index_ ? offset_ : 0);
        if (!bytes.empty()) out.push_back({bytes.data(), bytes.size()});
    }
    return out;
}

std::uint64_t ChainReader::remaining() const noexcept {
    std::uint64_t total = 0;
    for (std::size_t i = index_; i < buffers_.size(); ++i)
        total += buffers_[i].host.size() - (i == index_ ? offset_ : 0);
    return total;
}

std::size_t ChainWriter::write(std::span<const std::byte> data) noexcept {
    std::size_t done = 0;
    while (done < data.size() && index_ < buffers_.size()) {
        auto target = buffers_[index_].host.subspan(offset_);
        const std::size_t n = std::min(target.size(), data.size() - done);
        if (n) std::memcpy(target.data(), data.data() + done, n);
        done += n;
        offset_ += n;
        if (offset_ == buffers_[index_].host.size()) {
            ++index_;
            offset_ = 0;
        }
    }
    written_ += done;
    return done;
}

std::vector<iovec> ChainWriter::iovecs(std::uint64_t n) const {
    std::vector<iovec> out;
    for (std::size_t i = index_; i < buffers_.size() && n > 0; ++i) {
        auto bytes = buffers_[i].host.subspan(i == index_ ? offset_ : 0);
        const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(bytes.size(), n));
        if (take) out.push_back({bytes.data(), take});
        n -= take;
    }
    return out;
}

std::size_t ChainWriter::advance(std::size_t n) noexcept {
    std::size_t done = 0;
    while (done < n && index_ < buffers_.size()) {
        const std::size_t available = buffers_[index_].host.size() - offset_;
        const std::size_t step = std::min(available, n - done);
        done += step;
        offset_ += step;
        if (offset_ == buffers_[index_].host.size()) {
            ++index_;
            offset_ = 0;
        }
    }
    written_ += done;
    return done;
}

std::uint64_t ChainWriter::remaining() const noexcept {
    std::uint64_t total = 0;
    for (std::size_t i = index_; i < buffers_.size(); ++i)
        total += buffers_[i].host.size() - (i == index_ ? offset_ : 0);
    return total;
}

// ---- VirtQueue --------------------------------------------------------------------------------

BoxliteResult<void> VirtQueue::validate(const vmm::GuestMemory& memory) const {
    if (size == 0 || size > max_size_ || (size & (size - 1)) != 0)
        return fail(ErrorKind::InvalidArgument, "queue size {} is not a power of two in 1..{}", size, max_size_);
    if (desc_table % 16 != 0 || avail_ring % 2 != 0 || used_ring % 4 != 0)
        return fail(ErrorKind::InvalidArgument,
                    "queue rings misaligned (descriptors {:#x} need 16, available {:#x} 2, used {:#x} 4)", desc_table,
                    avail_ring, used_ring);
    if (!memory.contains(desc_table, 16ULL * size))
        return fail(ErrorKind::InvalidArgument, "descriptor table {:#x} ({} entries) is outside guest memory",
                    desc_table, size);
    if (!memory.contains(avail_ring, avail_bytes(size)))
        return fail(ErrorKind::InvalidArgument, "available ring {:#x} is outside guest memory", avail_ring);
    if (!memory.contains(used_ring, used_bytes(size)))
        return fail(ErrorKind::InvalidArgument, "used ring {:#x} is outside guest memory", used_ring);
    return {};
}

void VirtQueue::activate(std::uint64_t features) noexcept {
    event_idx_ = features & kFeatureRingEventIdx;
    indirect_ = features & kFeatureRingIndirectDesc;
    broken_ = false;
    next_avail_ = next_used_ = signalled_used_ = 0;
    signalled_used_valid_ = false;
}

void VirtQueue::reset() noexcept {
    size = 0;
    ready = false;
    desc_table = avail_ring = used_ring = 0;
    activate(0);
}

bool VirtQueue::has_available(const vmm::GuestMemory& memory) const {
    if (broken_ || !ready) return false;
    auto idx = memory.read_obj<std::uint16_t>(avail_ring + 2);
    return idx && *idx != next_avail_;
}

BoxliteResult<std::optional<DescriptorChain>> VirtQueue::pop(const vmm::GuestMemory& memory) {
    return pop_once(memory, /*recheck=*/true);
}

BoxliteResult<std::optional<DescriptorChain>> VirtQueue::pop_once(const vmm::GuestMemory& memory, bool recheck) {
    if (broken_ || !ready || size == 0) return std::optional<DescriptorChain>{};
    auto avail_idx = memory.read_obj<std::uint16_t>(avail_ring + 2);
    if (!avail_idx) {
        broken_ = true;
        return fail(ErrorKind::InvalidArgument, "available ring {:#x} is outside guest memory", avail_ring);
    }
    // Pairs with the driver's write barrier before it publishes idx: ring entries it covers
    // are visible once we have seen the index.
    std::atomic_thread_fence(std::memory_order_acquire);
    const std::uint16_t pending = static_cast<std::uint16_t>(*avail_idx - next_avail_);
    if (pending > size) {
        broken_ = true;
        return fail(ErrorKind::InvalidArgument, "available index jumped from {} to {}: more than the queue size {}",
                    next_avail_, *avail_idx, size);
    }
    if (pending == 0) {
        if (event_idx_ && recheck) {
            // Ask for a kick at the next buffer, then look again: the driver may have added one
            // between our read and this write (the full barrier orders write → re-read).
            memory.write_obj<std::uint16_t>(used_ring + kRingHeader + kUsedElementSize * size, next_avail_);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            auto again = memory.read_obj<std::uint16_t>(avail_ring + 2);
            if (!again || *again == next_avail_) return std::optional<DescriptorChain>{};
            return pop_once(memory, /*recheck=*/false);  // once: a flapping guest cannot recurse us
        }
        return std::optional<DescriptorChain>{};
    }
    auto head = memory.read_obj<std::uint16_t>(avail_ring + kRingHeader + 2ULL * (next_avail_ % size));
    ++next_avail_;
    if (event_idx_) memory.write_obj<std::uint16_t>(used_ring + kRingHeader + kUsedElementSize * size, next_avail_);
    if (!head) {
        broken_ = true;
        return fail(ErrorKind::InvalidArgument, "available ring entry outside guest memory");
    }
    auto chain = parse_chain(memory, *head);
    if (!chain) {
        add_used(memory, *head, 0);
        return fail(chain.error().with_context(fmt::format("descriptor chain at head {}", *head)));
    }
    return std::optional<DescriptorChain>(std::move(*chain));
}

BoxliteResult<DescriptorChain> VirtQueue::parse_chain(const vmm::GuestMemory& memory, std::uint16_t head) const {
    DescriptorChain chain;
    chain.head = head;
    std::uint64_t table = desc_table;
    std::uint32_t table_size = size;
    std::uint32_t index = head;
    std::uint32_t visited = 0;
    bool in_indirect = false;
    std::uint64_t total = 0;
    for (;;) {
        if (index >= table_size)
            return fail(ErrorKind::InvalidArgument, "descriptor index {} is outside the {}table of {}", index,
                        in_indirect ? "indirect " : "", table_size);
        // A chain cannot visit more descriptors than its table holds without looping.
        if (++visited > table_size)
            return fail(ErrorKind::InvalidArgument, "chain is longer than its table ({} descriptors): a loop",
                        table_size);
        auto desc = memory.read_obj<Descriptor>(table + 16ULL * index);
        if (!desc) return fail(ErrorKind::InvalidArgument, "descriptor {} is outside guest memory", index);
        if (desc->flags & kDescIndirect) {
            if (!indirect_)
                return fail(ErrorKind::InvalidArgument, "indirect descriptor without VIRTIO_F_INDIRECT_DESC");
            if (in_indirect) return fail(ErrorKind::InvalidArgument, "nested indirect descriptor table");
            if (desc->flags & kDescNext)
                return fail(ErrorKind::InvalidArgument, "indirect descriptor that also has NEXT");
            if (desc->length == 0 || desc->length % 16 != 0)
                return fail(ErrorKind::InvalidArgument, "indirect table length {} is not a positive multiple of 16",
                            desc->length);
            const std::uint32_t entries = desc->length / 16;
            if (entries > 65536)
                return fail(ErrorKind::InvalidArgument, "indirect table of {} entries (at most 65536)", entries);
            if (!memory.contains(desc->address, desc->length))
                return fail(ErrorKind::InvalidArgument, "indirect table {:#x}+{} is outside guest memory",
                            desc->address, desc->length);
            table = desc->address;
            table_size = entries;
            index = 0;
            visited = 0;
            in_indirect = true;
            continue;
        }
        total += desc->length;
        if (total > kMaxChainBytes)
            return fail(ErrorKind::InvalidArgument, "chain describes more than {} bytes", kMaxChainBytes);
        auto bytes = memory.slice(desc->address, desc->length);
        if (!bytes)
            return fail(ErrorKind::InvalidArgument, "buffer {:#x}+{} of descriptor {} is outside guest memory",
                        desc->address, desc->length, index);
        if (desc->flags & kDescWrite) {
            chain.writable.push_back({desc->address, *bytes});
        } else {
            if (!chain.writable.empty())
                return fail(ErrorKind::InvalidArgument, "device-readable descriptor {} after a writable one", index);
            chain.readable.push_back({desc->address, *bytes});
        }
        if (!(desc->flags & kDescNext)) break;
        index = desc->next;
    }
    return chain;
}

void VirtQueue::add_used(const vmm::GuestMemory& memory, std::uint16_t head, std::uint32_t length) {
    if (size == 0) return;
    const std::uint64_t element = used_ring + kRingHeader + kUsedElementSize * (next_used_ % size);
    memory.write_obj<std::uint32_t>(element, head);
    memory.write_obj<std::uint32_t>(element + 4, length);
    ++next_used_;
    // The element must be visible before the index that publishes it.
    std::atomic_thread_fence(std::memory_order_release);
    memory.write_obj<std::uint16_t>(used_ring + 2, next_used_);
}

bool VirtQueue::needs_notification(const vmm::GuestMemory& memory) {
    // Our used-index write must be visible before we read the driver's suppression state.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!event_idx_) {
        auto flags = memory.read_obj<std::uint16_t>(avail_ring);
        return !flags || !(*flags & kAvailNoInterrupt);
    }
    const std::uint16_t old_used = signalled_used_;
    const bool valid = signalled_used_valid_;
    signalled_used_ = next_used_;
    signalled_used_valid_ = true;
    if (!valid) return true;
    auto used_event = memory.read_obj<std::uint16_t>(avail_ring + kRingHeader + 2ULL * size);
    if (!used_event) return true;
    // vring_need_event(): notify iff used_event lies in (old_used, next_used].
    return static_cast<std::uint16_t>(next_used_ - *used_event - 1) < static_cast<std::uint16_t>(next_used_ - old_used);
}

}  // namespace boxlite::devices::virtio
