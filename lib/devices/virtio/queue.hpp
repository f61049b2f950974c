// Split virtqueues (virtio 1.2 §2.7), the device side: descriptor chains popped from the
// available ring, completions pushed to the used ring, notification suppression with event-idx.
//
// The guest owns the rings and can rewrite them at any moment, so the queue never trusts what
// it read before: every descriptor is copied once, every index is checked against the table,
// every buffer is translated through GuestMemory (which refuses anything outside RAM), chain
// length is capped by the table size (a longer chain must loop), indirect tables may not nest,
// and the byte total of a chain is bounded. A malformed chain is returned to the guest as used
// with length 0 and reported as an error; an available index that jumps by more than the queue
// size breaks the queue (the device should then ask for a reset).
//
// Usable without KVM or a transport: tests and the fuzzer drive it over plain GuestMemory.
#pragma once

#include "memory/guest_memory.hpp"

#include <boxlite/error.hpp>

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace boxlite::devices::virtio {

// Feature bits every device here may offer (virtio 1.2 §6).
inline constexpr std::uint64_t kFeatureRingIndirectDesc = 1ULL << 28;
inline constexpr std::uint64_t kFeatureRingEventIdx = 1ULL << 29;
inline constexpr std::uint64_t kFeatureVersion1 = 1ULL << 32;

// Descriptor flags.
inline constexpr std::uint16_t kDescNext = 1;
inline constexpr std::uint16_t kDescWrite = 2;
inline constexpr std::uint16_t kDescIndirect = 4;

/// The in-memory descriptor (16 bytes, little-endian like every x86 guest).
struct Descriptor {
    std::uint64_t address;
    std::uint32_t length;
    std::uint16_t flags;
    std::uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);

/// One guest buffer of a chain, already translated and bounds-checked.
struct ChainBuffer {
    std::uint64_t guest_address = 0;
    std::span<std::byte> host;
};

/// A popped, validated descriptor chain: device-readable buffers first, then device-writable.
struct DescriptorChain {
    std::uint16_t head = 0;
    std::vector<ChainBuffer> readable;
    std::vector<ChainBuffer> writable;
    [[nodiscard]] std::uint64_t readable_bytes() const noexcept;
    [[nodiscard]] std::uint64_t writable_bytes() const noexcept;
};

/// Sequential copy out of a chain's readable buffers.
class ChainReader {
public:
    explicit ChainReader(const DescriptorChain& chain) : buffers_(chain.readable) {}
    /// Copies up to out.size() bytes; returns how many.
    std::size_t read(std::span<std::byte> out) noexcept;
    template <class T>
    std::optional<T> read_obj() noexcept {
        T value;
        std::span<std::byte> bytes(reinterpret_cast<std::byte*>(&value), sizeof(T));
        if (read(bytes) != sizeof(T)) return std::nullopt;
        return value;
    }
    /// Skips n bytes; returns how many were skipped.
    std::size_t skip(std::size_t n) noexcept;
    /// The unread remainder as iovecs (zero-copy for block I/O).
    [[nodiscard]] std::vector<iovec> remaining_iovecs() const;
    [[nodiscard]] std::uint64_t remaining() const noexcept;

private:
    std::span<const ChainBuffer> buffers_;
    std::size_t index_ = 0;
    std::size_t offset_ = 0;
};

/// Sequential copy into a chain's writable buffers.
class ChainWriter {
public:
    explicit ChainWriter(const DescriptorChain& chain) : buffers_(chain.writable) {}
    std::size_t write(std::span<const std::byte> data) noexcept;
    /// The first `n` unwritten bytes as iovecs, without consuming them (see advance()).
    [[nodiscard]] std::vector<iovec> iovecs(std::uint64_t n) const;
    std::size_t advance(std::size_t n) noexcept;
    [[nodiscard]] std::uint64_t remaining() const noexcept;
    [[nodiscard]] std::uint64_t written() const noexcept { return written_; }

private:
    std::span<const ChainBuffer> buffers_;
    std::size_t index_ = 0;
    std::size_t offset_ = 0;
    std::uint64_t written_ = 0;
};

class VirtQueue {
public:
    /// The most bytes one chain may describe: bounds work per request (1 GiB is far above
    /// what Linux sends, which is limited by seg_max × size_max).
    static constexpr std::uint64_t kMaxChainBytes = 1ULL << 30;

    explicit VirtQueue(std::uint16_t max_size) : max_size_(max_size) {}

    // ---- transport side: what the driver configured --------------------------------------
    [[nodiscard]] std::uint16_t max_size() const noexcept { return max_size_; }
    std::uint16_t size = 0;
    bool ready = false;
    std::uint64_t desc_table = 0;
    std::uint64_t avail_ring = 0;
    std::uint64_t used_ring = 0;

    /// Size a power of two within 1..max_size; tables aligned and inside guest memory.
    [[nodiscard]] BoxliteResult<void> validate(const vmm::GuestMemory& memory) const;
    /// Called when the driver activates the device: negotiated feature bits that change the
    /// ring format, and a fresh cursor.
    void activate(std::uint64_t features) noexcept;
    /// After activate(): continue from ring positions another server left (vhost-user's
    /// SET_VRING_BASE, and the used index the driver sees), instead of 0.
    void resume_at(std::uint16_t next_avail, std::uint16_t next_used) noexcept {
        next_avail_ = next_avail;
        next_used_ = next_used;
    }
    /// Back to the just-constructed state (device reset).
    void reset() noexcept;

    // ---- device side ---------------------------------------------------------------------
    /// The next available chain, nullopt when the ring is empty (or the queue is broken), an
    /// error for a malformed chain (already returned to the guest as used, length 0).
    BoxliteResult<std::optional<DescriptorChain>> pop(const vmm::GuestMemory& memory);
    /// Undoes the last pop (a device that could not take the chain yet, e.g. no rx room).
    void undo_pop() noexcept { --next_avail_; }
    /// Completes a chain: `length` bytes were written into its writable buffers.
    void add_used(const vmm::GuestMemory& memory, std::uint16_t head, std::uint32_t length);
    /// Whether the driver wants an interrupt for the completions since the last time this
    /// returned true (event-idx or the NO_INTERRUPT flag).
    bool needs_notification(const vmm::GuestMemory& memory);
    /// True when the driver has made chains available that we have not popped.
    bool has_available(const vmm::GuestMemory& memory) const;

    [[nodiscard]] bool broken() const noexcept { return broken_; }
    [[nodiscard]] std::uint16_t next_avail() const noexcept { return next_avail_; }
    [[nodiscard]] std::uint16_t next_used() const noexcept { return next_used_; }

private:
    BoxliteResult<std::optional<DescriptorChain>> pop_once(const vmm::GuestMemory& memory, bool recheck);
    BoxliteResult<DescriptorChain> parse_chain(const vmm::GuestMemory& memory, std::uint16_t head) const;

    std::uint16_t max_size_;
    bool event_idx_ = false;
    bool indirect_ = false;
    bool broken_ = false;
    std::uint16_t next_avail_ = 0;
    std::uint16_t next_used_ = 0;
    std::uint16_t signalled_used_ = 0;
    bool signalled_used_valid_ = false;
};

}  // namespace boxlite::devices::virtio
