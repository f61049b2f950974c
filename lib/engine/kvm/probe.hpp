// Can this host's KVM run a 64-bit Linux guest? Asked once per process and cached: the kvm
// engine's available() (probe.cpp). It runs in the caller's process, with the VMM of lib/vmm.
//
// Three checks, each with its own one-line reason:
//  1. /dev/kvm exists ("no /dev/kvm on this host");
//  2. it opens read-write ("no permission to open /dev/kvm");
//  3. a real probe guest runs: a one-page guest is put in 64-bit long mode as boot.cpp does it
//     for Linux (identity page tables, GDT, EFER.LMA), does what an early Linux kernel does that
//     some KVMs cannot — a locked CMPXCHG16B on a page that is one of its own page tables, which
//     shadow paging write-protects and must emulate — and writes one byte to an I/O port. Under
//     kvm_pvm (Pagetable-based Virtual Machine) that CMPXCHG16B ends in a KVM emulation failure,
//     exactly where Debian's cloud kernel stops in SLUB (docs/vmm.md); a KVM that cannot enter
//     long mode at all ends in a shutdown exit instead. Neither is guessed from the module name.
#pragma once

#include <boxlite/error.hpp>

#include <string>

namespace boxlite::vmm {

/// void when 64-bit guests run; UnsupportedEngine (why, and what runs here instead) otherwise.
BoxliteResult<void> probe_long_mode_support(const std::string& kvm_device = "/dev/kvm");

/// Check 3 alone: runs the long-mode probe guest (a few milliseconds). Without
/// `page_table_cmpxchg16b` it only proves the 64-bit boot set-up runs (tests).
BoxliteResult<void> run_long_mode_probe_guest(bool page_table_cmpxchg16b = true);

/// The same question, answered once per process (the first device path asked wins).
const BoxliteResult<void>& cached_long_mode_support();

}  // namespace boxlite::vmm
