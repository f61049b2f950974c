// Machine: one KVM virtual machine — guest RAM, the in-kernel irqchip and PIT, vCPUs, and the
// port-I/O and MMIO buses — and the run loop that dispatches vCPU exits to devices.
//
// SMP: run() starts one thread per vCPU and returns when the guest powers off or resets, the
// host asks it to stop (request_stop, from any thread), or a vCPU fails. A stop interrupts vCPUs
// blocked in KVM_RUN with a signal (kvm_run.immediate_exit closes the race with entering it).
#pragma once

#include "memory/bus.hpp"
#include "vmm/kvm.hpp"
#include "memory/guest_memory.hpp"

#include <boxlite/error.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace boxlite::vmm {

/// Architectural MSRs (Intel SDM vol. 4) the VMM sets on every vCPU.
namespace msr {
inline constexpr std::uint32_t kTsc = 0x10;
inline constexpr std::uint32_t kSysenterCs = 0x174, kSysenterEsp = 0x175, kSysenterEip = 0x176;
inline constexpr std::uint32_t kMiscEnable = 0x1a0;
inline constexpr std::uint64_t kMiscEnableFastStrings = 1;
inline constexpr std::uint32_t kMtrrDefType = 0x2ff;
inline constexpr std::uint64_t kMtrrDefTypeEnable = 1ULL << 11, kMtrrTypeWriteBack = 6;
inline constexpr std::uint32_t kStar = 0xc0000081, kLstar = 0xc0000082, kCstar = 0xc0000083, kSyscallMask = 0xc0000084,
                               kKernelGsBase = 0xc0000102;
}  // namespace msr

/// The (index, value) pairs Machine::create sets on each vCPU.
std::vector<std::pair<std::uint32_t, std::uint64_t>> architectural_msrs();

struct MachineConfig {
    std::uint32_t vcpus = 1;
    std::uint64_t memory_bytes = 64ULL << 20;
    /// In-kernel LAPIC/IOAPIC/PIC and PIT. Without them a guest HLT exits to us (tests use that).
    bool irqchip = true;
    /// Clear CPUID.1:ECX.CX16 (needed under kvm_pvm; see cpuid.hpp for everything else filtered).
    bool hide_cmpxchg16b = false;
};

enum class StopReason : std::uint8_t {
    PowerOff,  ///< the guest powered off (ACPI sleep control), or a HLT without an irqchip
    Reset,     ///< the guest reset (i8042, triple fault / shutdown exit, KVM system event)
    HostStop,  ///< request_stop() from the host
    Error,     ///< a vCPU failed (emulation error, failed entry, unknown exit)
};

constexpr std::string_view to_string(StopReason reason) noexcept {
    switch (reason) {
        case StopReason::PowerOff: return "power-off";
        case StopReason::Reset: return "reset";
        case StopReason::HostStop: return "host stop";
        case StopReason::Error: return "error";
    }
    return "error";
}

struct RunOutcome {
    StopReason reason = StopReason::Error;
    std::string detail;  ///< what happened, for logs and errors
};

/// Per-run exit counters (summed over vCPUs when run() returns).
struct ExitStats {
    std::uint64_t total = 0;
    std::uint64_t pio = 0;
    std::uint64_t mmio = 0;
    std::uint64_t unhandled = 0;  ///< accesses no device claimed
};

class Machine {
public:
    static BoxliteResult<std::unique_ptr<Machine>> create(const MachineConfig& config);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    [[nodiscard]] const MachineConfig& config() const noexcept { return config_; }
    [[nodiscard]] GuestMemory& memory() noexcept { return memory_; }
    [[nodiscard]] Vm& vm() noexcept { return vm_; }
    [[nodiscard]] Vcpu& vcpu(std::size_t index) noexcept { return *vcpus_[index]; }
    [[nodiscard]] std::size_t vcpu_count() const noexcept { return vcpus_.size(); }
    [[nodiscard]] Bus& pio_bus() noexcept { return pio_; }
    [[nodiscard]] Bus& mmio_bus() noexcept { return mmio_; }
    [[nodiscard]] const Kvm& kvm() const noexcept { return kvm_; }

    /// Puts a vCPU in 32-bit flat protected mode (no paging) at `entry` — the tiny test guests.
    BoxliteResult<void> setup_flat32(std::size_t vcpu_index, std::uint64_t entry);

    /// Runs every vCPU until the machine stops; returns why. Fails only if it could not start.
    BoxliteResult<RunOutcome> run();
    /// Thread-safe and idempotent: the first reason wins.
    void request_stop(StopReason reason, std::string detail = {});
    [[nodiscard]] ExitStats stats() const noexcept { return stats_; }

private:
    Machine(MachineConfig config, Kvm kvm, Vm vm, GuestMemory memory);
    void vcpu_loop(std::size_t index);

    MachineConfig config_;
    Kvm kvm_;
    Vm vm_;
    GuestMemory memory_;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    Bus pio_{"port I/O"};
    Bus mmio_{"MMIO"};

    std::atomic<bool> stopping_{false};
    std::mutex stop_mutex_;
    RunOutcome outcome_;
    std::vector<unsigned long> threads_;  // pthread_t of running vCPU threads, to kick them
    std::atomic<bool> running_{false};
    ExitStats stats_;
};

}  // namespace boxlite::vmm
