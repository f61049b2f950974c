// Linux boot: load a kernel into guest memory and put the boot vCPU where the kernel expects.
//
// Two kernels formats, detected from their bytes:
//   - an uncompressed ELF `vmlinux` — through its PVH entry (XEN_ELFNOTE_PHYS32_ENTRY: 32-bit
//     protected mode, %ebx = hvm_start_info) when it has one, else its 64-bit entry;
//   - a bzImage — through the 64-bit boot protocol (Documentation/arch/x86/boot.rst): the
//     protected-mode kernel at its preferred address, entry = load + 0x200, %rsi = zero page.
// For the 64-bit entries we build the zero page (setup header, command line, initrd, e820),
// identity page tables for the first GiB, a GDT and long-mode control registers (the MSRs every
// vCPU needs are Machine::create's business, so APs get them too).
// Every address comes from layout.hpp. Kernel images are hostile input too: every ELF/setup
// header field is bounds-checked before it is used.
#pragma once

#include "vmm/kvm.hpp"
#include "memory/guest_memory.hpp"

#include <boxlite/error.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace boxlite::vmm {

enum class BootEntry : std::uint8_t {
    Pvh,     ///< 32-bit protected mode, paging off, %ebx = hvm_start_info
    Linux64  ///< 64-bit long mode, identity-mapped, %rsi = zero page
};

struct BootInfo {
    BootEntry entry_kind = BootEntry::Linux64;
    std::uint64_t entry = 0;
    std::uint64_t kernel_start = 0;
    std::uint64_t kernel_end = 0;
    std::uint64_t initrd_address = 0;
    std::uint64_t initrd_size = 0;
};

/// One e820 / PVH memory map entry.
struct E820Entry {
    std::uint64_t address;
    std::uint64_t size;
    std::uint32_t type;  ///< 1 = RAM, 2 = reserved
};
inline constexpr std::uint32_t kE820Ram = 1;
inline constexpr std::uint32_t kE820Reserved = 2;

/// Guest RAM as the guest should see it: low RAM below the EBDA, RAM from 1 MiB up to the MMIO
/// gap, RAM above 4 GiB.
std::vector<E820Entry> guest_memory_map(const GuestMemory& memory);

/// Loads `kernel` (vmlinux or bzImage) and `initrd` (may be empty), writes the command line
/// and the boot structures for the chosen entry (zero page, or PVH start info), pointing the
/// kernel at the ACPI RSDP at `rsdp_address`.
BoxliteResult<BootInfo> load_linux(const GuestMemory& memory, std::span<const std::byte> kernel,
                                   std::span<const std::byte> initrd, std::string_view cmdline,
                                   std::uint64_t rsdp_address);

/// Registers, segments, control registers and FPU of the boot vCPU for `info`; writes the
/// GDT/IDT (and, for the 64-bit entry, the page tables) into guest memory.
BoxliteResult<void> setup_boot_vcpu(Vcpu& vcpu, const GuestMemory& memory, const BootInfo& info);

}  // namespace boxlite::vmm
