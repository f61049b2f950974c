// VMM benchmarks.
//
//  - Exit dispatch: the exit_loop tiny guest does N port writes, each a VM exit. "ours" runs
//    it with Machine::run (vCPU thread, exit decoding, Bus lookup, device call); "peer" runs the
//    same guest in an identically set-up VM with the barest loop possible (KVM_RUN, check the
//    port, repeat). Both run interleaved in this process; the ratio is per-exit time.
//  - virtio-blk: 4 KiB read and write requests through VirtQueue + BlockDevice over
//    in-process guest memory and an in-memory backend: requests per second.
//  - virtio-blk from a guest: the blk_loop tiny guest issues one-sector reads under real KVM
//    (in-memory disk), with QueueNotify served by an ioeventfd or, the fallback, as an MMIO
//    exit: exits that reach userspace per request and wall time per request, interleaved.
#include "harness.hpp"

#include "devices/memory_backend.hpp"
#include "devices/virtqueue_driver.hpp"

#include "devices/virtio/blk/device.hpp"
#include "vmm/device_manager.hpp"
#include "vmm/file.hpp"
#include "vmm/layout.hpp"
#include "vmm/machine.hpp"

#include <benchmark/benchmark.h>

#include <sys/ioctl.h>

#include <fstream>
#include <iterator>

using namespace boxlite;
using namespace boxlite::vmm;

namespace {

constexpr std::uint32_t kExitsPerRun = 20000;

std::vector<std::byte> exit_loop_guest() {
    return read_file_bytes(std::string(BOXLITE_TEST_GUEST_DIR) + "/exit_loop.bin").value_or(std::vector<std::byte>{});
}

class NullPort final : public BusDevice {
public:
    void read(std::uint64_t, std::span<std::byte> data) override { std::fill(data.begin(), data.end(), std::byte{0}); }
    void write(std::uint64_t, std::span<const std::byte> data) override { last = data.empty() ? 0 : 1; }
    int last = 0;
};

class PowerOff final : public BusDevice {
public:
    explicit PowerOff(Machine& m) : machine(m) {}
    void read(std::uint64_t, std::span<std::byte>) override {}
    void write(std::uint64_t, std::span<const std::byte>) override {
        machine.request_stop(StopReason::PowerOff, "done");
    }
    Machine& machine;
};

std::unique_ptr<Machine> prepared_machine(const std::vector<std::byte>& guest) {
    MachineConfig config;
    config.memory_bytes = 4ULL << 20;
    auto machine = Machine::create(config);
    if (!machine) return nullptr;
    (*machine)->memory().write_bytes(layout::kTestGuestLoad, guest);
    (*machine)->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch, kExitsPerRun);
    if (!(*machine)->setup_flat32(0, layout::kTestGuestLoad)) return nullptr;
    return std::move(*machine);
}

/// Nanoseconds per exit through Machine::run and the Bus.
double ours_ns_per_exit(const std::vector<std::byte>& guest) {
    auto machine = prepared_machine(guest);
    if (!machine) return 0;
    (void)machine->pio_bus().insert(layout::kTestResultPort, 4, std::make_shared<NullPort>());
    (void)machine->pio_bus().insert(layout::kAcpiSleepControlPort, 1, std::make_shared<PowerOff>(*machine));
    const auto start = std::chrono::steady_clock::now();
    auto outcome = machine->run();
    const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    return outcome && outcome->reason == StopReason::PowerOff ? ns / kExitsPerRun : 0;
}

/// Nanoseconds per exit with the barest KVM_RUN loop on the same VM set-up.
double bare_ns_per_exit(const std::vector<std::byte>& guest) {
    auto machine = prepared_machine(guest);
    if (!machine) return 0;
    Vcpu& vcpu = machine->vcpu(0);
    kvm_run& run = vcpu.run_state();
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        if (::ioctl(vcpu.fd(), KVM_RUN, 0) != 0) return 0;
        if (run.exit_reason != KVM_EXIT_IO) return 0;
        if (run.io.port == layout::kAcpiSleepControlPort) break;
    }
    const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    return ns / kExitsPerRun;
}

