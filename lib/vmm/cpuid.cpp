#include "vmm/cpuid.hpp"

#include <algorithm>
#include <cstring>

namespace boxlite::vmm {
namespace {

constexpr std::uint32_t bit(unsigned n) { return 1u << n; }

// Leaf 1 (Intel SDM vol. 2A, CPUID; AMD APM vol. 3, appendix E).
constexpr std::uint32_t kLeaf1EcxDtes64 = bit(2), kLeaf1EcxMonitor = bit(3), kLeaf1EcxDsCpl = bit(4),
                        kLeaf1EcxVmx = bit(5), kLeaf1EcxSmx = bit(6), kLeaf1EcxEist = bit(7), kLeaf1EcxTm2 = bit(8),
                        kLeaf1EcxCx16 = bit(13), kLeaf1EcxPdcm = bit(15), kLeaf1EcxX2apic = bit(21),
                        kLeaf1EcxTscDeadline = bit(24), kLeaf1EcxHypervisor = bit(31);
constexpr std::uint32_t kLeaf1EdxApic = bit(9), kLeaf1EdxDs = bit(21), kLeaf1EdxAcpi = bit(22), kLeaf1EdxHtt = bit(28),
                        kLeaf1EdxTm = bit(29), kLeaf1EdxPbe = bit(31);
constexpr std::uint32_t kLeaf6EaxArat = bit(2);
constexpr std::uint32_t kLeaf7EbxIntelPt = bit(25);
constexpr std::uint32_t kLeaf7EcxWaitpkg = bit(5);
// AMD extended leaves.
constexpr std::uint32_t kExt1EcxCmpLegacy = bit(1), kExt1EcxSvm = bit(2), kExt1EcxPerfCtrCore = bit(23),
                        kExt1EcxPerfCtrNb = bit(24), kExt1EcxPerfCtrLlc = bit(28), kExt1EcxMonitorx = bit(29);
// x2APIC topology level types (leaves 0xB / 0x1F, ECX[15:8]).
constexpr std::uint32_t kLevelInvalid = 0, kLevelSmt = 1, kLevelCore = 2;

/// Bits of APIC id needed to number `count` things (ceil(log2)).
std::uint32_t id_bits(std::uint32_t count) {
    std::uint32_t bits = 0;
    while ((1u << bits) < count) ++bits;
    return bits;
}

std::uint32_t cache_level(std::uint32_t eax) { return (eax >> 5) & 0x7; }
std::uint32_t cache_type(std::uint32_t eax) { return eax & 0x1f; }

/// Leaves 4 and 0x8000001D: EAX[25:14] = logical processors sharing the cache - 1. With one
/// thread per core, L1 and L2 are private and L3 is shared by the whole package.
std::uint32_t with_cache_sharing(std::uint32_t eax, std::uint32_t vcpus) {
    const std::uint32_t sharing = cache_level(eax) >= 3 ? vcpus - 1 : 0;
    return (eax & ~(0xfffu << 14)) | ((sharing & 0xfff) << 14);
}

kvm_cpuid_entry2 topology_entry(std::uint32_t function, std::uint32_t index, std::uint32_t id, std::uint32_t vcpus) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e.edx = id;        // x2APIC id, at every level
    if (index == 0) {  // SMT: one thread per core, so no id bits below the core
        e.eax = 0;
        e.ebx = 1;
        e.ecx = (kLevelSmt << 8) | index;
    } else if (index == 1) {  // core: every vCPU of the package
        e.eax = id_bits(vcpus);
        e.ebx = vcpus;
        e.ecx = (kLevelCore << 8) | index;
    } else {
        e.ecx = (kLevelInvalid << 8) | index;
    }
    return e;
}

}  // namespace

CpuVendor cpuid_vendor(const CpuidTable& table) {
    const auto* leaf0 = find_cpuid(table, 0);
    if (!leaf0) return CpuVendor::Other;
    char vendor[12];
    std::memcpy(vendor, &leaf0->ebx, 4);
    std::memcpy(vendor + 4, &leaf0->edx, 4);
    std::memcpy(vendor + 8, &leaf0->ecx, 4);
    const std::string_view name(vendor, 12);
    if (name == "GenuineIntel") return CpuVendor::Intel;
    if (name == "AuthenticAMD" || name == "HygonGenuine") return CpuVendor::Amd;
    return CpuVendor::Other;
}

const kvm_cpuid_entry2* find_cpuid(const CpuidTable& table, std::uint32_t function, std::uint32_t index) {
    for (const auto& e : table.entries)
        if (e.function == function && (e.index == index || !(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX))) return &e;
    return nullptr;
}

