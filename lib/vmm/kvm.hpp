// A thin, owning wrapper over the KVM ioctl API: /dev/kvm (Kvm), a VM (Vm) and a vCPU (Vcpu).
// It knows nothing of devices, boot or memory layout (rust-vmm's kvm-ioctls in spirit); every
// ioctl failure becomes an Engine error naming the ioctl.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::vmm {

/// True when /dev/kvm is kvm_pvm's (Pagetable-based Virtual Machine): the shim hides CMPXCHG16B
/// there, and the kvm engine's probe refuses it (engine/kvm/probe.hpp).
bool kvm_is_pvm();

/// A CPUID table in the layout KVM_{GET_SUPPORTED,SET}_CPUID2 expect.
struct CpuidTable {
    std::vector<kvm_cpuid_entry2> entries;
};

class Vcpu;

class Vm {
public:
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    BoxliteResult<void> set_user_memory_region(std::uint32_t slot, std::uint64_t guest_address, std::uint64_t size,
                                               void* host);
    /// In-kernel LAPICs + IOAPIC + PIC, and the i8254 PIT.
    BoxliteResult<void> create_irqchip();
    BoxliteResult<void> create_pit();
    BoxliteResult<void> set_tss_address(std::uint64_t address);
    BoxliteResult<void> set_identity_map_address(std::uint64_t address);
    /// Writing 1 to `event_fd` raises `gsi` without a VM exit round trip through us.
    BoxliteResult<void> register_irqfd(int event_fd, std::uint32_t gsi);
    /// A guest write of `length` bytes at `address` signals `event_fd` in the kernel instead of
    /// exiting (virtio QueueNotify); `datamatch` restricts it to one written value.
    BoxliteResult<void> register_ioeventfd(int event_fd, std::uint64_t address, std::uint32_t length,
                                           std::optional<std::uint64_t> datamatch, bool pio);
    BoxliteResult<void> set_irq_line(std::uint32_t irq, bool level);
    BoxliteResult<std::unique_ptr<Vcpu>> create_vcpu(std::uint32_t id);

private:
    friend class Kvm;
    Vm(base::OwnedFd fd, std::size_t run_size) : fd_(std::move(fd)), run_size_(run_size) {}
    base::OwnedFd fd_;
    std::size_t run_size_ = 0;
};

class Vcpu {
public:
    ~Vcpu();
    Vcpu(const Vcpu&) = delete;
    Vcpu& operator=(const Vcpu&) = delete;

    [[nodiscard]] std::uint32_t id() const noexcept { return id_; }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    /// The shared kvm_run page: exit reason and exit data after run().
    [[nodiscard]] kvm_run& run_state() noexcept { return *run_; }

    /// KVM_RUN. EINTR (a host stop signal) is reported as success with exit_reason KVM_EXIT_INTR.
    BoxliteResult<void> run();

    BoxliteResult<kvm_regs> get_regs() const;
    BoxliteResult<void> set_regs(const kvm_regs& regs);
    BoxliteResult<kvm_sregs> get_sregs() const;
    BoxliteResult<void> set_sregs(const kvm_sregs& sregs);
    BoxliteResult<void> set_fpu(const kvm_fpu& fpu);
    BoxliteResult<void> set_cpuid(const CpuidTable& table);
    /// What KVM_SET_CPUID2 left in effect (KVM_GET_CPUID2).
    BoxliteResult<CpuidTable> get_cpuid() const;
    /// Sets each (index, value); fails unless KVM accepted all of them.
    BoxliteResult<void> set_msrs(const std::vector<std::pair<std::uint32_t, std::uint64_t>>& msrs);
    BoxliteResult<std::vector<std::pair<std::uint32_t, std::uint64_t>>> get_msrs(
        const std::vector<std::uint32_t>& indices) const;
    BoxliteResult<void> set_lapic_lint(bool enable_extint_nmi);

private:
    friend class Vm;
    Vcpu(base::OwnedFd fd, std::uint32_t id, kvm_run* run, std::size_t run_size)
        : fd_(std::move(fd)), id_(id), run_(run), run_size_(run_size) {}
    base::OwnedFd fd_;
    std::uint32_t id_;
    kvm_run* run_;
    std::size_t run_size_;
};

class Kvm {
public:
    static BoxliteResult<Kvm> open(const std::string& path = "/dev/kvm");
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] int check_extension(int capability) const noexcept;
    BoxliteResult<CpuidTable> supported_cpuid() const;
    BoxliteResult<Vm> create_vm() const;

private:
    explicit Kvm(base::OwnedFd fd) : fd_(std::move(fd)) {}
    base::OwnedFd fd_;
};

}  // namespace boxlite::vmm
