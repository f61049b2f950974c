// Bus: routes guest port-I/O or MMIO accesses to the device that owns the address.
//
// Devices are inserted before the vCPUs start and never removed while they run, so lookups
// take no lock; each device serializes its own state (several vCPUs may hit it at once).
#pragma once

#include <boxlite/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace boxlite::vmm {

/// Something that answers loads and stores in an address window. `offset` is relative to the
/// window's base; `data` is 1, 2, 4 or 8 bytes (little-endian, as the guest sees it).
class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual void read(std::uint64_t offset, std::span<std::byte> data) = 0;
    virtual void write(std::uint64_t offset, std::span<const std::byte> data) = 0;
};

class Bus {
public:
    explicit Bus(std::string name) : name_(std::move(name)) {}

    /// Claims [base, base+length) for `device`; refuses an empty, wrapping or overlapping window.
    BoxliteResult<void> insert(std::uint64_t base, std::uint64_t length, std::shared_ptr<BusDevice> device) {
        if (length == 0 || base + length < base)
            return fail(ErrorKind::Internal, "{} bus: invalid window {:#x}+{:#x}", name_, base, length);
        for (const auto& entry : entries_)
            if (base < entry.base + entry.length && entry.base < base + length)
                return fail(ErrorKind::Internal, "{} bus: window {:#x}+{:#x} overlaps {:#x}+{:#x}", name_, base, length,
                            entry.base, entry.length);
        entries_.push_back({base, length, std::move(device)});
        std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.base < b.base; });
        return {};
    }

    /// False when nothing claims the whole access (the caller then returns all-ones / drops it).
    bool read(std::uint64_t address, std::span<std::byte> data) const {
        const Entry* entry = find(address, data.size());
        if (!entry) return false;
        entry->device->read(address - entry->base, data);
        return true;
    }
    bool write(std::uint64_t address, std::span<const std::byte> data) const {
        const Entry* entry = find(address, data.size());
        if (!entry) return false;
        entry->device->write(address - entry->base, data);
        return true;
    }

private:
    struct Entry {
        std::uint64_t base;
        std::uint64_t length;
        std::shared_ptr<BusDevice> device;
    };

    const Entry* find(std::uint64_t address, std::size_t size) const {
        auto it = std::upper_bound(entries_.begin(), entries_.end(), address,
                                   [](std::uint64_t a, const Entry& e) { return a < e.base; });
        if (it == entries_.begin()) return nullptr;
        --it;
        const std::uint64_t offset = address - it->base;
        if (offset >= it->length || size > it->length - offset) return nullptr;
        return &*it;
    }

    std::string name_;
    std::vector<Entry> entries_;
};

}  // namespace boxlite::vmm