void BM_ExitDispatchOurs(benchmark::State& state) {
    const auto guest = exit_loop_guest();
    if (guest.empty()) return state.SkipWithError("tests/guests/exit_loop.bin was not built");
    for (auto _ : state) {
        const double ns = ours_ns_per_exit(guest);
        if (ns == 0) return state.SkipWithError("KVM cannot run the tiny guest here");
        state.SetIterationTime(ns * kExitsPerRun / 1e9);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kExitsPerRun);
}
BENCHMARK(BM_ExitDispatchOurs)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_ExitDispatchBareKvmRun(benchmark::State& state) {
    const auto guest = exit_loop_guest();
    if (guest.empty()) return state.SkipWithError("tests/guests/exit_loop.bin was not built");
    for (auto _ : state) {
        const double ns = bare_ns_per_exit(guest);
        if (ns == 0) return state.SkipWithError("KVM cannot run the tiny guest here");
        state.SetIterationTime(ns * kExitsPerRun / 1e9);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kExitsPerRun);
}
BENCHMARK(BM_ExitDispatchBareKvmRun)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

// ---- virtio-blk ---------------------------------------------------------------------------------

struct BlkRig {
    vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, 16ULL << 20));
    std::shared_ptr<devices::testing::MemoryBackend> backend =
        std::make_shared<devices::testing::MemoryBackend>(64ULL << 20);
    devices::virtio::BlockDevice device{backend, "bench"};
    devices::virtio::VirtQueue queues[1] = {devices::virtio::VirtQueue(256)};
    devices::virtio::testing::VirtQueueDriver driver{memory, 0x10000, 256};
    devices::virtio::testing::CountingInterrupt interrupt;
    BlkRig() {
        driver.configure(queues[0], devices::virtio::kFeatureVersion1 | devices::virtio::kFeatureRingEventIdx);
        (void)device.activate({&memory, queues, &interrupt, device.device_features()});
    }
};

void BM_VirtioBlk4K(benchmark::State& state) {
    const bool write = state.range(0) != 0;
    constexpr int kBatch = 32;
    BlkRig rig;
    struct Header {
        std::uint32_t type, reserved;
        std::uint64_t sector;
    };
    std::uint64_t sector = 0;
    for (auto _ : state) {
        for (int i = 0; i < kBatch; ++i) {
            const std::uint64_t header = 0x100000 + i * 64;
            const std::uint64_t data = 0x200000 + i * 4096;
            rig.memory.write_obj(header, Header{write ? 1u : 0u, 0, sector});
            sector = (sector + 8) % ((64ULL << 20) / 512 - 8);
            rig.driver.add_chain({{header, 16, false}, {data, 4096, !write}, {header + 32, 1, true}});
        }
        rig.device.queue_notify(0);
        benchmark::DoNotOptimize(rig.driver.take_used());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kBatch);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * kBatch * 4096);
}
BENCHMARK(BM_VirtioBlk4K)->Arg(0)->Arg(1)->ArgNames({"write"});

// ---- virtio-blk from a tiny guest -----------------------------------------------------------

std::vector<std::byte> blk_loop_guest() {
    return read_file_bytes(std::string(BOXLITE_TEST_GUEST_DIR) + "/blk_loop.bin").value_or(std::vector<std::byte>{});
}

struct GuestBlkRun {
    bool ok = false;
    std::uint64_t userspace_exits = 0;
    std::uint64_t mmio_notifies = 0;
    double ns = 0;
};

