// The guest's CPUID: the filter over synthetic KVM tables (both vendors, no KVM needed), then what
// KVM_GET_CPUID2 reads back from every vCPU of a real 4-vCPU machine, and the MSRs each vCPU got.
#include "guest_helpers.hpp"

#include "vmm/cpuid.hpp"

namespace boxlite::vmm {
namespace {

kvm_cpuid_entry2 entry(std::uint32_t function, std::uint32_t index, std::uint32_t eax, std::uint32_t ebx,
                       std::uint32_t ecx, std::uint32_t edx, bool indexed = false) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = ecx;
    e.edx = edx;
    return e;
}

// Vendor strings as leaf 0 spells them: EBX, EDX, ECX.
kvm_cpuid_entry2 vendor_leaf(const char (&name)[13]) {
    std::uint32_t words[3];
    std::memcpy(words, name, 12);
    return entry(0, 0, 0x1f, words[0], words[2], words[1]);
}

/// What an Intel host's KVM might report: the host's own topology, PMU, MWAIT, VMX.
CpuidTable intel_host() {
    CpuidTable t;
    t.entries = {vendor_leaf("GenuineIntel"),
                 entry(1, 0, 0x906ea, 0x10800 | (7u << 24), 0x7ffafbbf | (1u << 3) | (1u << 5), 0xbfebfbff),
                 entry(4, 0, 0x1c004121, 0x1c0003f, 0x3f, 0, true),  // L1d, shared by 2 threads, 8 cores
                 entry(4, 1, 0x1c004122, 0x1c0003f, 0x3f, 0, true),
                 entry(4, 2, 0x1c004143, 0x3c0003f, 0x3ff, 0, true),   // L2
                 entry(4, 3, 0x1c03c163, 0x3c0003f, 0x2fff, 6, true),  // L3, shared by 16
                 entry(4, 4, 0, 0, 0, 0, true),
                 entry(5, 0, 0x40, 0x40, 3, 0x11142120),
                 entry(6, 0, 0x27f7, 2, 9, 0),
                 entry(7, 0, 0, 0x029c6fbf | (1u << 25), 0x40000000 | (1u << 5), 0xbc000400, true),
                 entry(0xa, 0, 0x07300404, 0, 0, 0x603),
                 entry(0xb, 0, 1, 2, 0x100, 7, true),
                 entry(0x80000001, 0, 0, 0, 0x121, 0x2c100800)};
    return t;
}

/// An AMD host (like this project's CI machine: TOPOEXT, CmpLegacy, host NC in 0x80000008).
CpuidTable amd_host() {
    CpuidTable t;
    t.entries = {vendor_leaf("AuthenticAMD"),
                 entry(1, 0, 0xa00f11, 0x01020800, 0x81202000 | (1u << 3), 0x078bfbff),
                 entry(0xa, 0, 0, 0, 0, 0),
                 entry(0xb, 0, 0, 0, 0, 1, true),
                 entry(0x80000001, 0, 0xa00f11, 0x40000000, 0x00400393 | (1u << 2) | (1u << 23), 0x23d3fbff),
                 entry(0x80000008, 0, 0x3030, 0x110ad205, 0x7001, 0),
                 entry(0x8000001d, 0, 0x121, 0x1c0003f, 0x3f, 0, true),
                 entry(0x8000001d, 1, 0x143, 0x1c0003f, 0x3ff, 2, true),
                 entry(0x8000001d, 2, 0x4163, 0x3c0003f, 0x7fff, 1, true),
                 entry(0x8000001e, 0, 0, 0, 0, 0),
                 entry(0x80000022, 0, 7, 0x00040506, 0, 0)};
    return t;
}

void expect_common(const CpuidTable& t, std::uint32_t id, std::uint32_t vcpus) {
    const auto* leaf1 = find_cpuid(t, 1);
    ASSERT_NE(leaf1, nullptr);
    EXPECT_EQ(leaf1->ebx >> 24, id) << "initial APIC id";
    EXPECT_EQ((leaf1->ebx >> 16) & 0xff, vcpus) << "logical processors per package";
    EXPECT_EQ((leaf1->edx >> 28) & 1, vcpus > 1 ? 1u : 0u) << "HTT";
    EXPECT_TRUE(leaf1->ecx & (1u << 31)) << "hypervisor bit";
    EXPECT_FALSE(leaf1->ecx & (1u << 3)) << "MONITOR/MWAIT";
    EXPECT_FALSE(leaf1->ecx & (1u << 5)) << "VMX";
    EXPECT_FALSE(leaf1->ecx & (1u << 15)) << "PDCM";
    EXPECT_FALSE(leaf1->edx & (1u << 21)) << "debug store";
    if (const auto* pmu = find_cpuid(t, 0xa)) {
        EXPECT_EQ(pmu->eax | pmu->ebx | pmu->ecx | pmu->edx, 0u) << "no architectural PMU";
    }
    // Leaf 0xB: SMT level (1 thread), core level (all vCPUs), then the invalid level.
    const auto* smt = find_cpuid(t, 0xb, 0);
    const auto* core = find_cpuid(t, 0xb, 1);
    const auto* end = find_cpuid(t, 0xb, 2);
    ASSERT_TRUE(smt && core && end);
    EXPECT_EQ(smt->ebx, 1u);
    EXPECT_EQ(smt->ecx, (1u << 8) | 0);
    EXPECT_EQ(smt->eax & 0x1f, 0u);
    EXPECT_EQ(core->ebx, vcpus);
    EXPECT_EQ(core->ecx, (2u << 8) | 1);
    EXPECT_GE(1u << (core->eax & 0x1f), vcpus) << "core level shift covers every APIC id";
    EXPECT_EQ(end->ebx, 0u);
    EXPECT_EQ((end->ecx >> 8) & 0xff, 0u);
    for (const auto* level : {smt, core, end}) {
        EXPECT_EQ(level->edx, id) << "x2APIC id at every level";
        EXPECT_TRUE(level->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    }
}

TEST(Cpuid, IntelTopologyAndMasks) {
    const auto host = intel_host();
    EXPECT_EQ(cpuid_vendor(host), CpuVendor::Intel);
    for (std::uint32_t id : {0u, 2u}) {
        const auto t = guest_cpuid(host, id, {.vcpu_count = 3});
        expect_common(t, id, 3);
        for (std::uint32_t level = 0; level < 4; ++level) {
            const auto* cache = find_cpuid(t, 4, level);
            ASSERT_NE(cache, nullptr);
            EXPECT_EQ(cache->eax >> 26, 2u) << "cores per package - 1";
            const std::uint32_t sharing = (cache->eax >> 14) & 0xfff;
            EXPECT_EQ(sharing, ((cache->eax >> 5) & 7) == 3 ? 2u : 0u) << "L3 shared by all, L1/L2 private";
            EXPECT_EQ(cache->eax & 0x3fff, find_cpuid(host, 4, level)->eax & 0x3fff) << "cache type/level kept";
        }
        EXPECT_EQ(find_cpuid(t, 4, 4)->eax, 0u) << "the terminating subleaf stays empty";
        EXPECT_EQ(find_cpuid(t, 5)->eax, 0u) << "no MONITOR/MWAIT leaf";
        EXPECT_EQ(find_cpuid(t, 6)->eax, 4u) << "only ARAT of the power leaf";
        EXPECT_FALSE(find_cpuid(t, 7)->ebx & (1u << 25)) << "Intel PT";
        EXPECT_FALSE(find_cpuid(t, 7)->ecx & (1u << 5)) << "WAITPKG";
        EXPECT_EQ(find_cpuid(t, 7)->edx, find_cpuid(host, 7)->edx) << "the rest of leaf 7 is KVM's";
    }
}

TEST(Cpuid, AmdTopologyAndMasks) {
    const auto host = amd_host();
    EXPECT_EQ(cpuid_vendor(host), CpuVendor::Amd);
    const auto t = guest_cpuid(host, 3, {.vcpu_count = 4});
    expect_common(t, 3, 4);
    const auto* ext1 = find_cpuid(t, 0x80000001);
    EXPECT_TRUE(ext1->ecx & (1u << 1)) << "CmpLegacy with more than one core";
    EXPECT_FALSE(ext1->ecx & (1u << 2)) << "SVM";
    EXPECT_FALSE(ext1->ecx & (1u << 23)) << "PerfCtrExtCore";
    EXPECT_TRUE(ext1->ecx & (1u << 22)) << "TOPOEXT kept: 0x8000001E says the truth now";
    const auto* size = find_cpuid(t, 0x80000008);
    EXPECT_EQ(size->ecx & 0xff, 3u) << "NC = cores - 1";
    EXPECT_EQ((size->ecx >> 12) & 0xf, 2u) << "ApicIdCoreIdSize";
    EXPECT_EQ(size->eax, 0x3030u) << "address sizes kept";
    EXPECT_EQ((find_cpuid(t, 0x8000001d, 0)->eax >> 14) & 0xfff, 0u);
    EXPECT_EQ((find_cpuid(t, 0x8000001d, 2)->eax >> 14) & 0xfff, 3u) << "L3 shared by the 4 cores";
    const auto* ids = find_cpuid(t, 0x8000001e);
    EXPECT_EQ(ids->eax, 3u) << "extended APIC id";
    EXPECT_EQ(ids->ebx & 0xff, 3u) << "core id";
    EXPECT_EQ((ids->ebx >> 8) & 0xff, 0u) << "one thread per core";
    const auto* perfmon = find_cpuid(t, 0x80000022);
    EXPECT_EQ(perfmon->eax | perfmon->ebx, 0u) << "PerfMonV2";

    const auto single = guest_cpuid(host, 0, {.vcpu_count = 1});
    EXPECT_FALSE(find_cpuid(single, 0x80000001)->ecx & (1u << 1)) << "no CmpLegacy for one core";
    EXPECT_FALSE(find_cpuid(single, 1)->edx & (1u << 28)) << "no HTT for one vCPU";
}

TEST(Cpuid, WithoutTheInKernelIrqchipTheApicFeaturesGo) {
    const auto t = guest_cpuid(amd_host(), 0, {.vcpu_count = 1, .irqchip = false, .hide_cmpxchg16b = true});
    const auto* leaf1 = find_cpuid(t, 1);
    EXPECT_FALSE(leaf1->ecx & (1u << 24)) << "TSC deadline";
    EXPECT_FALSE(leaf1->ecx & (1u << 21)) << "x2APIC";
    EXPECT_FALSE(leaf1->edx & (1u << 9)) << "APIC";
    EXPECT_FALSE(leaf1->ecx & (1u << 13)) << "CX16 hidden on request";
    const auto with = guest_cpuid(amd_host(), 0, {.vcpu_count = 1});
    EXPECT_TRUE(find_cpuid(with, 1)->ecx & (1u << 24)) << "TSC deadline stays with the in-kernel LAPIC";
    EXPECT_TRUE(find_cpuid(with, 1)->ecx & (1u << 13));
}

TEST(Cpuid, EveryVcpuOfARealMachineReadsBackItsOwnTopologyAndMsrs) {
    if (auto reason = testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    MachineConfig config;
    config.vcpus = 4;
    config.memory_bytes = 4ULL << 20;
    auto machine = Machine::create(config);
    ASSERT_TRUE(machine) << machine.error().to_string();
    for (std::uint32_t id = 0; id < 4; ++id) {
        SCOPED_TRACE(fmt::format("vCPU {}", id));
        auto table = (*machine)->vcpu(id).get_cpuid();
        ASSERT_TRUE(table) << table.error().to_string();
        expect_common(*table, id, 4);
        if (cpuid_vendor(*table) == CpuVendor::Amd) {
            if (const auto* ids = find_cpuid(*table, 0x8000001e)) {
                EXPECT_EQ(ids->eax, id);
            }
            if (const auto* size = find_cpuid(*table, 0x80000008)) {
                EXPECT_EQ(size->ecx & 0xff, 3u);
            }
        } else if (const auto* cache = find_cpuid(*table, 4, 0); cache && (cache->eax & 0x1f)) {
            EXPECT_EQ(cache->eax >> 26, 3u);
        }
        auto msrs = (*machine)->vcpu(id).get_msrs({msr::kMiscEnable, msr::kMtrrDefType, msr::kSysenterCs});
        ASSERT_TRUE(msrs) << msrs.error().to_string();
        ASSERT_EQ(msrs->size(), 3u);
        EXPECT_TRUE((*msrs)[0].second & msr::kMiscEnableFastStrings) << "fast strings on every vCPU";
        EXPECT_EQ((*msrs)[1].second, msr::kMtrrDefTypeEnable | msr::kMtrrTypeWriteBack) << "MTRRs: WB default";
        EXPECT_EQ((*msrs)[2].second, 0u);
    }
}

}  // namespace
}  // namespace boxlite::vmm
