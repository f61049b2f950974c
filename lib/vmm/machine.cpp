#include "vmm/machine.hpp"

#include "vmm/cpuid.hpp"
#include "vmm/layout.hpp"

#include <pthread.h>
#include <signal.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>

namespace boxlite::vmm {
namespace {

// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does nothing: the point is
// the EINTR. Installed once, without SA_RESTART.
int kick_signal() { return SIGRTMIN + 1; }

void install_kick_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction action {};
        action.sa_handler = [](int) {};
        sigemptyset(&action.sa_mask);
        action.sa_flags = 0;
        ::sigaction(kick_signal(), &action, nullptr);
    });
}

kvm_segment flat_segment(std::uint16_t selector, std::uint8_t type, bool code) {
    kvm_segment segment{};
    segment.base = 0;
    segment.limit = 0xffffffff;
    segment.selector = selector;
    segment.type = type;
    segment.present = 1;
    segment.dpl = 0;
    segment.db = 1;  // 32-bit
    segment.s = 1;   // code/data
    segment.l = 0;
    segment.g = 1;  // 4 KiB granularity
    (void)code;
    return segment;
}

}  // namespace

std::vector<std::pair<std::uint32_t, std::uint64_t>> architectural_msrs() {
    // What firmware leaves defined on every processor, BSP and APs alike (an AP's state is not
    // reset by INIT/SIPI to anything better): SYSENTER/SYSCALL entry points cleared, TSC 0 on
    // all of them at once (KVM treats writes this close together as a synchronisation), fast
    // string operations on, and MTRRs enabled with write-back as the default type — without
    // that Linux would map all RAM uncached.
    return {{msr::kSysenterCs, 0},
            {msr::kSysenterEsp, 0},
            {msr::kSysenterEip, 0},
            {msr::kStar, 0},
            {msr::kLstar, 0},
            {msr::kCstar, 0},
            {msr::kSyscallMask, 0},
            {msr::kKernelGsBase, 0},
            {msr::kTsc, 0},
            {msr::kMiscEnable, msr::kMiscEnableFastStrings},
            {msr::kMtrrDefType, msr::kMtrrDefTypeEnable | msr::kMtrrTypeWriteBack}};
}

Machine::Machine(MachineConfig config, Kvm kvm, Vm vm, GuestMemory memory)
    : config_(config), kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)) {}

Machine::~Machine() { request_stop(StopReason::HostStop, "machine destroyed"); }

BoxliteResult<std::unique_ptr<Machine>> Machine::create(const MachineConfig& config) {
    if (config.vcpus == 0 || config.vcpus > 64)
        return fail(ErrorKind::Config, "vCPU count {} is out of range (1..64)", config.vcpus);
    BOXLITE_TRY(auto kvm, Kvm::open());
    BOXLITE_TRY(auto vm, kvm.create_vm());
    BOXLITE_TRY(auto memory, GuestMemory::create(config.memory_bytes, layout::kMmioGapStart, layout::kHighRamStart));
    std::unique_ptr<Machine> machine(new Machine(config, std::move(kvm), std::move(vm), std::move(memory)));

    // Intel needs the TSS and identity-map pages for real-mode emulation; set them first.
    BOXLITE_TRY_VOID(machine->vm_.set_tss_address(layout::kKvmTss));
    (void)machine->vm_.set_identity_map_address(layout::kKvmIdentityMap);  // absent on AMD / PVM: fine
    std::uint32_t slot = 0;
    for (const auto& region : machine->memory_.regions())
        BOXLITE_TRY_VOID(machine->vm_.set_user_memory_region(slot++, region.guest_address, region.size, region.host));
    if (config.irqchip) {
        BOXLITE_TRY_VOID(machine->vm_.create_irqchip());
        BOXLITE_TRY_VOID(machine->vm_.create_pit());
    }
    BOXLITE_TRY(auto cpuid, machine->kvm_.supported_cpuid());
    CpuidOptions cpuid_options;
    cpuid_options.vcpu_count = config.vcpus;
    cpuid_options.irqchip = config.irqchip;
    cpuid_options.hide_cmpxchg16b = config.hide_cmpxchg16b;
    for (std::uint32_t id = 0; id < config.vcpus; ++id) {
        BOXLITE_TRY(auto vcpu, machine->vm_.create_vcpu(id));
        BOXLITE_TRY_VOID(vcpu->set_cpuid(guest_cpuid(cpuid, id, cpuid_options)));
        BOXLITE_TRY_VOID(vcpu->set_msrs(architectural_msrs()));
        if (config.irqchip) BOXLITE_TRY_VOID(vcpu->set_lapic_lint(true));
        machine->vcpus_.push_back(std::move(vcpu));
    }
    return machine;
}

BoxliteResult<void> Machine::setup_flat32(std::size_t vcpu_index, std::uint64_t entry) {
    if (vcpu_index >= vcpus_.size()) return fail(ErrorKind::InvalidArgument, "no vCPU {}", vcpu_index);
    Vcpu& vcpu = *vcpus_[vcpu_index];
    BOXLITE_TRY(auto sregs, vcpu.get_sregs());
    sregs.cs = flat_segment(0x08, 0xb, true);  // execute/read, accessed
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_segment(0x10, 0x3, false);
    sregs.cr0 = (sregs.cr0 | 1u) & ~(1ULL << 31);  // PE on, PG off
    sregs.cr4 = 0;
    sregs.efer = 0;
    BOXLITE_TRY_VOID(vcpu.set_sregs(sregs));
    kvm_regs regs{};
    regs.rip = entry;
    regs.rflags = 0x2;                  // bit 1 is reserved-one; interrupts off
    regs.rsp = layout::kTestGuestLoad;  // the stack grows down below the guest's code
    BOXLITE_TRY_VOID(vcpu.set_regs(regs));
    return {};
}

