#include "vmm/kvm.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace boxlite::vmm {

bool kvm_is_pvm() {
    struct stat st {};
    return ::stat("/sys/module/kvm_pvm", &st) == 0;
}
namespace {

template <class Arg>
int do_ioctl(int fd, unsigned long request, Arg arg) {
    int rc;
    do {
        rc = ::ioctl(fd, request, arg);
    } while (rc < 0 && errno == EINTR && request != KVM_RUN);
    return rc;
}

// The uapi's kvm_cpuid2 and kvm_msrs end in __DECLARE_FLEX_ARRAY, which in C++ adds an empty
// struct member of size 1: sizeof() and the entries' offset then differ from the kernel's (12/16
// instead of 8), and so does the size encoded in the ioctl numbers. We lay the headers out
// ourselves and spell those ioctls with the kernel's 8-byte header.
struct FlexHeader {
    std::uint32_t count;
    std::uint32_t padding;
};
static_assert(sizeof(FlexHeader) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, FlexHeader);
constexpr std::size_t kMaxCpuidEntries = 256;  // KVM_MAX_CPUID_ENTRIES
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);

// Header followed by `count` entries, 8-byte aligned (the entries hold u64s).
template <class Entry>
class FlexBuffer {
public:
    // A plain array (never null, never empty) rather than std::vector: GCC's -Wnull-dereference
    // cannot prove a vector of computed size non-empty at -O3.
    explicit FlexBuffer(std::size_t count)
        : words_(new std::uint64_t[(sizeof(FlexHeader) + count * sizeof(Entry) + 7) / 8]()) {
        words_[0] = count;  // FlexHeader{count, padding 0}, little-endian
    }
    [[nodiscard]] std::uint32_t count() const { return static_cast<std::uint32_t>(words_[0]); }
    Entry* entries() { return reinterpret_cast<Entry*>(words_.get() + 1); }
    void* data() { return words_.get(); }

private:
    std::unique_ptr<std::uint64_t[]> words_;
};

tl::unexpected<BoxliteError> ioctl_error(std::string_view name) {
    const int error_number = errno;  // before anything else can touch it
    return fail_errno(ErrorKind::Engine, fmt::format("KVM ioctl {}", name), error_number);
}

}  // namespace

// ---- Kvm -----------------------------------------------------------------------------------

BoxliteResult<Kvm> Kvm::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::UnsupportedEngine, fmt::format("opening {}", path), errno);
    Kvm kvm{base::OwnedFd(fd)};
    int version = do_ioctl(fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return fail(ErrorKind::UnsupportedEngine, "{} speaks KVM API version {}, we need {}", path, version,
                    KVM_API_VERSION);
    return kvm;
}

int Kvm::check_extension(int capability) const noexcept {
    int rc = do_ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
    return rc < 0 ? 0 : rc;
}

BoxliteResult<CpuidTable> Kvm::supported_cpuid() const {
    constexpr std::size_t kMaxEntries = kMaxCpuidEntries;
    FlexBuffer<kvm_cpuid_entry2> cpuid(kMaxEntries);
    if (do_ioctl(fd_.get(), kGetSupportedCpuid, cpuid.data()) < 0) return ioctl_error("KVM_GET_SUPPORTED_CPUID");
    CpuidTable table;
    const std::uint32_t count = std::min<std::uint32_t>(cpuid.count(), kMaxEntries);
    table.entries.assign(cpuid.entries(), cpuid.entries() + count);
    return table;
}

BoxliteResult<Vm> Kvm::create_vm() const {
    int run_size = do_ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0) return ioctl_error("KVM_GET_VCPU_MMAP_SIZE");
    int fd = do_ioctl(fd_.get(), KVM_CREATE_VM, 0);
    if (fd < 0) return ioctl_error("KVM_CREATE_VM");
    return Vm(base::OwnedFd(fd), static_cast<std::size_t>(run_size));
}

// ---- Vm ------------------------------------------------------------------------------------

BoxliteResult<void> Vm::set_user_memory_region(std::uint32_t slot, std::uint64_t guest_address, std::uint64_t size,
                                               void* host) {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.guest_phys_addr = guest_address;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    if (do_ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) return ioctl_error("KVM_SET_USER_MEMORY_REGION");
    return {};
}

