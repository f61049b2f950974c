// The i8042 keyboard controller, reduced to what a micro-VM needs: Linux's `reboot=k` writes the
// CPU-reset command (0xfe) to the command port, which becomes a VM reset.
#pragma once

#include "memory/bus.hpp"

#include <functional>

namespace boxlite::devices {

class I8042 final : public vmm::BusDevice {
public:
    /// Device window: two ports apart (0x60 data, 0x64 command): offset 0 and offset 4.
    explicit I8042(std::function<void()> reset) : reset_(std::move(reset)) {}

    void read(std::uint64_t offset, std::span<std::byte> data) override {
        (void)offset;
        for (auto& byte : data) byte = std::byte{0};  // status 0: no data, input buffer empty
    }
    void write(std::uint64_t offset, std::span<const std::byte> data) override {
        constexpr std::uint64_t kCommandOffset = 4;
        constexpr std::uint8_t kCpuReset = 0xfe;
        if (offset == kCommandOffset && !data.empty() && std::to_integer<std::uint8_t>(data[0]) == kCpuReset && reset_)
            reset_();
    }

private:
    std::function<void()> reset_;
};

/// The ACPI hardware-reduced sleep control/status registers (FADT SLEEP_CONTROL_REG and
/// SLEEP_STATUS_REG). Writing SLP_EN (bit 5) with SLP_TYP 5 (the \_S5 value in our DSDT) powers off.
class AcpiSleepControl final : public vmm::BusDevice {
public:
    static constexpr std::uint8_t kSleepTypeS5 = 5;
    explicit AcpiSleepControl(std::function<void()> power_off) : power_off_(std::move(power_off)) {}

    void read(std::uint64_t, std::span<std::byte> data) override {
        for (auto& byte : data) byte = std::byte{0};
    }
    void write(std::uint64_t offset, std::span<const std::byte> data) override {
        if (offset != 0 || data.empty()) return;
        const auto value = std::to_integer<std::uint8_t>(data[0]);
        const bool sleep_enable = value & 0x20;
        const std::uint8_t sleep_type = (value >> 2) & 0x7;
        if (sleep_enable && sleep_type == kSleepTypeS5 && power_off_) power_off_();
    }

private:
    std::function<void()> power_off_;
};

}  // namespace boxlite::devices
