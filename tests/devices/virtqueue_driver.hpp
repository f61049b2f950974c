// VirtQueueDriver: plays the guest driver's side of a split virtqueue over real GuestMemory —
// lays out the descriptor table and rings, adds chains (well-formed or hostile), publishes them,
// and reads completions back. Device tests drive our device models through it.
#pragma once

#include "devices/virtio/device.hpp"
#include "devices/virtio/queue.hpp"
#include "memory/guest_memory.hpp"

#include <cstring>
#include <optional>
#include <vector>

namespace boxlite::devices::virtio::testing {

struct Segment {
    std::uint64_t address;
    std::uint32_t length;
    bool writable;
};

struct UsedElement {
    std::uint32_t id;
    std::uint32_t length;
};

class VirtQueueDriver {
public:
    /// Lays out a queue of `size` entries at `base` (desc table, avail ring, used ring, each
    /// page-aligned) in `memory`.
    VirtQueueDriver(const vmm::GuestMemory& memory, std::uint64_t base, std::uint16_t size)
        : memory_(memory),
          size_(size),
          desc_(base),
          avail_(base + 0x1000 * ((16ULL * size + 0xfff) / 0x1000)),
          used_(avail_ + 0x1000 * ((6ULL + 2 * size + 0xfff) / 0x1000)) {
        for (std::uint64_t a = desc_; a < used_ + 6 + 8ULL * size; a += 8) memory_.write_obj<std::uint64_t>(a, 0);
    }

    /// Points a device-side queue at this layout (what the transport does on QueueReady).
    void configure(VirtQueue& queue, std::uint64_t features = kFeatureVersion1) const {
        queue.size = size_;
        queue.desc_table = desc_;
        queue.avail_ring = avail_;
        queue.used_ring = used_;
        queue.ready = true;
        queue.activate(features);
    }

    std::uint64_t desc_table() const { return desc_; }
    std::uint64_t avail_ring() const { return avail_; }
    std::uint64_t used_ring() const { return used_; }
    std::uint16_t size() const { return size_; }

    /// Writes one raw descriptor (hostile tests set any fields they like).
    void write_descriptor(std::uint16_t index, const Descriptor& descriptor) const {
        memory_.write_obj(desc_ + 16ULL * index, descriptor);
    }
    /// Writes a chain into descriptors starting at `first_index` (wrapping), linked with NEXT.
    std::uint16_t add_chain(const std::vector<Segment>& segments, std::optional<std::uint16_t> first_index = {}) {
        std::uint16_t first = first_index.value_or(next_free_);
        for (std::size_t i = 0; i < segments.size(); ++i) {
            const std::uint16_t index = static_cast<std::uint16_t>((first + i) % size_);
            Descriptor d{};
            d.address = segments[i].address;
            d.length = segments[i].length;
            d.flags = static_cast<std::uint16_t>((segments[i].writable ? kDescWrite : 0) |
                                                 (i + 1 < segments.size() ? kDescNext : 0));
            d.next = static_cast<std::uint16_t>((first + i + 1) % size_);
            write_descriptor(index, d);
        }
        if (!first_index) next_free_ = static_cast<std::uint16_t>((first + segments.size()) % size_);
        publish(first);
        return first;
    }
    /// Puts `head` in the available ring and bumps the index.
    void publish(std::uint16_t head) {
        memory_.write_obj<std::uint16_t>(avail_ + 4 + 2ULL * (avail_idx_ % size_), head);
        ++avail_idx_;
        memory_.write_obj<std::uint16_t>(avail_ + 2, avail_idx_);
    }
    /// Sets the available index to anything (hostile tests).
    void set_avail_idx(std::uint16_t value) {
        avail_idx_ = value;
        memory_.write_obj<std::uint16_t>(avail_ + 2, value);
    }
    void set_used_event(std::uint16_t value) const {
        memory_.write_obj<std::uint16_t>(avail_ + 4 + 2ULL * size_, value);
    }
    void set_avail_flags(std::uint16_t value) const { memory_.write_obj<std::uint16_t>(avail_, value); }
    std::uint16_t avail_event() const { return memory_.read_obj<std::uint16_t>(used_ + 4 + 8ULL * size_).value_or(0); }

    std::uint16_t used_idx() const { return memory_.read_obj<std::uint16_t>(used_ + 2).value_or(0); }
    /// Completions not yet consumed by this driver.
    std::vector<UsedElement> take_used() {
        std::vector<UsedElement> out;
        const std::uint16_t idx = used_idx();
        while (last_used_ != idx) {
            const std::uint64_t at = used_ + 4 + 8ULL * (last_used_ % size_);
            out.push_back({memory_.read_obj<std::uint32_t>(at).value_or(~0u),
                           memory_.read_obj<std::uint32_t>(at + 4).value_or(~0u)});
            ++last_used_;
        }
        return out;
    }

private:
    const vmm::GuestMemory& memory_;
    std::uint16_t size_;
    std::uint64_t desc_, avail_, used_;
    std::uint16_t avail_idx_ = 0;
    std::uint16_t last_used_ = 0;
    std::uint16_t next_free_ = 0;
};

/// Counts interrupts a device raised, per queue.
class CountingInterrupt final : public Interrupt {
public:
    void signal_used_queue(std::uint16_t queue) override {
        if (queue >= used.size()) used.resize(queue + 1u);
        ++used[queue];
    }
    void signal_config_change() override { ++config; }
    std::vector<int> used;
    int config = 0;
    int used_count(std::uint16_t queue) const { return queue < used.size() ? used[queue] : 0; }
};

inline std::vector<std::byte> bytes_of(std::string_view text) {
    std::vector<std::byte> out(text.size());
    std::memcpy(out.data(), text.data(), text.size());
    return out;
}

}  // namespace boxlite::devices::virtio::testing