BoxliteResult<void> Vm::create_irqchip() {
    if (do_ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) return ioctl_error("KVM_CREATE_IRQCHIP");
    return {};
}

BoxliteResult<void> Vm::create_pit() {
    kvm_pit_config config{};
    config.flags = KVM_PIT_SPEAKER_DUMMY;
    if (do_ioctl(fd_.get(), KVM_CREATE_PIT2, &config) < 0) return ioctl_error("KVM_CREATE_PIT2");
    return {};
}

BoxliteResult<void> Vm::set_tss_address(std::uint64_t address) {
    if (do_ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(address)) < 0)
        return ioctl_error("KVM_SET_TSS_ADDR");
    return {};
}

BoxliteResult<void> Vm::set_identity_map_address(std::uint64_t address) {
    std::uint64_t value = address;
    if (do_ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &value) < 0) return ioctl_error("KVM_SET_IDENTITY_MAP_ADDR");
    return {};
}

BoxliteResult<void> Vm::register_irqfd(int event_fd, std::uint32_t gsi) {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<std::uint32_t>(event_fd);
    irqfd.gsi = gsi;
    if (do_ioctl(fd_.get(), KVM_IRQFD, &irqfd) < 0) return ioctl_error("KVM_IRQFD");
    return {};
}

BoxliteResult<void> Vm::register_ioeventfd(int event_fd, std::uint64_t address, std::uint32_t length,
                                           std::optional<std::uint64_t> datamatch, bool pio) {
    kvm_ioeventfd ioeventfd{};
    ioeventfd.addr = address;
    ioeventfd.len = length;
    ioeventfd.fd = event_fd;
    if (datamatch) {
        ioeventfd.datamatch = *datamatch;
        ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
    if (pio) ioeventfd.flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (do_ioctl(fd_.get(), KVM_IOEVENTFD, &ioeventfd) < 0) return ioctl_error("KVM_IOEVENTFD");
    return {};
}

BoxliteResult<void> Vm::set_irq_line(std::uint32_t irq, bool level) {
    kvm_irq_level line{};
    line.irq = irq;
    line.level = level ? 1 : 0;
    if (do_ioctl(fd_.get(), KVM_IRQ_LINE, &line) < 0) return ioctl_error("KVM_IRQ_LINE");
    return {};
}

BoxliteResult<std::unique_ptr<Vcpu>> Vm::create_vcpu(std::uint32_t id) {
    int fd = do_ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
    if (fd < 0) return ioctl_error("KVM_CREATE_VCPU");
    base::OwnedFd owned(fd);
    void* run = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED) return fail_errno(ErrorKind::Engine, "mapping the vCPU's kvm_run page", errno);
    return std::unique_ptr<Vcpu>(new Vcpu(std::move(owned), id, static_cast<kvm_run*>(run), run_size_));
}

// ---- Vcpu ----------------------------------------------------------------------------------

Vcpu::~Vcpu() { ::munmap(run_, run_size_); }

BoxliteResult<void> Vcpu::run() {
    if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            run_->exit_reason = KVM_EXIT_INTR;
            return {};
        }
        return ioctl_error("KVM_RUN");
    }
    return {};
}

BoxliteResult<kvm_regs> Vcpu::get_regs() const {
    kvm_regs regs{};
    if (do_ioctl(fd_.get(), KVM_GET_REGS, &regs) < 0) return ioctl_error("KVM_GET_REGS");
    return regs;
}

BoxliteResult<void> Vcpu::set_regs(const kvm_regs& regs) {
    if (do_ioctl(fd_.get(), KVM_SET_REGS, &regs) < 0) return ioctl_error("KVM_SET_REGS");
    return {};
}

BoxliteResult<kvm_sregs> Vcpu::get_sregs() const {
    kvm_sregs sregs{};
    if (do_ioctl(fd_.get(), KVM_GET_SREGS, &sregs) < 0) return ioctl_error("KVM_GET_SREGS");
    return sregs;
}

BoxliteResult<void> Vcpu::set_sregs(const kvm_sregs& sregs) {
    if (do_ioctl(fd_.get(), KVM_SET_SREGS, &sregs) < 0) return ioctl_error("KVM_SET_SREGS");
    return {};
}

