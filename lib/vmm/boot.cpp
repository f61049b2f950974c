#include "vmm/boot.hpp"

#include "vmm/layout.hpp"

#include <algorithm>
#include <cstring>
#include <elf.h>

namespace boxlite::vmm {
namespace {

// ---- zero page (struct boot_params) offsets, Documentation/arch/x86/zero-page.rst -----------
constexpr std::uint64_t kZpAcpiRsdp = 0x070;
constexpr std::uint64_t kZpE820Entries = 0x1e8;
constexpr std::uint64_t kZpSetupHeader = 0x1f1;
constexpr std::uint64_t kZpSetupHeaderEnd = 0x280;  // the header fields boot.rst defines end here
constexpr std::uint64_t kZpE820Table = 0x2d0;
constexpr std::uint64_t kZpE820Max = 128;
// ---- setup header fields (offsets within the bzImage / zero page) ----------------------------
constexpr std::uint64_t kHdrSetupSects = 0x1f1;
constexpr std::uint64_t kHdrBootFlag = 0x1fe;
constexpr std::uint64_t kHdrJumpEnd = 0x201;  // byte: length of the header after 0x202
constexpr std::uint64_t kHdrMagic = 0x202;
constexpr std::uint64_t kHdrVersion = 0x206;
constexpr std::uint64_t kHdrTypeOfLoader = 0x210;
constexpr std::uint64_t kHdrLoadFlags = 0x211;
constexpr std::uint64_t kHdrRamdiskImage = 0x218;
constexpr std::uint64_t kHdrRamdiskSize = 0x21c;
constexpr std::uint64_t kHdrHeapEndPtr = 0x224;
constexpr std::uint64_t kHdrCmdLinePtr = 0x228;
constexpr std::uint64_t kHdrInitrdAddrMax = 0x22c;
constexpr std::uint64_t kHdrKernelAlignment = 0x230;
constexpr std::uint64_t kHdrXLoadFlags = 0x236;
constexpr std::uint64_t kHdrCmdlineSize = 0x238;
constexpr std::uint64_t kHdrPrefAddress = 0x258;
constexpr std::uint64_t kHdrInitSize = 0x260;
constexpr std::uint32_t kHdrMagicValue = 0x53726448;  // "HdrS"
constexpr std::uint16_t kBootFlagValue = 0xaa55;
constexpr std::uint8_t kLoaderUndefined = 0xff;
constexpr std::uint8_t kLoadFlagLoadedHigh = 0x01, kLoadFlagCanUseHeap = 0x80;
constexpr std::uint16_t kXlfKernel64 = 0x1;
constexpr std::uint16_t kMinBootProtocol = 0x020c;        // 2.12: 64-bit entry + xloadflags
constexpr std::uint16_t kSyntheticBootProtocol = 0x020f;  // what we claim for an ELF vmlinux's zero page
// The longest command line (without its NUL) a kernel takes when its header does not say:
// an ELF vmlinux has no setup header, and x86 Linux's COMMAND_LINE_SIZE has been 2048 since
// 2.6; the kernel silently cuts anything longer. A bzImage says (cmdline_size, protocol 2.06+).
constexpr std::uint64_t kDefaultCmdlineLimit = 2047;

// ---- PVH (xen/include/public/arch-x86/hvm/start_info.h) --------------------------------------
constexpr std::uint32_t kXenElfNotePhys32Entry = 18;
constexpr std::uint32_t kHvmStartMagic = 0x336ec578;
struct HvmStartInfo {
    std::uint32_t magic, version, flags, nr_modules;
    std::uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    std::uint32_t memmap_entries, reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
struct HvmModlistEntry {
    std::uint64_t paddr, size, cmdline_paddr, reserved;
};
struct HvmMemmapEntry {
    std::uint64_t addr, size;
    std::uint32_t type, reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);

struct __attribute__((packed)) ZeroPageE820 {
    std::uint64_t addr, size;
    std::uint32_t type;
};
static_assert(sizeof(ZeroPageE820) == 20);

template <class T>
std::optional<T> read_at(std::span<const std::byte> bytes, std::uint64_t offset) {
    if (offset > bytes.size() || sizeof(T) > bytes.size() - offset) return std::nullopt;
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }
constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v & ~(a - 1); }

bool is_elf(std::span<const std::byte> k) { return k.size() >= 4 && std::memcmp(k.data(), ELFMAG, SELFMAG) == 0; }

struct LoadedKernel {
    std::uint64_t start = ~0ULL, end = 0, entry = 0;
    BootEntry kind = BootEntry::Linux64;
};

BoxliteResult<LoadedKernel> load_elf(const GuestMemory& memory, std::span<const std::byte> kernel) {
    auto ehdr = read_at<Elf64_Ehdr>(kernel, 0);
    if (!ehdr || ehdr->e_ident[EI_CLASS] != ELFCLASS64 || ehdr->e_ident[EI_DATA] != ELFDATA2LSB ||
        ehdr->e_machine != EM_X86_64)
        return fail(ErrorKind::Config, "kernel is an ELF file but not a little-endian x86_64 ELF64 vmlinux");
    if (ehdr->e_phentsize != sizeof(Elf64_Phdr) || ehdr->e_phnum == 0 || ehdr->e_phnum > 64)
        return fail(ErrorKind::Config, "vmlinux has {} program headers of {} bytes (expected 1..64 of {})",
                    ehdr->e_phnum, ehdr->e_phentsize, sizeof(Elf64_Phdr));
    LoadedKernel loaded;
    loaded.entry = ehdr->e_entry;  // vmlinux: ENTRY(phys_startup_64), a physical address
    std::optional<std::uint64_t> pvh_entry;
    for (std::uint16_t i = 0; i < ehdr->e_phnum; ++i) {
        auto phdr = read_at<Elf64_Phdr>(kernel, ehdr->e_phoff + std::uint64_t{i} * sizeof(Elf64_Phdr));
        if (!phdr) return fail(ErrorKind::Config, "vmlinux program header {} is past the end of the file", i);
        if (phdr->p_type == PT_LOAD) {
            if (phdr->p_filesz > phdr->p_memsz || phdr->p_offset > kernel.size() ||
                phdr->p_filesz > kernel.size() - phdr->p_offset)
                return fail(ErrorKind::Config, "vmlinux segment {} lies outside the file", i);
            if (phdr->p_paddr < layout::kHighMemory)
                return fail(ErrorKind::Config, "vmlinux segment {} loads at {:#x}, below 1 MiB", i, phdr->p_paddr);
            auto target = memory.slice(phdr->p_paddr, phdr->p_memsz);
            if (!target)
                return fail(ErrorKind::Config, "vmlinux segment {} ({:#x}+{:#x}) does not fit in guest memory", i,
                            phdr->p_paddr, phdr->p_memsz);
            std::memcpy(target->data(), kernel.data() + phdr->p_offset, phdr->p_filesz);
            std::memset(target->data() + phdr->p_filesz, 0, phdr->p_memsz - phdr->p_filesz);
            loaded.start = std::min(loaded.start, phdr->p_paddr);
            loaded.end = std::max(loaded.end, phdr->p_paddr + phdr->p_memsz);
        } else if (phdr->p_type == PT_NOTE) {
            if (phdr->p_offset > kernel.size() || phdr->p_filesz > kernel.size() - phdr->p_offset) continue;
            auto notes = kernel.subspan(phdr->p_offset, phdr->p_filesz);
            std::uint64_t at = 0;
            while (auto note = read_at<Elf64_Nhdr>(notes, at)) {
                const std::uint64_t name_at = at + sizeof(Elf64_Nhdr);
                const std::uint64_t desc_at = name_at + align_up(note->n_namesz, 4);
                const std::uint64_t next = desc_at + align_up(note->n_descsz, 4);
                if (next > notes.size() || next <= at) break;
                if (note->n_type == kXenElfNotePhys32Entry && note->n_namesz == 4 &&
                    std::memcmp(notes.data() + name_at, "Xen", 4) == 0) {
                    if (note->n_descsz == 4) pvh_entry = read_at<std::uint32_t>(notes, desc_at);
                    else if (note->n_descsz == 8) pvh_entry = read_at<std::uint64_t>(notes, desc_at);
                }
                at = next;
            }
        }
    }
    if (loaded.end == 0) return fail(ErrorKind::Config, "vmlinux has no loadable segment");
    if (pvh_entry) {
        loaded.entry = *pvh_entry;
        loaded.kind = BootEntry::Pvh;
    }
    if (loaded.entry < loaded.start || loaded.entry >= loaded.end)
        return fail(ErrorKind::Config, "vmlinux entry point {:#x} is outside its loaded image {:#x}..{:#x}",
                    loaded.entry, loaded.start, loaded.end);
    return loaded;
}

BoxliteResult<LoadedKernel> load_bzimage(const GuestMemory& memory, std::span<const std::byte> kernel,
                                         std::span<std::byte> zero_page) {
    auto magic = read_at<std::uint32_t>(kernel, kHdrMagic);
    auto boot_flag = read_at<std::uint16_t>(kernel, kHdrBootFlag);
    if (!magic || *magic != kHdrMagicValue || !boot_flag || *boot_flag != kBootFlagValue)
        return fail(ErrorKind::Config, "kernel is neither an ELF vmlinux nor a bzImage (no HdrS setup header)");
    const auto version = read_at<std::uint16_t>(kernel, kHdrVersion).value_or(0);
    const auto xloadflags = read_at<std::uint16_t>(kernel, kHdrXLoadFlags).value_or(0);
    if (version < kMinBootProtocol || !(xloadflags & kXlfKernel64))
        return fail(ErrorKind::Config,
                    "bzImage boot protocol {:#x} has no 64-bit entry (need >= 2.12 and XLF_KERNEL_64)", version);
    std::uint64_t setup_sects = read_at<std::uint8_t>(kernel, kHdrSetupSects).value_or(0);
    if (setup_sects == 0) setup_sects = 4;
    const std::uint64_t payload_offset = (setup_sects + 1) * 512;
    if (payload_offset >= kernel.size()) return fail(ErrorKind::Config, "bzImage is truncated after its setup code");
    const auto payload = kernel.subspan(payload_offset);
    std::uint64_t load = read_at<std::uint64_t>(kernel, kHdrPrefAddress).value_or(layout::kBzImageLoad);
    if (load < layout::kHighMemory) load = layout::kBzImageLoad;
    const std::uint64_t init_size = std::max<std::uint64_t>(read_at<std::uint32_t>(kernel, kHdrInitSize).value_or(0),
                                                            payload.size());
    if (!memory.contains(load, init_size))
        return fail(ErrorKind::Config, "bzImage needs {:#x}+{:#x} (init_size) but guest memory is smaller", load,
                    init_size);
    memory.write_bytes(load, payload);
    // The zero page starts as a copy of the image's setup header (boot.rst "64-bit boot protocol").
    const std::uint64_t header_end = kHdrMagic + read_at<std::uint8_t>(kernel, kHdrJumpEnd).value_or(0);
    const std::uint64_t header_bytes = std::min<std::uint64_t>(header_end, kZpSetupHeaderEnd) - kZpSetupHeader;
    if (kZpSetupHeader + header_bytes <= kernel.size())
        std::memcpy(zero_page.data() + kZpSetupHeader, kernel.data() + kZpSetupHeader, header_bytes);
    LoadedKernel loaded;
    loaded.start = load;
    loaded.end = load + init_size;
    loaded.entry = load + layout::kBzImage64BitEntryOffset;
    loaded.kind = BootEntry::Linux64;
    return loaded;
}

template <class T>
void put(std::span<std::byte> bytes, std::uint64_t offset, T value) {
    std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

}  // namespace

std::vector<E820Entry> guest_memory_map(const GuestMemory& memory) {
    std::vector<E820Entry> map;
    for (const auto& region : memory.regions()) {
        const std::uint64_t start = region.guest_address, end = region.guest_address + region.size;
        if (start < layout::kEbdaStart) map.push_back({start, std::min(end, layout::kEbdaStart) - start, kE820Ram});
        if (end > layout::kHighMemory) {
            const std::uint64_t from = std::max(start, layout::kHighMemory);
            map.push_back({from, end - from, kE820Ram});
        }
    }
    return map;
}

BoxliteResult<BootInfo> load_linux(const GuestMemory& memory, std::span<const std::byte> kernel,
                                   std::span<const std::byte> initrd, std::string_view cmdline,
                                   std::uint64_t rsdp_address) {
    if (cmdline.size() + 1 > layout::kCmdlineMax)
        return fail(ErrorKind::Config, "kernel command line is {} bytes, at most {} fit", cmdline.size(),
                    layout::kCmdlineMax - 1);
    auto zero_page = memory.slice(layout::kZeroPage, 4096);
    if (!zero_page || !memory.contains(layout::kCmdline, layout::kCmdlineMax) ||
        !memory.contains(layout::kPml4, layout::kBootPageTablesSize) || !memory.contains(layout::kHighMemory, 1))
        return fail(ErrorKind::Config, "guest memory is too small for the boot structures");
    std::memset(zero_page->data(), 0, zero_page->size());

    LoadedKernel loaded;
    std::uint64_t cmdline_limit = kDefaultCmdlineLimit;
    if (is_elf(kernel)) {
        BOXLITE_TRY(loaded, load_elf(memory, kernel));
    } else {
        BOXLITE_TRY(loaded, load_bzimage(memory, kernel, *zero_page));
        // cmdline_size is the kernel's to say (read-only for the loader): the longest command
        // line it takes, without the NUL. A kernel would silently cut a longer one.
        cmdline_limit = read_at<std::uint32_t>(kernel, kHdrCmdlineSize).value_or(0);
        if (cmdline_limit == 0) cmdline_limit = 255;  // what protocols before 2.06 allowed
    }
    if (cmdline.size() > cmdline_limit)
        return fail(ErrorKind::Config, "kernel command line is {} bytes, but this kernel takes at most {}",
                    cmdline.size(), cmdline_limit);

    // Command line (NUL-terminated).
    std::vector<std::byte> line(cmdline.size() + 1);
    std::memcpy(line.data(), cmdline.data(), cmdline.size());
    memory.write_bytes(layout::kCmdline, line);

    BootInfo info;
    info.entry_kind = loaded.kind;
    info.entry = loaded.entry;
    info.kernel_start = loaded.start;
    info.kernel_end = loaded.end;

    // The initrd goes at the top of low RAM (below the gap and below initrd_addr_max), page
    // aligned, and must not overlap the kernel.
    const auto map = guest_memory_map(memory);
    if (!initrd.empty()) {
        std::uint64_t top = 0;
        for (const auto& e : map)
            if (e.address < layout::kMmioGapStart) top = std::max(top, e.address + e.size);
        std::uint64_t addr_max =
            read_at<std::uint32_t>(std::span<const std::byte>(*zero_page), kHdrInitrdAddrMax).value_or(0);
        if (addr_max == 0) addr_max = layout::kInitrdAddrMaxDefault;
        top = std::min(top, addr_max + 1);
        if (initrd.size() > top || align_down(top - initrd.size(), 4096) < align_up(loaded.end, 4096))
            return fail(ErrorKind::Config,
                        "initrd of {} bytes does not fit between the kernel's end {:#x} and {:#x}: give the box "
                        "more memory",
                        initrd.size(), loaded.end, top);
        info.initrd_address = align_down(top - initrd.size(), 4096);
        info.initrd_size = initrd.size();
        memory.write_bytes(info.initrd_address, initrd);
    }

    if (loaded.kind == BootEntry::Pvh) {
        HvmStartInfo start{};
        start.magic = kHvmStartMagic;
        start.version = 1;
        start.cmdline_paddr = layout::kCmdline;
        start.rsdp_paddr = rsdp_address;
        if (info.initrd_size) {
            start.nr_modules = 1;
            start.modlist_paddr = layout::kPvhModlist;
            memory.write_obj(layout::kPvhModlist, HvmModlistEntry{info.initrd_address, info.initrd_size, 0, 0});
        }
        if (map.size() > layout::kPvhMemmapMaxEntries)
            return fail(ErrorKind::Internal, "memory map has {} entries", map.size());
        for (std::size_t i = 0; i < map.size(); ++i)
            memory.write_obj(layout::kPvhMemmap + i * sizeof(HvmMemmapEntry),
                             HvmMemmapEntry{map[i].address, map[i].size, map[i].type, 0});
        start.memmap_paddr = layout::kPvhMemmap;
        start.memmap_entries = static_cast<std::uint32_t>(map.size());
        memory.write_obj(layout::kPvhStartInfo, start);
        return info;
    }

    // 64-bit boot protocol: complete the zero page.
    auto& zp = *zero_page;
    put<std::uint16_t>(zp, kHdrBootFlag, kBootFlagValue);
    put<std::uint32_t>(zp, kHdrMagic, kHdrMagicValue);
    if (read_at<std::uint16_t>(std::span<const std::byte>(zp), kHdrVersion).value_or(0) == 0)
        put<std::uint16_t>(zp, kHdrVersion, kSyntheticBootProtocol);
    if (read_at<std::uint32_t>(std::span<const std::byte>(zp), kHdrKernelAlignment).value_or(0) == 0)
        put<std::uint32_t>(zp, kHdrKernelAlignment, static_cast<std::uint32_t>(layout::kKernelAlignmentDefault));
    put<std::uint8_t>(zp, kHdrTypeOfLoader, kLoaderUndefined);
    const auto loadflags = read_at<std::uint8_t>(std::span<const std::byte>(zp), kHdrLoadFlags).value_or(0);
    put<std::uint8_t>(zp, kHdrLoadFlags,
                      static_cast<std::uint8_t>(loadflags | kLoadFlagLoadedHigh | kLoadFlagCanUseHeap));
    put<std::uint16_t>(zp, kHdrHeapEndPtr, static_cast<std::uint16_t>(layout::kSetupHeapEnd));
    put<std::uint32_t>(zp, kHdrCmdLinePtr, static_cast<std::uint32_t>(layout::kCmdline));
    put<std::uint32_t>(zp, kHdrRamdiskImage, static_cast<std::uint32_t>(info.initrd_address));
    put<std::uint32_t>(zp, kHdrRamdiskSize, static_cast<std::uint32_t>(info.initrd_size));
    put<std::uint64_t>(zp, kZpAcpiRsdp, rsdp_address);
    if (map.size() > kZpE820Max) return fail(ErrorKind::Internal, "memory map has {} entries", map.size());
    put<std::uint8_t>(zp, kZpE820Entries, static_cast<std::uint8_t>(map.size()));
    for (std::size_t i = 0; i < map.size(); ++i)
        put(zp, kZpE820Table + i * sizeof(ZeroPageE820), ZeroPageE820{map[i].address, map[i].size, map[i].type});
    return info;
}

namespace {

// A GDT entry from base, limit and the access/flags bits (Intel SDM vol. 3, 3.4.5).
constexpr std::uint64_t gdt_entry(std::uint16_t flags, std::uint32_t base, std::uint32_t limit) {
    return ((std::uint64_t{base} & 0xff000000ULL) << 32) | ((std::uint64_t{flags} & 0xf0ffULL) << 40) |
           ((std::uint64_t{limit} & 0x000f0000ULL) << 32) | ((std::uint64_t{base} & 0x00ffffffULL) << 16) |
           (std::uint64_t{limit} & 0x0000ffffULL);
}

kvm_segment segment_from_gdt(std::uint64_t entry, std::uint16_t index) {
    kvm_segment s{};
    s.base = ((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24);
    const std::uint32_t limit = static_cast<std::uint32_t>((entry & 0xffff) | (((entry >> 48) & 0xf) << 16));
    s.g = (entry >> 55) & 1;
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.selector = static_cast<std::uint16_t>(index * 8);
    s.type = (entry >> 40) & 0xf;
    s.present = (entry >> 47) & 1;
    s.dpl = (entry >> 45) & 3;
    s.db = (entry >> 54) & 1;
    s.s = (entry >> 44) & 1;
    s.l = (entry >> 53) & 1;
    s.avl = (entry >> 52) & 1;
    s.unusable = s.present ? 0 : 1;
    return s;
}

constexpr std::uint64_t kCr0Pe = 1, kCr0Et = 1ULL << 4, kCr0Pg = 1ULL << 31;
constexpr std::uint64_t kCr4Pae = 1ULL << 5;
constexpr std::uint64_t kEferLme = 1ULL << 8, kEferLma = 1ULL << 10;
constexpr std::uint64_t kPageTableFlags = 0x3;  // present | writable
constexpr std::uint64_t kPageSize2M = 0x80;

}  // namespace

BoxliteResult<void> setup_boot_vcpu(Vcpu& vcpu, const GuestMemory& memory, const BootInfo& info) {
    const bool long_mode = info.entry_kind == BootEntry::Linux64;
    // GDT: null, null, code (0x10), data (0x18), TSS (0x20).
    const std::uint64_t code = long_mode ? gdt_entry(0xa09b, 0, 0xfffff) : gdt_entry(0xc09b, 0, 0xfffff);
    const std::uint64_t gdt[layout::kBootGdtEntries] = {0, 0, code, gdt_entry(0xc093, 0, 0xfffff),
                                                        gdt_entry(0x008b, 0, 0x67)};
    for (std::uint64_t i = 0; i < layout::kBootGdtEntries; ++i)
        if (!memory.write_obj(layout::kBootGdt + i * 8, gdt[i]))
            return fail(ErrorKind::Config, "guest memory is too small for the boot GDT");
    memory.write_obj<std::uint64_t>(layout::kBootIdt, 0);

    BOXLITE_TRY(auto sregs, vcpu.get_sregs());
    sregs.gdt.base = layout::kBootGdt;
    sregs.gdt.limit = static_cast<std::uint16_t>(layout::kBootGdtEntries * 8 - 1);
    sregs.idt.base = layout::kBootIdt;
    sregs.idt.limit = 0;
    sregs.cs = segment_from_gdt(gdt[2], 2);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = segment_from_gdt(gdt[3], 3);
    sregs.tr = segment_from_gdt(gdt[4], 4);
    sregs.cr0 = kCr0Pe | kCr0Et;
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (long_mode) {
        // Identity map of the first GiB with 2 MiB pages.
        memory.write_obj<std::uint64_t>(layout::kPml4, layout::kPdpt | kPageTableFlags);
        memory.write_obj<std::uint64_t>(layout::kPdpt, layout::kPd | kPageTableFlags);
        for (std::uint64_t i = 0; i < 512; ++i)
            memory.write_obj<std::uint64_t>(layout::kPd + i * 8, (i << 21) | kPageTableFlags | kPageSize2M);
        sregs.cr3 = layout::kPml4;
        sregs.cr4 = kCr4Pae;
        sregs.cr0 |= kCr0Pg;
        sregs.efer = kEferLme | kEferLma;
    }
    BOXLITE_TRY_VOID(vcpu.set_sregs(sregs));

    kvm_fpu fpu{};
    fpu.fcw = 0x37f;     // x87 default control word
    fpu.mxcsr = 0x1f80;  // SSE default: all exceptions masked
    BOXLITE_TRY_VOID(vcpu.set_fpu(fpu));

    kvm_regs regs{};
    regs.rflags = 0x2;
    regs.rip = info.entry;
    if (long_mode) {
        regs.rsi = layout::kZeroPage;
        regs.rsp = regs.rbp = layout::kBootStack;
    } else {
        regs.rbx = layout::kPvhStartInfo;
    }
    BOXLITE_TRY_VOID(vcpu.set_regs(regs));
    // MSRs: Machine::create sets the architectural ones on every vCPU, APs included.
    return {};
}

}  // namespace boxlite::vmm
