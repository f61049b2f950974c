// Can this host's KVM run a 64-bit Linux guest? Asked once per process and cached: the kvm
// engine's available() (probe.cpp). It runs in the caller's process, with the VMM of lib/vmm.
//
// Two checks, both fast:
//  1. /dev/kvm provided by kvm_pvm (Pagetable-based Virtual Machine, /sys/module/kvm_pvm) is
//     refused outright. Measured on this project's CI machine: a tiny long-mode guest set up
//     exactly like the Linux boot path DOES run there (so the check below would pass), but a
//     stock Debian cloud kernel does not boot — through the bzImage entry it stalls in the
//     decompressor; through PVH it prints its early messages over a minute (every page touched
//     costs a trip through PVM's shadow paging) and then stops on a KVM emulation failure
//     (CMPXCHG16B), or with CX16 hidden makes no visible progress (docs/vmm.md).
//  2. Elsewhere, a real probe: a one-page guest is put in 64-bit long mode as boot.cpp does it
//     (identity page tables, GDT, EFER.LMA) and must write one byte to an I/O port; a host
//     whose KVM cannot enter long mode ends in a shutdown exit instead.
#pragma once

#include "vmm/kvm.hpp"  // kvm_is_pvm()

#include <boxlite/error.hpp>

#include <string>

namespace boxlite::vmm {

/// void when 64-bit guests run; UnsupportedEngine (why, and what runs here instead) otherwise.
BoxliteResult<void> probe_long_mode_support(const std::string& kvm_device = "/dev/kvm");

/// Check 2 alone: runs the long-mode probe guest (a few milliseconds).
BoxliteResult<void> run_long_mode_probe_guest();

/// The same question, answered once per process (the first device path asked wins).
const BoxliteResult<void>& cached_long_mode_support();

}  // namespace boxlite::vmm
