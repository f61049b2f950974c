// The 64-bit Linux boot set-up, checked by reading back guest memory and vCPU registers
// (KVM here cannot run a 64-bit guest, so the set-up is verified, not executed).
#include "guest_helpers.hpp"

#include "vmm/acpi.hpp"
#include "vmm/boot.hpp"

#include <elf.h>

namespace boxlite::vmm {
namespace {

constexpr std::uint64_t kKernelLoad = 0x1000000;

template <class T>
void put(std::vector<std::byte>& bytes, std::size_t at, T value) {
    if (bytes.size() < at + sizeof(T)) bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &value, sizeof(T));
}

/// A minimal vmlinux: one PT_LOAD of `code` at 16 MiB (+ bss), optionally a Xen PVH note.
std::vector<std::byte> make_vmlinux(bool pvh_note, std::uint64_t pvh_entry = kKernelLoad + 0x40) {
    std::vector<std::byte> elf(0x1000);
    Elf64_Ehdr ehdr{};
    std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
    ehdr.e_ident[EI_CLASS] = ELFCLASS64;
    ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
    ehdr.e_ident[EI_VERSION] = EV_CURRENT;
    ehdr.e_type = ET_EXEC;
    ehdr.e_machine = EM_X86_64;
    ehdr.e_entry = kKernelLoad;
    ehdr.e_phoff = sizeof(Elf64_Ehdr);
    ehdr.e_phentsize = sizeof(Elf64_Phdr);
    ehdr.e_phnum = pvh_note ? 2 : 1;
    put(elf, 0, ehdr);
    Elf64_Phdr load{};
    load.p_type = PT_LOAD;
    load.p_offset = 0x800;
    load.p_paddr = kKernelLoad;
    load.p_vaddr = 0xffffffff81000000ULL;
    load.p_filesz = 0x100;
    load.p_memsz = 0x2000;
    put(elf, sizeof(Elf64_Ehdr), load);
    for (int i = 0; i < 0x100; ++i) elf[0x800 + i] = std::byte(i);
    if (pvh_note) {
        Elf64_Phdr note{};
        note.p_type = PT_NOTE;
        note.p_offset = 0x400;
        note.p_filesz = sizeof(Elf64_Nhdr) + 4 + 4;
        put(elf, sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr), note);
        Elf64_Nhdr nhdr{4, 4, 18};
        put(elf, 0x400, nhdr);
        std::memcpy(elf.data() + 0x400 + sizeof(nhdr), "Xen", 4);
        put<std::uint32_t>(elf, 0x400 + sizeof(nhdr) + 4, static_cast<std::uint32_t>(pvh_entry));
    }
    return elf;
}

/// A minimal bzImage: setup header (boot protocol 2.15, XLF_KERNEL_64), 4 setup sectors, payload.
std::vector<std::byte> make_bzimage() {
    std::vector<std::byte> image(5 * 512 + 0x400);
    put<std::uint8_t>(image, 0x1f1, 4);            // setup_sects
    put<std::uint16_t>(image, 0x1fe, 0xaa55);      // boot_flag
    put<std::uint8_t>(image, 0x201, 0x66);         // jump: header is 0x66 bytes past 0x202
    put<std::uint32_t>(image, 0x202, 0x53726448);  // "HdrS"
    put<std::uint16_t>(image, 0x206, 0x020f);
    put<std::uint8_t>(image, 0x211, 0x01);          // LOADED_HIGH
    put<std::uint32_t>(image, 0x22c, 0x7fffffff);   // initrd_addr_max
    put<std::uint32_t>(image, 0x230, 0x200000);     // kernel_alignment
    put<std::uint16_t>(image, 0x236, 0x1);          // XLF_KERNEL_64
    put<std::uint32_t>(image, 0x238, 2048);         // cmdline_size
    put<std::uint64_t>(image, 0x258, kKernelLoad);  // pref_address
    put<std::uint32_t>(image, 0x260, 0x10000);      // init_size
    for (int i = 0; i < 0x400; ++i) image[5 * 512 + i] = std::byte(0x90);
    return image;
}

struct BootFixture : ::testing::Test {
    GuestMemory memory = std::move(*GuestMemory::create(256ULL << 20, layout::kMmioGapStart, layout::kHighRamStart));
    std::vector<std::byte> initrd = std::vector<std::byte>(12345, std::byte{0x42});
};

