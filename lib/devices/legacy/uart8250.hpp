// A 16550A-compatible UART (what Linux's 8250 driver probes for): transmit goes to a sink (the
// box's console.log), receive comes from enqueue_input(). Enough of the modem/loopback logic is
// modelled for the driver's autoconfig and interrupt-driven transmit to work.
#pragma once

#include "memory/bus.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

namespace boxlite::devices {

class Uart8250 final : public vmm::BusDevice {
public:
    using Sink = std::function<void(std::span<const std::byte>)>;
    using Interrupt = std::function<void()>;

    Uart8250(Sink sink, Interrupt interrupt) : sink_(std::move(sink)), interrupt_(std::move(interrupt)) {}

    void read(std::uint64_t offset, std::span<std::byte> data) override;
    void write(std::uint64_t offset, std::span<const std::byte> data) override;

    /// Bytes typed at the console; raises the receive interrupt if the guest enabled it.
    void enqueue_input(std::span<const std::byte> bytes);

private:
    std::uint8_t read_register(std::uint64_t offset);
    void write_register(std::uint64_t offset, std::uint8_t value);
    std::uint8_t interrupt_identification() const;
    void update_interrupt();

    static constexpr std::size_t kRxLimit = 64 * 1024;  // drop input beyond this, like a full FIFO

    std::mutex mutex_;
    Sink sink_;
    Interrupt interrupt_;
    std::deque<std::uint8_t> rx_;
    std::uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = 0x08, scr_ = 0, dll_ = 0x0c, dlm_ = 0, fcr_ = 0;
    bool thr_empty_pending_ = false;
};

}  // namespace boxlite::devices
