// The CPUID a vCPU sees: KVM_GET_SUPPORTED_CPUID, told which vCPU it is and how the vCPUs are
// arranged, with what we do not give the guest masked out.
//
// Topology: every vCPU is one core of a single package, one thread per core (no SMT). That is
// written where each vendor's Linux looks for it — leaf 1 (APIC id, logical count + HTT), leaf 4
// (Intel: cores, cache sharing), leaves 0xB/0x1F (x2APIC levels: SMT, core), and on AMD 0x8000_0001
// (CmpLegacy), 0x8000_0008 (NC, ApicIdSize), 0x8000_001D (cache sharing), 0x8000_001E (APIC/core
// ids, with TOPOEXT). What KVM reports there is the host's topology, wrong for any guest.
//
// Masked (a guest must not use what we do not back): PMU (leaf 0xA, AMD PerfCtrExt*, PerfMonV2,
// PDCM, DS/PEBS), MONITOR/MWAIT/MWAITX/WAITPKG (leaf 5 too), VMX/SVM/SMX (no nested guests),
// power and thermal management (leaf 6 except ARAT, EIST, TM, ACPI), Intel PT, and — without the
// in-kernel irqchip — the APIC, x2APIC and the TSC-deadline timer, which only it implements.
// Pure functions: testable without /dev/kvm.
#pragma once

#include "vmm/kvm.hpp"

#include <cstdint>

namespace boxlite::vmm {

struct CpuidOptions {
    std::uint32_t vcpu_count = 1;
    /// The in-kernel LAPIC exists (MachineConfig::irqchip).
    bool irqchip = true;
    /// Clear CPUID.1:ECX.CX16 (kvm_pvm cannot emulate CMPXCHG16B).
    bool hide_cmpxchg16b = false;
};

enum class CpuVendor : std::uint8_t { Intel, Amd, Other };

/// From leaf 0's vendor string (Hygon counts as AMD: same topology leaves).
CpuVendor cpuid_vendor(const CpuidTable& table);

/// The table for vCPU `vcpu_id` (also its APIC id) out of `supported`.
CpuidTable guest_cpuid(const CpuidTable& supported, std::uint32_t vcpu_id, const CpuidOptions& options);

/// The entry for (function, index), or nullptr.
const kvm_cpuid_entry2* find_cpuid(const CpuidTable& table, std::uint32_t function, std::uint32_t index = 0);

}  // namespace boxlite::vmm