TEST_F(BootFixture, VmlinuxWithPvhNoteBootsThroughPvhStartInfo) {
    auto kernel = make_vmlinux(true);
    auto info = load_linux(memory, kernel, initrd, "console=ttyS0 quiet", layout::kRsdp);
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->entry_kind, BootEntry::Pvh);
    EXPECT_EQ(info->entry, kKernelLoad + 0x40);
    EXPECT_EQ(memory.read_obj<std::uint8_t>(kKernelLoad + 0x10).value_or(0), 0x10) << "segment copied";
    EXPECT_EQ(memory.read_obj<std::uint8_t>(kKernelLoad + 0x1800).value_or(1), 0) << "bss zeroed";
    EXPECT_EQ(memory.read_obj<std::uint32_t>(layout::kPvhStartInfo).value_or(0), 0x336ec578u) << "magic";
    EXPECT_EQ(memory.read_obj<std::uint32_t>(layout::kPvhStartInfo + 12).value_or(0), 1u) << "one module";
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPvhStartInfo + 16).value_or(0), layout::kPvhModlist);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPvhStartInfo + 24).value_or(0), layout::kCmdline);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPvhStartInfo + 32).value_or(0), layout::kRsdp);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPvhModlist).value_or(0), info->initrd_address);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPvhModlist + 8).value_or(0), initrd.size());
    EXPECT_EQ(info->initrd_address % 4096, 0u);
    EXPECT_GE(info->initrd_address, info->kernel_end);
    EXPECT_EQ(memory.read_obj<std::uint8_t>(info->initrd_address).value_or(0), 0x42);
    const auto entries = memory.read_obj<std::uint32_t>(layout::kPvhStartInfo + 48).value_or(0);
    EXPECT_EQ(entries, 2u) << "low RAM and RAM from 1 MiB";
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPvhMemmap + 24).value_or(0), layout::kHighMemory);
    std::array<char, 20> cmdline{};
    memory.read_bytes(layout::kCmdline, std::as_writable_bytes(std::span(cmdline)));
    EXPECT_STREQ(cmdline.data(), "console=ttyS0 quiet");
}

TEST_F(BootFixture, VmlinuxWithoutPvhUsesThe64BitZeroPage) {
    auto kernel = make_vmlinux(false);
    auto info = load_linux(memory, kernel, {}, "root=/dev/vda", layout::kRsdp);
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->entry_kind, BootEntry::Linux64);
    EXPECT_EQ(info->entry, kKernelLoad);
    EXPECT_EQ(memory.read_obj<std::uint16_t>(layout::kZeroPage + 0x1fe).value_or(0), 0xaa55);
    EXPECT_EQ(memory.read_obj<std::uint32_t>(layout::kZeroPage + 0x202).value_or(0), 0x53726448u);
    EXPECT_EQ(memory.read_obj<std::uint32_t>(layout::kZeroPage + 0x228).value_or(0), layout::kCmdline);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kZeroPage + 0x70).value_or(0), layout::kRsdp);
    EXPECT_EQ(memory.read_obj<std::uint8_t>(layout::kZeroPage + 0x210).value_or(0), 0xff) << "type_of_loader";
}

TEST_F(BootFixture, BzImageLoadsAtItsPreferredAddressWithE820AndInitrd) {
    auto kernel = make_bzimage();
    auto info = load_linux(memory, kernel, initrd, "console=ttyS0", layout::kRsdp);
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->entry_kind, BootEntry::Linux64);
    EXPECT_EQ(info->entry, kKernelLoad + 0x200);
    EXPECT_EQ(memory.read_obj<std::uint8_t>(kKernelLoad).value_or(0), 0x90);
    const auto zp = layout::kZeroPage;
    EXPECT_EQ(memory.read_obj<std::uint16_t>(zp + 0x206).value_or(0), 0x020f) << "header copied";
    EXPECT_EQ(memory.read_obj<std::uint8_t>(zp + 0x211).value_or(0) & 0x81, 0x81) << "LOADED_HIGH|CAN_USE_HEAP";
    EXPECT_EQ(memory.read_obj<std::uint32_t>(zp + 0x218).value_or(0), info->initrd_address);
    EXPECT_EQ(memory.read_obj<std::uint32_t>(zp + 0x21c).value_or(0), initrd.size());
    EXPECT_EQ(memory.read_obj<std::uint32_t>(zp + 0x238).value_or(0), 2048u) << "cmdline_size is the kernel's, kept";
    ASSERT_EQ(memory.read_obj<std::uint8_t>(zp + 0x1e8).value_or(0), 2) << "e820 entries";
    // Entry 0: [0, EBDA) RAM; entry 1: [1 MiB, 256 MiB) RAM.
    EXPECT_EQ(memory.read_obj<std::uint64_t>(zp + 0x2d0).value_or(1), 0u);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(zp + 0x2d0 + 8).value_or(0), layout::kEbdaStart);
    EXPECT_EQ(memory.read_obj<std::uint32_t>(zp + 0x2d0 + 16).value_or(0), kE820Ram);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(zp + 0x2d0 + 20).value_or(0), layout::kHighMemory);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(zp + 0x2d0 + 28).value_or(0), (256ULL << 20) - layout::kHighMemory);
}

