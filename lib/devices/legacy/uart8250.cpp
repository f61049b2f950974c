#include "devices/legacy/uart8250.hpp"

namespace boxlite::devices {
namespace {
// Register offsets and bits (National Semiconductor PC16550D datasheet).
constexpr std::uint64_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr std::uint8_t kIerRxAvailable = 0x01, kIerThrEmpty = 0x02;
constexpr std::uint8_t kIirNone = 0x01, kIirThrEmpty = 0x02, kIirRxAvailable = 0x04, kIirFifoBits = 0xc0;
constexpr std::uint8_t kLcrDlab = 0x80;
constexpr std::uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr std::uint8_t kLsrDataReady = 0x01, kLsrThrEmpty = 0x20, kLsrIdle = 0x40;
constexpr std::uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
}  // namespace

void Uart8250::read(std::uint64_t offset, std::span<std::byte> data) {
    if (data.empty()) return;
    std::lock_guard lock(mutex_);
    data[0] = std::byte{read_register(offset)};
    for (std::size_t i = 1; i < data.size(); ++i) data[i] = std::byte{0};
}

void Uart8250::write(std::uint64_t offset, std::span<const std::byte> data) {
    if (data.empty()) return;
    std::unique_lock lock(mutex_);
    write_register(offset, std::to_integer<std::uint8_t>(data[0]));
}

void Uart8250::enqueue_input(std::span<const std::byte> bytes) {
    std::lock_guard lock(mutex_);
    for (auto byte : bytes) {
        if (rx_.size() >= kRxLimit) break;
        rx_.push_back(std::to_integer<std::uint8_t>(byte));
    }
    update_interrupt();
}

std::uint8_t Uart8250::interrupt_identification() const {
    if ((ier_ & kIerRxAvailable) && !rx_.empty()) return kIirRxAvailable;
    if ((ier_ & kIerThrEmpty) && thr_empty_pending_) return kIirThrEmpty;
    return kIirNone;
}

void Uart8250::update_interrupt() {
    if (interrupt_identification() != kIirNone && interrupt_) interrupt_();
}

std::uint8_t Uart8250::read_register(std::uint64_t offset) {
    switch (offset) {
        case kData: {
            if (lcr_ & kLcrDlab) return dll_;
            if (rx_.empty()) return 0;
            std::uint8_t byte = rx_.front();
            rx_.pop_front();
            return byte;
        }
        case kIer: return (lcr_ & kLcrDlab) ? dlm_ : ier_;
        case kIir: {
            std::uint8_t id = interrupt_identification();
            if (id == kIirThrEmpty) thr_empty_pending_ = false;  // reading IIR acknowledges THRE
            return static_cast<std::uint8_t>(id | ((fcr_ & 1) ? kIirFifoBits : 0));
        }
        case kLcr: return lcr_;
        case kMcr: return mcr_;
        case kLsr: return static_cast<std::uint8_t>(kLsrThrEmpty | kLsrIdle | (rx_.empty() ? 0 : kLsrDataReady));
        case kMsr:
            if (mcr_ & kMcrLoop) {
                // Loopback: the modem outputs come back as inputs (the driver's probe checks this).
                std::uint8_t msr = 0;
                if (mcr_ & kMcrRts) msr |= kMsrCts;
                if (mcr_ & kMcrDtr) msr |= kMsrDsr;
                if (mcr_ & kMcrOut1) msr |= kMsrRi;
                if (mcr_ & kMcrOut2) msr |= kMsrDcd;
                return msr;
            }
            return kMsrDcd | kMsrDsr | kMsrCts;
        case kScr: return scr_;
        default: return 0;
    }
}

void Uart8250::write_register(std::uint64_t offset, std::uint8_t value) {
    switch (offset) {
        case kData:
            if (lcr_ & kLcrDlab) {
                dll_ = value;
                return;
            }
            if (mcr_ & kMcrLoop) {
                if (rx_.size() < kRxLimit) rx_.push_back(value);
            } else if (sink_) {
                const std::byte byte{value};
                sink_(std::span<const std::byte>(&byte, 1));
            }
            thr_empty_pending_ = true;  // the byte left at once: the holding register is empty again
            update_interrupt();
            return;
        case kIer:
            if (lcr_ & kLcrDlab) {
                dlm_ = value;
                return;
            }
            if ((value & kIerThrEmpty) && !(ier_ & kIerThrEmpty)) thr_empty_pending_ = true;
            ier_ = value & 0x0f;
            update_interrupt();
            return;
        case kIir: fcr_ = value; return;
        case kLcr: lcr_ = value; return;
        case kMcr: mcr_ = value & 0x1f; return;
        case kScr: scr_ = value; return;
        default: return;  // LSR/MSR are read-only
    }
}

}  // namespace boxlite::devices
