// VMM benchmarks.
//
//  - Exit dispatch: the exit_loop tiny guest does N port writes, each a VM exit. "ours" runs
//    it with Machine::run (vCPU thread, exit decoding, Bus lookup, device call); "peer" runs the
//    same guest in an identically set-up VM with the barest loop possible (KVM_RUN, check the
//    port, repeat). Both run interleaved in this process, pinned to one host CPU for the
//    reported ratio (per-exit time), then unpinned.
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
#include "vmm/kvm.hpp"  // kvm_is_pvm()
#include "vmm/file.hpp"
#include "vmm/layout.hpp"
#include "vmm/machine.hpp"

#include <benchmark/benchmark.h>

#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
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

/// A VM with the guest loaded, or why there is none.
BoxliteResult<std::unique_ptr<Machine>> prepared_machine(const std::vector<std::byte>& guest) {
    MachineConfig config;
    config.memory_bytes = 4ULL << 20;
    BOXLITE_TRY(auto machine, Machine::create(config));
    machine->memory().write_bytes(layout::kTestGuestLoad, guest);
    machine->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch, kExitsPerRun);
    BOXLITE_TRY_VOID(machine->setup_flat32(0, layout::kTestGuestLoad));
    return machine;
}

/// Per run of kExitsPerRun exits: wall time, and the process's user-mode CPU time — where our
/// dispatch runs (the exit itself is kernel time), so the user-time difference is our overhead
/// without the noise other processes add to wall time on a loaded machine. `failure` says why
/// the run did not complete (then the times mean nothing).
struct ExitRun {
    std::string failure;
    double wall_ns = 0;
    double user_ns = 0;
};

double user_cpu_ns() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec) * 1e9 + static_cast<double>(usage.ru_utime.tv_usec) * 1e3;
}

/// Why KVM may not run the guest here, for a failure message.
std::string host_note() { return kvm_is_pvm() ? " (this host's KVM is kvm_pvm, which runs only some guests)" : ""; }

/// Through Machine::run and the Bus.
ExitRun ours_run(const std::vector<std::byte>& guest) {
    auto machine = prepared_machine(guest);
    if (!machine) return {"could not set up the VM: " + machine.error().to_string() + host_note()};
    (void)(*machine)->pio_bus().insert(layout::kTestResultPort, 4, std::make_shared<NullPort>());
    (void)(*machine)->pio_bus().insert(layout::kAcpiSleepControlPort, 1, std::make_shared<PowerOff>(**machine));
    const double user = user_cpu_ns();
    const auto start = std::chrono::steady_clock::now();
    auto outcome = (*machine)->run();
    const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    if (!outcome) return {"Machine::run failed: " + outcome.error().to_string() + host_note()};
    if (outcome->reason != StopReason::PowerOff) {
        return {fmt::format("the guest stopped with {} ({}) instead of powering off{}", to_string(outcome->reason),
                            outcome->detail, host_note())};
    }
    return {{}, ns, user_cpu_ns() - user};
}

/// The barest KVM_RUN loop on the same VM set-up.
ExitRun bare_run(const std::vector<std::byte>& guest) {
    auto machine = prepared_machine(guest);
    if (!machine) return {"could not set up the VM: " + machine.error().to_string() + host_note()};
    Vcpu& vcpu = (*machine)->vcpu(0);
    kvm_run& run = vcpu.run_state();
    const double user = user_cpu_ns();
    const auto start = std::chrono::steady_clock::now();
    for (std::uint32_t exits = 0;; ++exits) {
        if (::ioctl(vcpu.fd(), KVM_RUN, 0) != 0) {
            return {fmt::format("KVM_RUN failed after {} exits: {}{}", exits, std::strerror(errno), host_note())};
        }
        if (run.exit_reason != KVM_EXIT_IO) {
            return {
                fmt::format("exit reason {} after {} exits, expected port I/O{}", run.exit_reason, exits, host_note())};
        }
        if (run.io.port == layout::kAcpiSleepControlPort) break;
    }
    const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    return {{}, ns, user_cpu_ns() - user};
}

void exit_dispatch_benchmark(benchmark::State& state, ExitRun (*run)(const std::vector<std::byte>&)) {
    const auto guest = exit_loop_guest();
    if (guest.empty()) return state.SkipWithError("tests/guests/exit_loop.bin was not built");
    for (auto _ : state) {
        const auto result = run(guest);
        if (!result.failure.empty()) return state.SkipWithError(result.failure.c_str());
        state.SetIterationTime(result.wall_ns / 1e9);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kExitsPerRun);
}