GuestBlkRun run_blk_guest(const std::vector<std::byte>& guest, bool ioeventfd, std::uint32_t requests) {
    GuestBlkRun result;
    MachineConfig config;
    config.memory_bytes = 16ULL << 20;
    auto machine = Machine::create(config);
    if (!machine) return result;
    DeviceManager devices(**machine, DeviceManagerOptions{.ioeventfd = ioeventfd});
    if (!devices.add_legacy_devices(nullptr)) return result;
    auto blk = std::make_shared<devices::virtio::BlockDevice>(
        std::make_shared<devices::testing::MemoryBackend>(1 << 20), "bench");
    auto slot = devices.add_virtio_device(blk);
    if (!slot) return result;
    (void)(*machine)->pio_bus().insert(layout::kTestResultPort, 4, std::make_shared<NullPort>());
    (*machine)->memory().write_bytes(layout::kTestGuestLoad, guest);
    (*machine)->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch, requests);
    if (!(*machine)->setup_flat32(0, layout::kTestGuestLoad)) return result;
    const auto start = std::chrono::steady_clock::now();
    auto outcome = (*machine)->run();
    result.ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    devices.stop_event_loop();
    result.ok = outcome && outcome->reason == StopReason::PowerOff && blk->stats().reads == requests;
    result.userspace_exits = (*machine)->stats().total;
    result.mmio_notifies = slot->transport->mmio_notifies();
    return result;
}

/// Per request, from a run of `requests` minus a run of none (the handshake's exits and the
/// VM's start-up cost cancel out). Medians of `runs` interleaved pairs.
void report_guest_blk(const std::vector<std::byte>& guest) {
    constexpr std::uint32_t kRequests = 2000;
    constexpr int kRuns = 7;
    struct Samples {
        std::vector<double> exits, ns;
    } with_ioeventfd, with_mmio;
    for (int i = 0; i < kRuns; ++i) {
        for (bool ioeventfd : {true, false}) {
            auto base = run_blk_guest(guest, ioeventfd, 0);
            auto full = run_blk_guest(guest, ioeventfd, kRequests);
            if (!base.ok || !full.ok) {
                fmt::print("virtio-blk from a guest: the blk_loop guest failed under KVM here\n");
                return;
            }
            auto& samples = ioeventfd ? with_ioeventfd : with_mmio;
            samples.exits.push_back(static_cast<double>(full.userspace_exits - base.userspace_exits) / kRequests);
            samples.ns.push_back((full.ns - base.ns) / kRequests);
        }
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    fmt::print("virtio-blk 512 B reads from the blk_loop guest, medians of {} interleaved runs of {} requests:\n",
               kRuns, kRequests);
    fmt::print("  QueueNotify via ioeventfd: {:.2f} userspace exits/request, {:.1f} us/request\n",
               median(with_ioeventfd.exits), median(with_ioeventfd.ns) / 1000);
    fmt::print("  QueueNotify as MMIO exit:  {:.2f} userspace exits/request, {:.1f} us/request\n",
               median(with_mmio.exits), median(with_mmio.ns) / 1000);
    bench::report_peer("virtio-blk request from a guest (ours: ioeventfd, peer: MMIO-exit notify)",
                       median(with_ioeventfd.ns), median(with_mmio.ns));
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    // The peer comparison: interleaved runs, medians of per-exit time.
    const auto guest = exit_loop_guest();
    if (!guest.empty() && ours_ns_per_exit(guest) > 0) {
        std::vector<double> ours, bare;
        for (int i = 0; i < 7; ++i) {
            bare.push_back(bare_ns_per_exit(guest));
            ours.push_back(ours_ns_per_exit(guest));
        }
        std::sort(ours.begin(), ours.end());
        std::sort(bare.begin(), bare.end());
        bench::report_peer("vmm exit dispatch per exit (peer: bare KVM_RUN loop)", ours[ours.size() / 2],
                           bare[bare.size() / 2]);
    }
    if (const auto blk_guest = blk_loop_guest(); !blk_guest.empty()) report_guest_blk(blk_guest);
    benchmark::Shutdown();
    return 0;
}
