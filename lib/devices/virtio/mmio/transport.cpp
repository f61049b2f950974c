#include "devices/virtio/mmio/transport.hpp"

namespace boxlite::devices::virtio {

MmioTransport::MmioTransport(std::shared_ptr<VirtioDevice> device, const vmm::GuestMemory& memory,
                             std::function<void()> raise_interrupt)
    : device_(std::move(device)), memory_(memory), raise_interrupt_(std::move(raise_interrupt)) {
    for (auto max : device_->queue_max_sizes()) queues_.emplace_back(max);
}

MmioTransport::~MmioTransport() {
    std::lock_guard lock(mutex_);
    if (activated_) device_->reset();
    activated_ = false;
}

std::uint32_t MmioTransport::status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

bool MmioTransport::activated() const {
    std::lock_guard lock(mutex_);
    return activated_;
}

std::string MmioTransport::last_error() const {
    std::lock_guard lock(mutex_);
    return last_error_;
}

void MmioTransport::signal_used_queue(std::uint16_t) {
    interrupt_status_.fetch_or(kInterruptVring);
    if (raise_interrupt_) raise_interrupt_();
}

void MmioTransport::signal_config_change() {
    interrupt_status_.fetch_or(kInterruptConfig);
    if (raise_interrupt_) raise_interrupt_();
}

VirtQueue* MmioTransport::selected_queue() { return queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr; }

void MmioTransport::read(std::uint64_t offset, std::span<std::byte> data) {
    if (offset >= kConfig) {
        std::lock_guard lock(mutex_);
        device_->read_config(offset - kConfig, data);
        return;
    }
    std::uint32_t value = 0xffffffff;
    if (data.size() == 4 && offset % 4 == 0) {
        std::lock_guard lock(mutex_);
        value = read_register(offset);
    }
    // The spec requires 32-bit register accesses; anything else reads as all-ones.
    std::memcpy(data.data(), &value, std::min<std::size_t>(data.size(), 4));
    for (std::size_t i = 4; i < data.size(); ++i) data[i] = std::byte{0xff};
}

void MmioTransport::write(std::uint64_t offset, std::span<const std::byte> data) {
    if (offset >= kConfig) {
        std::lock_guard lock(mutex_);
        if (status_ & kStatusDriver) device_->write_config(offset - kConfig, data);
        return;
    }
    if (data.size() != 4 || offset % 4 != 0) return;
    std::uint32_t value;
    std::memcpy(&value, data.data(), 4);
    if (offset == kQueueNotify) {
        // Outside the lock: the device may take its own locks and signal interrupts.
        mmio_notifies_.fetch_add(1, std::memory_order_relaxed);
        notify_queue(static_cast<std::uint16_t>(value & 0xffff));
        return;
    }
    std::lock_guard lock(mutex_);
    write_register(offset, value);
}

void MmioTransport::notify_queue(std::uint16_t queue) {
    {
        std::lock_guard lock(mutex_);
        if (!activated_ || queue >= queues_.size()) return;
    }
    device_->queue_notify(queue);
}

std::uint32_t MmioTransport::read_register(std::uint64_t offset) {
    switch (offset) {
        case kMagicValue: return kMagic;
        case kVersionReg: return kVersion;
        case kDeviceId: return static_cast<std::uint32_t>(device_->device_type());
        case kVendorIdReg: return kVendorId;
        case kDeviceFeatures: {
            const std::uint64_t features = device_->device_features();
            if (device_features_sel_ == 0) return static_cast<std::uint32_t>(features);
            if (device_features_sel_ == 1) return static_cast<std::uint32_t>(features >> 32);
            return 0;
        }
        case kQueueNumMax: {
            auto* queue = selected_queue();
            return queue ? queue->max_size() : 0;  // 0: no such queue
        }
        case kQueueReady: {
            auto* queue = selected_queue();
            return queue && queue->ready ? 1 : 0;
        }
        case kInterruptStatus: return interrupt_status_.load();
        case kStatus: return status_;
        case kShmLenLow:
        case kShmLenHigh: return 0xffffffff;  // no shared memory regions
        case kConfigGeneration: return config_generation_;
        default: return 0;
    }
}

void MmioTransport::write_register(std::uint64_t offset, std::uint32_t value) {
    auto* queue = selected_queue();
    // Queue layout may change only between FEATURES_OK and DRIVER_OK, on an existing queue
    // that is not yet live.
    const bool queue_writable = queue && !queue->ready && !(status_ & kStatusDriverOk);
    switch (offset) {
        case kDeviceFeaturesSel: device_features_sel_ = value; return;
        case kDriverFeaturesSel: driver_features_sel_ = value; return;
        case kDriverFeatures:
            if ((status_ & kStatusFeaturesOk) || !(status_ & kStatusDriver)) return;
            if (driver_features_sel_ == 0) driver_features_ = (driver_features_ & ~0xffffffffULL) | value;
            else if (driver_features_sel_ == 1)
                driver_features_ = (driver_features_ & 0xffffffffULL) | (std::uint64_t{value} << 32);
            return;
        case kQueueSel: queue_sel_ = value; return;
        case kQueueNum:
            if (queue_writable) queue->size = static_cast<std::uint16_t>(std::min<std::uint32_t>(value, 0xffff));
            return;
        case kQueueReady:
            if (!queue || (status_ & kStatusDriverOk)) return;
            if (value == 1) {
                if (auto valid = queue->validate(memory_); !valid) {
                    last_error_ = fmt::format("queue {}: {}", queue_sel_, valid.error().message());
                    status_ |= kStatusNeedsReset;
                    return;
                }
                queue->ready = true;
            } else {
                queue->ready = false;
            }
            return;
        case kInterruptAck: interrupt_status_.fetch_and(~value); return;
        case kStatus: set_status(value); return;
        case kQueueDescLow:
            if (queue_writable) queue->desc_table = (queue->desc_table & ~0xffffffffULL) | value;
            return;
        case kQueueDescHigh:
            if (queue_writable) queue->desc_table = (queue->desc_table & 0xffffffffULL) | (std::uint64_t{value} << 32);
            return;
        case kQueueDriverLow:
            if (queue_writable) queue->avail_ring = (queue->avail_ring & ~0xffffffffULL) | value;
            return;
        case kQueueDriverHigh:
            if (queue_writable) queue->avail_ring = (queue->avail_ring & 0xffffffffULL) | (std::uint64_t{value} << 32);
            return;
        case kQueueDeviceLow:
            if (queue_writable) queue->used_ring = (queue->used_ring & ~0xffffffffULL) | value;
            return;
        case kQueueDeviceHigh:
            if (queue_writable) queue->used_ring = (queue->used_ring & 0xffffffffULL) | (std::uint64_t{value} << 32);
            return;
        case kShmSel: return;
        default: return;  // read-only or unknown: ignored
    }
}

void MmioTransport::reset_locked() {
    if (activated_) device_->reset();
    activated_ = false;
    for (auto& queue : queues_) queue.reset();
    status_ = 0;
    driver_features_ = 0;
    device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
    interrupt_status_ = 0;
    ++config_generation_;
}

void MmioTransport::set_status(std::uint32_t value) {
    if (value == 0) {
        reset_locked();
        return;
    }
    // The driver may only add bits (§3.1.1); clearing any is a protocol error we ignore.
    if ((value & status_) != status_) return;
    const std::uint32_t added = value & ~status_;
    if (added & kStatusFeaturesOk) {
        const std::uint64_t offered = device_->device_features();
        if ((driver_features_ & ~offered) != 0 || !(driver_features_ & kFeatureVersion1)) {
            last_error_ = fmt::format("driver accepted features {:#x} outside the offered {:#x}, or not VERSION_1",
                                      driver_features_, offered);
            value &= ~kStatusFeaturesOk;  // the driver reads FEATURES_OK back and gives up
        }
    }
    if ((added & kStatusDriverOk) && !(value & kStatusFeaturesOk)) value &= ~kStatusDriverOk;
    status_ = value;
    if ((added & kStatusDriverOk) && (status_ & kStatusDriverOk) && !activated_) {
        for (auto& queue : queues_)
            if (queue.ready) queue.activate(driver_features_);
        ActivateContext context{&memory_, queues_, this, driver_features_};
        if (auto result = device_->activate(context); !result) {
            last_error_ = result.error().message();
            status_ |= kStatusNeedsReset;
            if (raise_interrupt_) {
                interrupt_status_.fetch_or(kInterruptConfig);
                raise_interrupt_();
            }
            return;
        }
        activated_ = true;
    }
}

}  // namespace boxlite::devices::virtio