BoxliteResult<void> Vcpu::set_fpu(const kvm_fpu& fpu) {
    if (do_ioctl(fd_.get(), KVM_SET_FPU, &fpu) < 0) return ioctl_error("KVM_SET_FPU");
    return {};
}

BoxliteResult<void> Vcpu::set_cpuid(const CpuidTable& table) {
    FlexBuffer<kvm_cpuid_entry2> cpuid(table.entries.size());
    std::memcpy(cpuid.entries(), table.entries.data(), table.entries.size() * sizeof(kvm_cpuid_entry2));
    if (do_ioctl(fd_.get(), kSetCpuid2, cpuid.data()) < 0) return ioctl_error("KVM_SET_CPUID2");
    return {};
}

BoxliteResult<CpuidTable> Vcpu::get_cpuid() const {
    FlexBuffer<kvm_cpuid_entry2> cpuid(kMaxCpuidEntries);
    if (do_ioctl(fd_.get(), kGetCpuid2, cpuid.data()) < 0) return ioctl_error("KVM_GET_CPUID2");
    CpuidTable table;
    const std::uint32_t count = std::min<std::uint32_t>(cpuid.count(), kMaxCpuidEntries);
    table.entries.assign(cpuid.entries(), cpuid.entries() + count);
    return table;
}

BoxliteResult<void> Vcpu::set_msrs(const std::vector<std::pair<std::uint32_t, std::uint64_t>>& msrs) {
    FlexBuffer<kvm_msr_entry> buffer(msrs.size());
    for (std::size_t i = 0; i < msrs.size(); ++i) {
        buffer.entries()[i] = kvm_msr_entry{};
        buffer.entries()[i].index = msrs[i].first;
        buffer.entries()[i].data = msrs[i].second;
    }
    int rc = do_ioctl(fd_.get(), kSetMsrs, buffer.data());
    if (rc < 0) return ioctl_error("KVM_SET_MSRS");
    if (static_cast<std::size_t>(rc) != msrs.size())
        return fail(ErrorKind::Engine, "KVM_SET_MSRS accepted {} of {} MSRs (MSR {:#x} refused)", rc, msrs.size(),
                    msrs[static_cast<std::size_t>(rc)].first);
    return {};
}

BoxliteResult<std::vector<std::pair<std::uint32_t, std::uint64_t>>> Vcpu::get_msrs(
    const std::vector<std::uint32_t>& indices) const {
    FlexBuffer<kvm_msr_entry> buffer(indices.size());
    for (std::size_t i = 0; i < indices.size(); ++i) {
        buffer.entries()[i] = kvm_msr_entry{};
        buffer.entries()[i].index = indices[i];
    }
    int rc = do_ioctl(fd_.get(), kGetMsrs, buffer.data());
    if (rc < 0) return ioctl_error("KVM_GET_MSRS");
    std::vector<std::pair<std::uint32_t, std::uint64_t>> out;
    for (int i = 0; i < rc && static_cast<std::size_t>(i) < indices.size(); ++i)
        out.emplace_back(buffer.entries()[i].index, buffer.entries()[i].data);
    return out;
}

BoxliteResult<void> Vcpu::set_lapic_lint(bool enable_extint_nmi) {
    // LINT0 = ExtINT (the legacy PIC's output), LINT1 = NMI, as a BIOS leaves them.
    kvm_lapic_state lapic{};
    if (do_ioctl(fd_.get(), KVM_GET_LAPIC, &lapic) < 0) return ioctl_error("KVM_GET_LAPIC");
    constexpr std::size_t kLvtLint0 = 0x350, kLvtLint1 = 0x360;
    auto set_mode = [&](std::size_t reg, std::uint32_t mode) {
        std::uint32_t value;
        std::memcpy(&value, lapic.regs + reg, 4);
        value = (value & ~0x700u) | (mode << 8);
        if (!enable_extint_nmi) value |= 1u << 16;  // masked
        std::memcpy(lapic.regs + reg, &value, 4);
    };
    set_mode(kLvtLint0, 0x7);  // ExtINT
    set_mode(kLvtLint1, 0x4);  // NMI
    if (do_ioctl(fd_.get(), KVM_SET_LAPIC, &lapic) < 0) return ioctl_error("KVM_SET_LAPIC");
    return {};
}

}  // namespace boxlite::vmm