TEST_F(BootFixture, HostileKernelImagesAreRefused) {
    auto bad_entry = make_vmlinux(true, 0x500);
    EXPECT_FALSE(load_linux(memory, bad_entry, {}, "", 0)) << "PVH entry outside the image";
    auto truncated = make_vmlinux(false);
    truncated.resize(0x820);
    EXPECT_FALSE(load_linux(memory, truncated, {}, "", 0)) << "segment past the end of the file";
    auto low = make_vmlinux(false);
    Elf64_Phdr phdr;
    std::memcpy(&phdr, low.data() + sizeof(Elf64_Ehdr), sizeof(phdr));
    phdr.p_paddr = 0x7000;  // would overwrite the zero page
    std::memcpy(low.data() + sizeof(Elf64_Ehdr), &phdr, sizeof(phdr));
    EXPECT_FALSE(load_linux(memory, low, {}, "", 0));
    std::vector<std::byte> garbage(4096, std::byte{0x11});
    auto refused = load_linux(memory, garbage, {}, "", 0);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("neither"), std::string::npos);
    auto bz = make_bzimage();
    put<std::uint16_t>(bz, 0x236, 0);
    EXPECT_FALSE(load_linux(memory, bz, {}, "", 0)) << "no 64-bit entry";
    EXPECT_FALSE(load_linux(memory, make_bzimage(), {}, std::string(layout::kCmdlineMax, 'x'), 0));
    std::vector<std::byte> huge_initrd(250ULL << 20);
    EXPECT_FALSE(load_linux(memory, make_bzimage(), huge_initrd, "", 0)) << "initrd does not fit";
}

// cmdline_size is the kernel's field: the longest command line it takes. We read it and refuse a
// longer line rather than let the kernel cut it, and never write it.
TEST_F(BootFixture, CommandLineLongerThanTheKernelTakesIsRefused) {
    auto bz = make_bzimage();  // cmdline_size 2048
    EXPECT_TRUE(load_linux(memory, bz, {}, std::string(2048, 'x'), 0));
    EXPECT_EQ(memory.read_obj<std::uint32_t>(layout::kZeroPage + 0x238).value_or(0), 2048u);
    auto refused = load_linux(memory, bz, {}, std::string(2049, 'x'), 0);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::Config);
    EXPECT_NE(refused.error().message().find("at most 2048"), std::string::npos) << refused.error().message();
    put<std::uint32_t>(bz, 0x238, 100);
    EXPECT_TRUE(load_linux(memory, bz, {}, std::string(100, 'x'), 0));
    EXPECT_FALSE(load_linux(memory, bz, {}, std::string(101, 'x'), 0));
    // An ELF vmlinux has no setup header: x86 Linux's COMMAND_LINE_SIZE (2048 with the NUL).
    EXPECT_TRUE(load_linux(memory, make_vmlinux(true), {}, std::string(2047, 'x'), 0));
    EXPECT_FALSE(load_linux(memory, make_vmlinux(true), {}, std::string(2048, 'x'), 0));
    EXPECT_FALSE(load_linux(memory, make_vmlinux(false), {}, std::string(2048, 'x'), 0));
}

