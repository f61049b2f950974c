#include "engine/kvm/probe.hpp"

#include <boxlite/engine/kvm_engine.hpp>

#include "vmm/boot.hpp"
#include "vmm/layout.hpp"
#include "vmm/machine.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <thread>

namespace boxlite::vmm {
namespace {

/// Port I/O recorder: the probe guest's one write lands here.
class ProbePort final : public BusDevice {
public:
    void read(std::uint64_t, std::span<std::byte> data) override {
        for (auto& b : data) b = std::byte{0};
    }
    void write(std::uint64_t, std::span<const std::byte> data) override {
        if (!data.empty()) value = std::to_integer<std::uint8_t>(data[0]);
        if (on_write) on_write();
    }
    std::uint8_t value = 0;
    std::function<void()> on_write;
};

constexpr std::uint8_t kProbeValue = 0x64;

}  // namespace

BoxliteResult<void> probe_long_mode_support(const std::string& kvm_device) {
    if (kvm_device != "/dev/kvm")
        return fail(ErrorKind::UnsupportedEngine, "kvm: only /dev/kvm is supported (asked for {})", kvm_device);
    struct stat st {};
    if (::stat(kvm_device.c_str(), &st) != 0)
        return fail(ErrorKind::UnsupportedEngine, "kvm: no /dev/kvm on this host ({})", std::strerror(errno));
    const int fd = ::open(kvm_device.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        const int saved = errno;
        if (saved == EACCES || saved == EPERM)
            return fail(ErrorKind::UnsupportedEngine,
                        "kvm: no permission to open /dev/kvm (run as root or join the group that owns it)");
        return fail(ErrorKind::UnsupportedEngine, "kvm: cannot open /dev/kvm: {}", std::strerror(saved));
    }
    ::close(fd);
    return run_long_mode_probe_guest();
}

BoxliteResult<void> run_long_mode_probe_guest(bool page_table_cmpxchg16b) {
    MachineConfig config;
    config.memory_bytes = 4ULL << 20;
    config.irqchip = false;  // HLT must exit to us, so a probe can never hang
    auto created = Machine::create(config);
    if (!created) {
        auto error = created.error();
        return fail(ErrorKind::UnsupportedEngine, "kvm: cannot create a KVM virtual machine: {}", error.message());
    }
    Machine& machine = **created;
    // What a Linux kernel does early that some KVMs cannot: a locked CMPXCHG16B (SLUB's
    // double-word cmpxchg) on a page the host write-protects because it is a guest page table
    // (shadow paging emulates that write). Then the port write that says the probe got through.
    //   mov $kPml4+0xff0, %edi ; xor %eax,%eax ; xor %edx,%edx ; xor %ebx,%ebx ; xor %ecx,%ecx
    //   lock cmpxchg16b (%rdi)            — entries 510/511 of the PML4 are 0: 0 is stored again
    //   mov $kTestResultPort, %dx ; mov $kProbeValue, %al ; out %al, %dx ; hlt
    constexpr std::uint32_t kSlot = static_cast<std::uint32_t>(layout::kPml4 + 0xff0);
    const std::uint8_t code[] = {0xbf,
                                 static_cast<std::uint8_t>(kSlot & 0xff),
                                 static_cast<std::uint8_t>((kSlot >> 8) & 0xff),
                                 static_cast<std::uint8_t>((kSlot >> 16) & 0xff),
                                 static_cast<std::uint8_t>(kSlot >> 24),
                                 0x31,
                                 0xc0,
                                 0x31,
                                 0xd2,
                                 0x31,
                                 0xdb,
                                 0x31,
                                 0xc9,
                                 0xf0,
                                 0x48,
                                 0x0f,
                                 0xc7,
                                 0x0f,
                                 0x66,
                                 0xba,
                                 static_cast<std::uint8_t>(layout::kTestResultPort & 0xff),
                                 static_cast<std::uint8_t>(layout::kTestResultPort >> 8),
                                 0xb0,
                                 kProbeValue,
                                 0xee,
                                 0xf4};
    machine.memory().write_bytes(layout::kHighMemory, std::as_bytes(std::span(code)));
    BootInfo info;
    info.entry_kind = BootEntry::Linux64;
    // Without the CMPXCHG16B: start at the port write (the 18 bytes before it are that part).
    info.entry = layout::kHighMemory + (page_table_cmpxchg16b ? 0 : 18);
    if (auto set = setup_boot_vcpu(machine.vcpu(0), machine.memory(), info); !set)
        return fail(ErrorKind::UnsupportedEngine, "kvm: KVM refused the 64-bit vCPU state of the probe guest: {}",
                    set.error().message());
    auto port = std::make_shared<ProbePort>();
    port->on_write = [&machine] { machine.request_stop(StopReason::PowerOff, "probe reached its port write"); };
    (void)machine.pio_bus().insert(layout::kTestResultPort, 1, port);

    // A guard in case the vCPU spins without exiting.
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    std::thread guard([&] {
        std::unique_lock lock(mutex);
        if (!done_cv.wait_for(lock, std::chrono::seconds(2), [&] { return done; }))
            machine.request_stop(StopReason::HostStop, "the 64-bit probe guest did not finish within 2 s");
    });
    auto outcome = machine.run();
    {
        std::lock_guard lock(mutex);
        done = true;
    }
    done_cv.notify_one();
    guard.join();
    if (outcome && port->value == kProbeValue) return {};

    const std::string what = outcome ? fmt::format("{} ({})", outcome->detail, to_string(outcome->reason))
                                     : outcome.error().message();
    return fail(ErrorKind::UnsupportedEngine, "kvm: a 64-bit probe guest failed under /dev/kvm: {}", what);
}

const BoxliteResult<void>& cached_long_mode_support() {
    static const BoxliteResult<void> verdict = probe_long_mode_support();
    return verdict;
}

}  // namespace boxlite::vmm

namespace boxlite {

BoxliteResult<void> KvmEngine::available() const { return vmm::cached_long_mode_support(); }

}  // namespace boxlite