void Machine::request_stop(StopReason reason, std::string detail) {
    std::lock_guard lock(stop_mutex_);
    if (!stopping_.exchange(true)) {
        outcome_.reason = reason;
        outcome_.detail = std::move(detail);
    }
    for (auto& vcpu : vcpus_) vcpu->run_state().immediate_exit = 1;
    for (auto thread : threads_) ::pthread_kill(static_cast<pthread_t>(thread), kick_signal());
}

BoxliteResult<RunOutcome> Machine::run() {
    if (running_.exchange(true)) return fail(ErrorKind::InvalidState, "the machine is already running");
    install_kick_handler();
    // vCPU threads must take the kick signal even if the caller blocks it.
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, kick_signal());
    std::vector<std::thread> threads;
    std::vector<ExitStats> per_vcpu(vcpus_.size());
    {
        std::lock_guard lock(stop_mutex_);
        for (std::size_t i = 0; i < vcpus_.size(); ++i) {
            threads.emplace_back([this, i, kick] {
                ::pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);
                vcpu_loop(i);
            });
            threads_.push_back(static_cast<unsigned long>(threads.back().native_handle()));
        }
        // A stop requested before run() (or while we were starting) must still be honoured.
        if (stopping_)
            for (auto& vcpu : vcpus_) vcpu->run_state().immediate_exit = 1;
    }
    for (auto& thread : threads) thread.join();
    {
        std::lock_guard lock(stop_mutex_);
        threads_.clear();
    }
    running_ = false;
    return outcome_;
}

void Machine::vcpu_loop(std::size_t index) {
    Vcpu& vcpu = *vcpus_[index];
    kvm_run& run = vcpu.run_state();
    auto* base = reinterpret_cast<std::byte*>(&run);
    ExitStats local;
    while (!stopping_.load(std::memory_order_relaxed)) {
        if (auto ran = vcpu.run(); !ran) {
            request_stop(StopReason::Error, fmt::format("vCPU {}: {}", index, ran.error().message()));
            break;
        }
        ++local.total;
        switch (run.exit_reason) {
            case KVM_EXIT_IO: {
                ++local.pio;
                std::byte* data = base + run.io.data_offset;
                for (std::uint32_t i = 0; i < run.io.count; ++i, data += run.io.size) {
                    std::span<std::byte> bytes(data, run.io.size);
                    bool handled = run.io.direction == KVM_EXIT_IO_OUT ? pio_.write(run.io.port, bytes)
                                                                       : pio_.read(run.io.port, bytes);
                    if (!handled) {
                        ++local.unhandled;
                        if (run.io.direction == KVM_EXIT_IO_IN) std::memset(data, 0xff, run.io.size);
                    }
                }
                break;
            }
            case KVM_EXIT_MMIO: {
                ++local.mmio;
                const std::size_t length = std::min<std::size_t>(run.mmio.len, sizeof(run.mmio.data));
                std::span<std::byte> bytes(reinterpret_cast<std::byte*>(run.mmio.data), length);
                bool handled = run.mmio.is_write ? mmio_.write(run.mmio.phys_addr, bytes)
                                                 : mmio_.read(run.mmio.phys_addr, bytes);
                if (!handled) {
                    ++local.unhandled;
                    if (!run.mmio.is_write) std::memset(run.mmio.data, 0xff, length);
                }
                break;
            }
            case KVM_EXIT_INTR: break;  // a kick: the loop condition decides
            case KVM_EXIT_HLT: request_stop(StopReason::PowerOff, fmt::format("vCPU {} halted", index)); break;
            case KVM_EXIT_SHUTDOWN:
                request_stop(StopReason::Reset, fmt::format("vCPU {} shut down (triple fault)", index));
                break;
            case KVM_EXIT_SYSTEM_EVENT:
                request_stop(run.system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN ? StopReason::PowerOff
                                                                                : StopReason::Reset,
                             fmt::format("vCPU {}: system event {}", index, run.system_event.type));
                break;
            case KVM_EXIT_FAIL_ENTRY:
                request_stop(StopReason::Error, fmt::format("vCPU {}: VM entry failed, hardware reason {:#x}", index,
                                                            run.fail_entry.hardware_entry_failure_reason));
                break;
            case KVM_EXIT_INTERNAL_ERROR: {
                // Where it happened is what a reader of the log needs (for an emulation
                // failure, KVM could not decode or emulate the instruction at rip).
                auto regs = vcpu.get_regs();
                request_stop(StopReason::Error,
                             fmt::format("vCPU {}: KVM internal error, suberror {} ({}) at rip {:#x}", index,
                                         run.internal.suberror,
                                         run.internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? "emulation failure"
                                                                                               : "see linux/kvm.h",
                                         regs ? regs->rip : 0));
                break;
            }
            default:
                request_stop(StopReason::Error,
                             fmt::format("vCPU {}: unexpected exit reason {}", index, run.exit_reason));
                break;
        }
    }
    std::lock_guard lock(stop_mutex_);
    stats_.total += local.total;
    stats_.pio += local.pio;
    stats_.mmio += local.mmio;
    stats_.unhandled += local.unhandled;
}

}  // namespace boxlite::vmm