void BM_ExitDispatchOurs(benchmark::State& state) { exit_dispatch_benchmark(state, ours_run); }
BENCHMARK(BM_ExitDispatchOurs)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_ExitDispatchBareKvmRun(benchmark::State& state) { exit_dispatch_benchmark(state, bare_run); }
BENCHMARK(BM_ExitDispatchBareKvmRun)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

// ---- virtio-blk ---------------------------------------------------------------------------------

struct BlkRig {
    vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, 16ULL << 20));
    std::shared_ptr<devices::testing::MemoryBackend> backend = std::make_shared<devices::testing::MemoryBackend>(64ULL
                                                                                                                 << 20);
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
    std::string failure;  ///< why the run did not complete; empty when it did
    bool ok() const { return failure.empty(); }
    std::uint64_t userspace_exits = 0;
    std::uint64_t mmio_notifies = 0;
    double ns = 0;
};

/// `interrupts`: the guest halts until the completion interrupt (as Linux waits) instead of polling.
GuestBlkRun run_blk_guest(const std::vector<std::byte>& guest, bool ioeventfd, bool interrupts,
                          std::uint32_t requests) {
    GuestBlkRun result;
    auto fail = [&](std::string why) {
        result.failure = std::move(why);
        return result;
    };
    MachineConfig config;
    config.memory_bytes = 16ULL << 20;
    auto machine = Machine::create(config);
    if (!machine) return fail("could not set up the VM: " + machine.error().to_string());
    DeviceManager devices(**machine, DeviceManagerOptions{.ioeventfd = ioeventfd});
    if (auto added = devices.add_legacy_devices(nullptr); !added) {
        return fail("could not add the legacy devices: " + added.error().to_string());
    }
    auto blk = std::make_shared<devices::virtio::BlockDevice>(std::make_shared<devices::testing::MemoryBackend>(1
                                                                                                                << 20),
                                                              "bench");
    auto slot = devices.add_virtio_device(blk);
    if (!slot) return fail("could not add the virtio-blk device: " + slot.error().to_string());
    (void)(*machine)->pio_bus().insert(layout::kTestResultPort, 4, std::make_shared<NullPort>());
    (*machine)->memory().write_bytes(layout::kTestGuestLoad, guest);
    (*machine)->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch, requests);
    (*machine)->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch + 4, interrupts ? 1 : 0);
    // kvm_pvm cannot emulate a 32-bit iret: there the handler jumps back into the wait loop.
    (*machine)->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch + 8, kvm_is_pvm() ? 0 : 1);
    if (auto set_up = (*machine)->setup_flat32(0, layout::kTestGuestLoad); !set_up) {
        return fail("could not set up the vCPU: " + set_up.error().to_string());
    }
    const auto start = std::chrono::steady_clock::now();
    auto outcome = (*machine)->run();
    result.ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    devices.stop_event_loop();
    if (!outcome) {
        result.failure = "Machine::run failed: " + outcome.error().to_string();
    } else if (outcome->reason != StopReason::PowerOff) {
        result.failure = fmt::format("the guest stopped with {} ({}) instead of powering off",
                                     to_string(outcome->reason), outcome->detail);
    } else if (blk->stats().reads != requests) {
        result.failure = fmt::format("the device served {} reads, the guest asked for {}", blk->stats().reads,
                                     requests);
    }
    result.userspace_exits = (*machine)->stats().total;
    result.mmio_notifies = slot->transport->mmio_notifies();
    return result;
}

