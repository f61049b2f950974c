// The guest-physical memory map of a BoxLite micro-VM (x86_64). Every address the VMM writes into
// a guest, or decodes from one, is a named constant here; no other file spells a bare address.
//
//   0x0000_0000 ┌──────────────────────────────┐
//               │ real-mode IVT / BDA (unused)  │
//   0x0000_0500 │ boot GDT, IDT                 │
//   0x0000_6000 │ PVH start info, modules, e820 │
//   0x0000_7000 │ zero page (boot_params)       │
//   0x0000_8ff0 │ boot stack (grows down)       │
//   0x0000_9000 │ PML4, PDPT, PD (identity map) │
//   0x0001_0000 │ tiny test guests load here    │
//   0x0002_0000 │ kernel command line           │
//   0x0009_fc00 │ EBDA .. 1 MiB: reserved hole  │  (e820: not RAM)
//   0x000e_0000 │ ACPI tables (RSDP first)      │
//   0x0010_0000 │ kernel, then free RAM, initrd │
//   0xc000_0000 ├──────────────────────────────┤  RAM above this moves to 4 GiB
//               │ MMIO gap: virtio-mmio windows │
//   0xfec0_0000 │ IOAPIC                        │
//   0xfee0_0000 │ LAPIC                         │
//   0x1_0000_0000 RAM continues (if any)
#pragma once

#include <cstdint>