TEST(Boot, SetsUpLongModeRegistersPageTablesAndGdt) {
    if (auto reason = testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    MachineConfig config;
    config.memory_bytes = 64ULL << 20;
    auto machine = Machine::create(config);
    ASSERT_TRUE(machine) << machine.error().to_string();
    auto& memory = (*machine)->memory();
    auto kernel = make_bzimage();
    auto info = load_linux(memory, kernel, {}, "console=ttyS0", layout::kRsdp);
    ASSERT_TRUE(info) << info.error().to_string();
    auto set = setup_boot_vcpu((*machine)->vcpu(0), memory, *info);
    ASSERT_TRUE(set) << set.error().to_string();

    auto regs = (*machine)->vcpu(0).get_regs();
    ASSERT_TRUE(regs);
    EXPECT_EQ(regs->rip, kKernelLoad + 0x200);
    EXPECT_EQ(regs->rsi, layout::kZeroPage);
    EXPECT_EQ(regs->rsp, layout::kBootStack);
    auto sregs = (*machine)->vcpu(0).get_sregs();
    ASSERT_TRUE(sregs);
    EXPECT_EQ(sregs->cr3, layout::kPml4);
    EXPECT_TRUE(sregs->cr0 & (1ULL << 31)) << "paging";
    EXPECT_TRUE(sregs->cr0 & 1) << "protected mode";
    EXPECT_TRUE(sregs->cr4 & (1ULL << 5)) << "PAE";
    EXPECT_TRUE(sregs->efer & (1ULL << 8)) << "LME";
    EXPECT_TRUE(sregs->efer & (1ULL << 10)) << "LMA";
    EXPECT_EQ(sregs->cs.selector, 0x10) << "__BOOT_CS";
    EXPECT_EQ(sregs->cs.l, 1) << "64-bit code segment";
    EXPECT_EQ(sregs->ds.selector, 0x18) << "__BOOT_DS";
    EXPECT_EQ(sregs->gdt.base, layout::kBootGdt);
    EXPECT_EQ(sregs->gdt.limit, layout::kBootGdtEntries * 8 - 1);
    // The GDT in memory matches what the segment registers were loaded with.
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kBootGdt + 0x10).value_or(0), 0x00af9b000000ffffULL);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kBootGdt + 0x18).value_or(0), 0x00cf93000000ffffULL);
    // Identity map: PML4[0] → PDPT, PDPT[0] → PD, PD[i] = i × 2 MiB, present|writable|huge.
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPml4).value_or(0), layout::kPdpt | 3);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPdpt).value_or(0), layout::kPd | 3);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPd + 8 * 8).value_or(0), (8ULL << 21) | 0x83);
    EXPECT_EQ(memory.read_obj<std::uint64_t>(layout::kPd + 511 * 8).value_or(0), (511ULL << 21) | 0x83);
    auto msrs = (*machine)->vcpu(0).get_msrs({0x1a0});
    ASSERT_TRUE(msrs);
    ASSERT_EQ(msrs->size(), 1u);
    EXPECT_TRUE((*msrs)[0].second & 1) << "fast strings enabled";
}

TEST(Boot, PvhEntryStartsIn32BitProtectedModeWithStartInfoInEbx) {
    if (auto reason = testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    MachineConfig config;
    config.memory_bytes = 64ULL << 20;
    auto machine = Machine::create(config);
    ASSERT_TRUE(machine) << machine.error().to_string();
    auto info = load_linux((*machine)->memory(), make_vmlinux(true), {}, "", layout::kRsdp);
    ASSERT_TRUE(info);
    ASSERT_TRUE(setup_boot_vcpu((*machine)->vcpu(0), (*machine)->memory(), *info));
    auto regs = (*machine)->vcpu(0).get_regs();
    auto sregs = (*machine)->vcpu(0).get_sregs();
    ASSERT_TRUE(regs && sregs);
    EXPECT_EQ(regs->rbx, layout::kPvhStartInfo);
    EXPECT_EQ(regs->rip, kKernelLoad + 0x40);
    EXPECT_FALSE(sregs->cr0 & (1ULL << 31)) << "paging off";
    EXPECT_EQ(sregs->efer & (1ULL << 10), 0u) << "not in long mode";
    EXPECT_EQ(sregs->cs.db, 1) << "32-bit code segment";
    EXPECT_EQ(sregs->cs.l, 0);
}

}  // namespace
}  // namespace boxlite::vmm