CpuidTable guest_cpuid(const CpuidTable& supported, std::uint32_t vcpu_id, const CpuidOptions& options) {
    const std::uint32_t vcpus = std::max<std::uint32_t>(options.vcpu_count, 1);
    const CpuVendor vendor = cpuid_vendor(supported);
    CpuidTable table;
    bool has_leaf_b = false, has_leaf_1f = false;
    for (kvm_cpuid_entry2 e : supported.entries) {
        switch (e.function) {
            case 0x1: {
                e.ebx = (e.ebx & 0x0000ffffu) | (vcpu_id << 24) | ((vcpus & 0xff) << 16);
                if (vcpus > 1) e.edx |= kLeaf1EdxHtt;
                else e.edx &= ~kLeaf1EdxHtt;
                e.ecx |= kLeaf1EcxHypervisor;
                e.ecx &= ~(kLeaf1EcxDtes64 | kLeaf1EcxMonitor | kLeaf1EcxDsCpl | kLeaf1EcxVmx | kLeaf1EcxSmx |
                           kLeaf1EcxEist | kLeaf1EcxTm2 | kLeaf1EcxPdcm);
                e.edx &= ~(kLeaf1EdxDs | kLeaf1EdxAcpi | kLeaf1EdxTm | kLeaf1EdxPbe);
                // The LAPIC, its x2APIC mode and the TSC-deadline timer live in the in-kernel irqchip.
                if (!options.irqchip) {
                    e.ecx &= ~(kLeaf1EcxX2apic | kLeaf1EcxTscDeadline);
                    e.edx &= ~kLeaf1EdxApic;
                }
                if (options.hide_cmpxchg16b) e.ecx &= ~kLeaf1EcxCx16;
                break;
            }
            case 0x4:
                if (vendor == CpuVendor::Intel && cache_type(e.eax) != 0) {
                    e.eax = with_cache_sharing(e.eax, vcpus);
                    e.eax = (e.eax & 0x03ffffffu) | ((std::min<std::uint32_t>(vcpus, 64) - 1) << 26);
                }
                break;
            case 0x5:  // MONITOR/MWAIT parameters: no MONITOR/MWAIT
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            case 0x6:
                e.eax &= kLeaf6EaxArat;
                e.ebx = e.ecx = e.edx = 0;
                break;
            case 0x7:
                if (e.index == 0) {
                    e.ebx &= ~kLeaf7EbxIntelPt;
                    e.ecx &= ~kLeaf7EcxWaitpkg;
                }
                break;
            case 0xa:  // architectural PMU: none
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            case 0xb: has_leaf_b = true; continue;  // rebuilt below, every subleaf
            case 0x1f: has_leaf_1f = true; continue;
            case 0x14:  // Intel PT
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            case 0x80000001:
                e.ecx &= ~(kExt1EcxSvm | kExt1EcxPerfCtrCore | kExt1EcxPerfCtrNb | kExt1EcxPerfCtrLlc |
                           kExt1EcxMonitorx);
                if (vendor == CpuVendor::Amd) {
                    if (vcpus > 1) e.ecx |= kExt1EcxCmpLegacy;
                    else e.ecx &= ~kExt1EcxCmpLegacy;
                }
                break;
            case 0x80000008:
                if (vendor == CpuVendor::Amd) {
                    // NC = cores - 1, ApicIdCoreIdSize = id bits per package.
                    e.ecx = (id_bits(vcpus) << 12) | ((vcpus - 1) & 0xff);
                }
                break;
            case 0x8000001d:
                if (vendor == CpuVendor::Amd && cache_type(e.eax) != 0) e.eax = with_cache_sharing(e.eax, vcpus);
                break;
            case 0x8000001e:
                if (vendor == CpuVendor::Amd) {
                    e.eax = vcpu_id;         // extended APIC id
                    e.ebx = vcpu_id & 0xff;  // core id; threads per core - 1 = 0
                    e.ecx = 0;               // node 0, one node per package
                    e.edx = 0;
                }
                break;
            case 0x80000022:  // AMD PerfMonV2
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            default: break;
        }
        table.entries.push_back(e);
    }
    for (std::uint32_t index = 0; index < 3; ++index) {
        if (has_leaf_b) table.entries.push_back(topology_entry(0xb, index, vcpu_id, vcpus));
        if (has_leaf_1f) table.entries.push_back(topology_entry(0x1f, index, vcpu_id, vcpus));
    }
    return table;
}

}  // namespace boxlite::vmm