namespace boxlite::vmm::layout {

// ---- boot structures (low memory) -------------------------------------------------------------

/// Boot GDT: null, null, code (selector 0x10 = the boot protocol's __BOOT_CS), data (0x18 =
/// __BOOT_DS), TSS (0x20). Linux loads its own GDT at once; this one only has to make the
/// first instructions after entry valid.
inline constexpr std::uint64_t kBootGdt = 0x500;
/// Number of 8-byte GDT entries we write at kBootGdt.
inline constexpr std::uint64_t kBootGdtEntries = 5;
/// An empty IDT (limit 0): any exception before Linux installs its own triple-faults, which is
/// what we want (a shutdown exit instead of a silent hang).
inline constexpr std::uint64_t kBootIdt = 0x540;

/// PVH `hvm_start_info` (xen/arch-x86/hvm/start_info.h), passed in %ebx to the PVH entry point.
inline constexpr std::uint64_t kPvhStartInfo = 0x6000;
/// The PVH module list (one `hvm_modlist_entry`, 32 bytes: the initrd) follows the start info.
inline constexpr std::uint64_t kPvhModlist = 0x6040;
/// The PVH memory map (`hvm_memmap_table_entry[]`, 24 bytes each) follows the module list.
inline constexpr std::uint64_t kPvhMemmap = 0x6080;
/// At most this many PVH memory map entries fit before the zero page.
inline constexpr std::uint64_t kPvhMemmapMaxEntries = (0x7000 - kPvhMemmap) / 24;
/// The Linux zero page (`struct boot_params`, 4 KiB), passed in %rsi to the 64-bit entry.
inline constexpr std::uint64_t kZeroPage = 0x7000;
/// Initial stack pointer for the boot vCPU: top of the page after the zero page.
inline constexpr std::uint64_t kBootStack = 0x8ff0;

/// Identity-mapping page tables for the 64-bit boot protocol: one PML4 → one PDPT → one PD of
/// 512 × 2 MiB pages = the first 1 GiB mapped 1:1, enough for the kernel's startup_64.
inline constexpr std::uint64_t kPml4 = 0x9000;
inline constexpr std::uint64_t kPdpt = 0xa000;
inline constexpr std::uint64_t kPd = 0xb000;
/// The three boot page-table pages (PML4, PDPT, PD) span this many bytes from kPml4.
inline constexpr std::uint64_t kBootPageTablesSize = 0x3000;
static_assert(kPml4 + kBootPageTablesSize == kPd + 4096, "PML4, PDPT and PD are consecutive pages");
/// Bytes identity-mapped by the boot page tables.
inline constexpr std::uint64_t kIdentityMappedBytes = 1ULL << 30;

/// Tiny freestanding test guests (tests/guests/) are linked to run from here.
inline constexpr std::uint64_t kTestGuestLoad = 0x10000;
/// Scratch memory tiny test guests use for virtqueues and buffers.
inline constexpr std::uint64_t kTestGuestScratch = 0x40000;

/// The kernel command line (NUL-terminated) and its maximum size including the NUL.
inline constexpr std::uint64_t kCmdline = 0x20000;
inline constexpr std::uint64_t kCmdlineMax = 0x10000;

/// Start of the Extended BIOS Data Area: RAM in [kEbdaStart, kHighMemory) is reported reserved.
inline constexpr std::uint64_t kEbdaStart = 0x9fc00;

/// ACPI tables live in the BIOS read-only area, where Linux also scans for the RSDP.
inline constexpr std::uint64_t kAcpiStart = 0xe0000;
/// The RSDP is the first table; the rest follow it in this window.
inline constexpr std::uint64_t kRsdp = kAcpiStart;
inline constexpr std::uint64_t kAcpiEnd = 0x100000;

/// First byte above the legacy 1 MiB hole: where vmlinux/bzImage protected-mode code goes.
inline constexpr std::uint64_t kHighMemory = 0x100000;
/// Default load address of a relocatable bzImage's protected-mode kernel (16 MiB, the
/// default CONFIG_PHYSICAL_START).
inline constexpr std::uint64_t kBzImageLoad = 0x1000000;
/// The 64-bit entry point (startup_64) sits this far into a bzImage's protected-mode kernel
/// (Documentation/arch/x86/boot.rst, "64-bit boot protocol").
inline constexpr std::uint64_t kBzImage64BitEntryOffset = 0x200;
/// kernel_alignment we report when the setup header leaves it 0 (an ELF vmlinux has none):
/// 16 MiB, CONFIG_PHYSICAL_ALIGN's default.
inline constexpr std::uint64_t kKernelAlignmentDefault = 0x1000000;
/// The highest initrd address for a kernel whose header does not say (an ELF vmlinux): 2 GiB - 1,
/// the initrd_addr_max every x86 Linux with boot protocol 2.03 or later declares.
inline constexpr std::uint64_t kInitrdAddrMaxDefault = 0x7fffffff;
/// heap_end_ptr: the end of the real-mode setup heap, an offset from the start of the real-mode
/// code. Only the 16-bit setup code uses that heap, and we enter past it; the value is the one
/// boot.rst suggests for a loader that leaves the heap unused.
inline constexpr std::uint64_t kSetupHeapEnd = 0xfe00;

// ---- the 32-bit MMIO gap and devices ----------------------------------------------------------

/// RAM stops here below 4 GiB; the rest of guest RAM is mapped at kHighRamStart.
inline constexpr std::uint64_t kMmioGapStart = 0xc0000000;
inline constexpr std::uint64_t kMmioGapEnd = 0x100000000;
inline constexpr std::uint64_t kHighRamStart = kMmioGapEnd;

/// virtio-mmio device windows: device i lives at kVirtioMmioBase + i * kVirtioMmioSize.
inline constexpr std::uint64_t kVirtioMmioBase = 0xd0000000;
inline constexpr std::uint64_t kVirtioMmioSize = 0x1000;
inline constexpr std::uint32_t kVirtioMmioMaxDevices = 16;  // GSIs 5..20 fit the IOAPIC
/// An MMIO window only the tiny test guests use (a recording device in tests/vmm).
inline constexpr std::uint64_t kTestMmio = 0xd8000000;

/// The IOAPIC and local APIC register windows (fixed by the architecture / KVM's irqchip).
inline constexpr std::uint64_t kIoapic = 0xfec00000;
inline constexpr std::uint64_t kLapic = 0xfee00000;

/// KVM_SET_TSS_ADDR needs three free pages below 4 GiB, KVM_SET_IDENTITY_MAP_ADDR one more
/// (Intel real-mode emulation); both sit just below the BIOS area at the top of the gap.
inline constexpr std::uint64_t kKvmIdentityMap = 0xfeffc000;
inline constexpr std::uint64_t kKvmTss = 0xfeffd000;

// ---- interrupts and I/O ports -----------------------------------------------------------------

/// COM1: the console UART.
inline constexpr std::uint16_t kCom1Port = 0x3f8;
inline constexpr std::uint16_t kCom1PortCount = 8;
inline constexpr std::uint32_t kCom1Irq = 4;
/// i8042 keyboard controller: data and command/status ports. Only its CPU-reset command is used.
inline constexpr std::uint16_t kI8042DataPort = 0x60;
inline constexpr std::uint16_t kI8042CommandPort = 0x64;
/// ACPI hardware-reduced sleep control (FADT SLEEP_CONTROL_REG) and status registers: a guest
/// writing SLP_EN | SLP_TYP=5 here powers the VM off.
inline constexpr std::uint16_t kAcpiSleepControlPort = 0x3c0;
inline constexpr std::uint16_t kAcpiSleepStatusPort = 0x3c1;
/// A port the tiny test guests write results to (a recording device in tests/vmm).
inline constexpr std::uint16_t kTestResultPort = 0x3f0;
/// virtio-mmio device i raises GSI kVirtioIrqBase + i (edge-triggered via irqfd).
inline constexpr std::uint32_t kVirtioIrqBase = 5;
/// IOAPIC pins (KVM's in-kernel IOAPIC has 24).
inline constexpr std::uint32_t kIoapicPins = 24;

}  // namespace boxlite::vmm::layout