/// Per request, from a run of `requests` minus a run of none (the handshake's exits and the
/// VM's start-up cost cancel out). Medians of `runs` interleaved runs of the four variants.
void report_guest_blk(const std::vector<std::byte>& guest) {
    const std::string name =
        "virtio-blk request from a guest waiting for its interrupt (ours: ioeventfd, peer: MMIO-exit notify)";
    if (!bench::selected(name)) return;
    constexpr std::uint32_t kRequests = 2000;
    const int runs = bench::peer_runs(7);
    struct Samples {
        std::vector<double> exits, ns;
    } samples[2][2];  // [interrupts][ioeventfd]
    for (int i = 0; i < runs; ++i) {
        for (bool interrupts : {false, true}) {
            for (bool ioeventfd : {true, false}) {
                auto base = run_blk_guest(guest, ioeventfd, interrupts, 0);
                auto full = run_blk_guest(guest, ioeventfd, interrupts, kRequests);
                if (!base.ok() || !full.ok()) {
                    return bench::report_no_ratio(
                        name, fmt::format("the blk_loop guest ({}, QueueNotify {}) failed under KVM here: {}{}",
                                          interrupts ? "interrupt-driven" : "polling",
                                          ioeventfd ? "via ioeventfd" : "as MMIO exit",
                                          base.ok() ? full.failure : base.failure, host_note()));
                }
                auto& s = samples[interrupts][ioeventfd];
                s.exits.push_back(static_cast<double>(full.userspace_exits - base.userspace_exits) / kRequests);
                s.ns.push_back((full.ns - base.ns) / kRequests);
            }
        }
    }
    fmt::print(
        "virtio-blk 512 B reads from the blk_loop guest, median [interquartile range] of {} interleaved runs "
        "of {} requests:\n",
        runs, kRequests);
    for (bool interrupts : {false, true}) {
        for (bool ioeventfd : {true, false}) {
            const auto& s = samples[interrupts][ioeventfd];
            const auto exits = test::summarize(s.exits);
            const auto ns = test::summarize(s.ns);
            fmt::print("  {}, QueueNotify {}: {:.2f} userspace exits/request, {:.1f} us/request [{:.1f}–{:.1f}]\n",
                       interrupts ? "interrupt-driven" : "polling", ioeventfd ? "via ioeventfd" : "as MMIO exit",
                       exits.median, ns.median / 1000, ns.q1 / 1000, ns.q3 / 1000);
        }
    }
    bench::report_comparison(name, bench::Pairs{samples[1][1].ns, samples[1][0].ns, {}}, {1, "request", {}});
}

/// The exit-dispatch comparison: interleaved runs, per-exit time, once pinned to one host CPU
/// and once free to migrate. Measured here: under kvm_pvm a vCPU that moves between host CPUs
/// pays more for it than for the exit itself, so unpinned runs on a loaded machine measure the
/// scheduler, not the dispatch. Also the fastest run of each (least disturbed) and user-mode CPU
/// per exit, where our dispatch runs.
void compare_exit_dispatch() {
    const auto guest = exit_loop_guest();
    cpu_set_t all;
    ::sched_getaffinity(0, sizeof(all), &all);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(::sched_getcpu(), &one);
    for (bool pinned : {true, false}) {
        const std::string name = pinned ? "vmm exit dispatch, pinned to one CPU (peer: bare KVM_RUN loop)"
                                        : "vmm exit dispatch, unpinned (peer: bare KVM_RUN loop)";
        if (!bench::selected(name)) continue;
        if (guest.empty()) {
            bench::report_no_ratio(name, "tests/guests/exit_loop.bin was not built");
            continue;
        }
        ::sched_setaffinity(0, sizeof(pinned ? one : all), pinned ? &one : &all);
        std::vector<double> ours_user, bare_user;
        auto side = [&](ExitRun (*run)(const std::vector<std::byte>&), std::vector<double>& user) {
            return [&guest, run, &user](double& ns) {
                const auto result = run(guest);
                ns = result.wall_ns;
                if (result.failure.empty()) user.push_back(result.user_ns);
                return result.failure;
            };
        };
        const auto pairs = bench::measure_interleaved_timed(bench::peer_runs(15), side(ours_run, ours_user),
                                                            side(bare_run, bare_user));
        ::sched_setaffinity(0, sizeof(all), &all);
        bench::report_comparison(name, pairs, {kExitsPerRun, "exit", {}});
        if (!pairs.failure.empty()) continue;
        const auto ours = test::summarize(pairs.ours_ns);
        const auto bare = test::summarize(pairs.peer_ns);
        fmt::print(
            "  fastest run: ours {:.1f} us/exit, bare {:.1f} us/exit, ratio {:.2f}; user-mode CPU per exit "
            "(medians, check runs included): ours {:.2f} us, bare {:.2f} us\n",
            ours.min / kExitsPerRun / 1000, bare.min / kExitsPerRun / 1000, ours.min / bare.min,
            test::median(ours_user) / kExitsPerRun / 1000, test::median(bare_user) / kExitsPerRun / 1000);
        std::fflush(stdout);
    }
}

}  // namespace

int main(int argc, char** argv) {
    return bench::main(argc, argv, [] {
        compare_exit_dispatch();
        if (const auto blk_guest = blk_loop_guest(); !blk_guest.empty()) {
            report_guest_blk(blk_guest);
        } else {
            bench::report_no_ratio("virtio-blk request from a guest", "tests/guests/blk_loop.bin was not built");
        }
    });
}
