// The KVM run loop under the real /dev/kvm, driven by tiny 32-bit guests (tests/guests/).
#include "guest_helpers.hpp"

#include "devices/legacy/i8042.hpp"
#include "devices/legacy/uart8250.hpp"

#include <chrono>
#include <set>
#include <thread>
#include <vector>

namespace boxlite::vmm {
namespace {

using testing::load_tiny_guest;
using testing::RecordingDevice;

#define SKIP_WITHOUT_KVM()                                                                         \
    do {                                                                                           \
        if (auto reason = testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason; \
    } while (false)

std::unique_ptr<Machine> make_machine(bool irqchip = true) {
    MachineConfig config;
    config.memory_bytes = 16ULL << 20;
    config.irqchip = irqchip;
    auto machine = Machine::create(config);
    EXPECT_TRUE(machine) << (machine ? "" : machine.error().to_string());
    return machine ? std::move(*machine) : nullptr;
}

void add_power_off(Machine& machine) {
    auto power = std::make_shared<devices::AcpiSleepControl>(
        [&machine] { machine.request_stop(StopReason::PowerOff, "ACPI S5"); });
    ASSERT_TRUE(machine.pio_bus().insert(layout::kAcpiSleepControlPort, 2, power));
}

TEST(Machine, TinyGuestPrintsOnUartAndDispatchesPioAndMmio) {
    SKIP_WITHOUT_KVM();
    auto machine = make_machine();
    ASSERT_TRUE(machine);
    std::string console;
    std::mutex console_mutex;
    auto uart = std::make_shared<devices::Uart8250>(
        [&](std::span<const std::byte> bytes) {
            std::lock_guard lock(console_mutex);
            for (auto b : bytes) console.push_back(static_cast<char>(b));
        },
        nullptr);
    ASSERT_TRUE(machine->pio_bus().insert(layout::kCom1Port, layout::kCom1PortCount, uart));
    auto mmio = std::make_shared<RecordingDevice>(0xcafef00d);
    ASSERT_TRUE(machine->mmio_bus().insert(layout::kTestMmio, 0x1000, mmio));
    auto result_port = std::make_shared<RecordingDevice>();
    ASSERT_TRUE(machine->pio_bus().insert(layout::kTestResultPort, 4, result_port));
    add_power_off(*machine);
    load_tiny_guest(*machine, "hello.bin");

    auto outcome = machine->run();
    ASSERT_TRUE(outcome) << outcome.error().to_string();
    EXPECT_EQ(outcome->reason, StopReason::PowerOff) << outcome->detail;
    EXPECT_EQ(console, "hello from a tiny guest\n");

    auto mmio_accesses = mmio->accesses();
    ASSERT_EQ(mmio_accesses.size(), 3u);
    EXPECT_TRUE(mmio_accesses[0].write);
    EXPECT_EQ(mmio_accesses[0].offset, 0u);
    std::uint32_t written = 0;
    ASSERT_EQ(mmio_accesses[0].data.size(), 4u);
    std::memcpy(&written, mmio_accesses[0].data.data(), 4);
    EXPECT_EQ(written, 0x12345678u);
    EXPECT_FALSE(mmio_accesses[1].write);
    EXPECT_EQ(mmio_accesses[1].offset, 4u);
    EXPECT_EQ(mmio_accesses[2].offset, 8u);
    EXPECT_EQ(mmio_accesses[2].data.size(), 1u);

    auto results = result_port->accesses();
    ASSERT_EQ(results.size(), 2u);
    std::uint32_t reported = 0;
    ASSERT_EQ(results[0].data.size(), 4u);
    std::memcpy(&reported, results[0].data.data(), 4);
    EXPECT_EQ(reported, 0xcafef00du) << "the guest saw what the MMIO device answered";
    ASSERT_EQ(results[1].data.size(), 1u);
    EXPECT_EQ(results[1].data[0], std::byte{0x0d});
    EXPECT_GE(machine->stats().pio, 20u);
    EXPECT_EQ(machine->stats().mmio, 3u);
}

TEST(Machine, CountsEveryExitOfAnExitLoop) {
    SKIP_WITHOUT_KVM();
    auto machine = make_machine();
    ASSERT_TRUE(machine);
    auto result_port = std::make_shared<RecordingDevice>();
    ASSERT_TRUE(machine->pio_bus().insert(layout::kTestResultPort, 4, result_port));
    add_power_off(*machine);
    load_tiny_guest(*machine, "exit_loop.bin");
    ASSERT_TRUE(machine->memory().write_obj<std::uint32_t>(layout::kTestGuestScratch, 100));
    auto outcome = machine->run();
    ASSERT_TRUE(outcome) << outcome.error().to_string();
    EXPECT_EQ(outcome->reason, StopReason::PowerOff) << outcome->detail;
    auto accesses = result_port->accesses();
    ASSERT_EQ(accesses.size(), 100u);
    std::uint32_t first = 0, last = 0;
    std::memcpy(&first, accesses.front().data.data(), 4);
    std::memcpy(&last, accesses.back().data.data(), 4);
    EXPECT_EQ(first, 100u);
    EXPECT_EQ(last, 1u);
}

TEST(Machine, HostStopInterruptsASpinningGuest) {
    SKIP_WITHOUT_KVM();
    auto machine = make_machine();
    ASSERT_TRUE(machine);
    // jmp . — never exits on its own.
    const std::byte spin[] = {std::byte{0xeb}, std::byte{0xfe}};
    ASSERT_TRUE(machine->memory().write_bytes(layout::kTestGuestLoad, spin));
    ASSERT_TRUE(machine->setup_flat32(0, layout::kTestGuestLoad));
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        machine->request_stop(StopReason::HostStop, "test");
    });
    auto outcome = machine->run();
    stopper.join();
    ASSERT_TRUE(outcome) << outcome.error().to_string();
    EXPECT_EQ(outcome->reason, StopReason::HostStop);
}

TEST(Machine, HaltWithoutIrqchipAndI8042ResetStopTheMachine) {
    SKIP_WITHOUT_KVM();
    {
        auto machine = make_machine(/*irqchip=*/false);
        ASSERT_TRUE(machine);
        const std::byte hlt[] = {std::byte{0xf4}};
        ASSERT_TRUE(machine->memory().write_bytes(layout::kTestGuestLoad, hlt));
        ASSERT_TRUE(machine->setup_flat32(0, layout::kTestGuestLoad));
        auto outcome = machine->run();
        ASSERT_TRUE(outcome) << outcome.error().to_string();
        EXPECT_EQ(outcome->reason, StopReason::PowerOff) << outcome->detail;
    }
    {
        auto machine = make_machine();
        ASSERT_TRUE(machine);
        auto i8042 = std::make_shared<devices::I8042>([&] { machine->request_stop(StopReason::Reset, "i8042 reset"); });
        ASSERT_TRUE(machine->pio_bus().insert(layout::kI8042DataPort, 5, i8042));
        // mov $0xfe, %al; out %al, $0x64; jmp .
        const std::byte reset[] = {std::byte{0xb0}, std::byte{0xfe}, std::byte{0xe6},
                                   std::byte{0x64}, std::byte{0xeb}, std::byte{0xfe}};
        ASSERT_TRUE(machine->memory().write_bytes(layout::kTestGuestLoad, reset));
        ASSERT_TRUE(machine->setup_flat32(0, layout::kTestGuestLoad));
        auto outcome = machine->run();
        ASSERT_TRUE(outcome) << outcome.error().to_string();
        EXPECT_EQ(outcome->reason, StopReason::Reset) << outcome->detail;
    }
}

// vCPU 1 is an application processor: as on real hardware it waits for INIT and a start-up
// IPI. vCPU 0 (32-bit flat) sends both through its local APIC, then writes 0xa0 to the result
// port; vCPU 1 starts in real mode at the SIPI's page and writes 0xa1. Both bytes arriving
// proves both vCPUs ran on their threads. The host stops the machine once it has seen them (or
// after a deadline that only catches a hang).
TEST(Machine, RunsSeveralVcpusOnThreads) {
    SKIP_WITHOUT_KVM();
    MachineConfig config;
    config.memory_bytes = 16ULL << 20;
    config.vcpus = 2;
    auto machine = Machine::create(config);
    ASSERT_TRUE(machine) << machine.error().to_string();
    auto result_port = std::make_shared<RecordingDevice>();
    ASSERT_TRUE((*machine)->pio_bus().insert(layout::kTestResultPort, 4, result_port));

    constexpr std::uint32_t kIcrLow = 0x300, kIcrHigh = 0x310;  // local APIC interrupt command register
    const unsigned port_lo = layout::kTestResultPort & 0xffU, port_hi = unsigned{layout::kTestResultPort} >> 8;
    const std::uint64_t ap_entry = layout::kTestGuestLoad + 0x1000;  // page-aligned, below 1 MiB
    const auto sipi_vector = static_cast<std::uint32_t>(ap_entry >> 12);
    std::vector<std::byte> bsp;
    auto emit = [](std::vector<std::byte>& code, std::initializer_list<unsigned> bytes) {
        for (unsigned b : bytes) code.push_back(static_cast<std::byte>(b));
    };
    auto emit32 = [&](std::vector<std::byte>& code, std::uint64_t value) {
        for (int i = 0; i < 4; ++i) emit(code, {static_cast<unsigned>((value >> (8 * i)) & 0xff)});
    };
    auto store32 = [&](std::uint64_t address, std::uint32_t value) {  // movl $value, address
        emit(bsp, {0xc7, 0x05});
        emit32(bsp, address);
        emit32(bsp, value);
    };
    store32(layout::kLapic + kIcrHigh, 1U << 24);                             // destination: APIC id 1
    store32(layout::kLapic + kIcrLow, 0x4500);                                // INIT, assert
    store32(layout::kLapic + kIcrLow, 0x4600 | sipi_vector);                  // start-up IPI
    emit(bsp, {0xb0, 0xa0, 0x66, 0xba, port_lo, port_hi, 0xee, 0xeb, 0xfe});  // out 0xa0; jmp .
    std::vector<std::byte> ap;
    emit(ap, {0xb0, 0xa1, 0xba, port_lo, port_hi, 0xee, 0xeb, 0xfe});  // (16-bit) out 0xa1; jmp .
    ASSERT_TRUE((*machine)->memory().write_bytes(layout::kTestGuestLoad, bsp));
    ASSERT_TRUE((*machine)->memory().write_bytes(ap_entry, ap));
    ASSERT_TRUE((*machine)->setup_flat32(0, layout::kTestGuestLoad));

    auto reported = [&] {
        std::set<std::byte> seen;
        for (const auto& access : result_port->accesses()) {
            if (access.write && !access.data.empty()) seen.insert(access.data[0]);
        }
        return seen;
    };
    std::thread stopper([&] {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (reported().size() < 2 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        (*machine)->request_stop(StopReason::HostStop, "test");
    });
    auto outcome = (*machine)->run();
    stopper.join();
    ASSERT_TRUE(outcome);
    EXPECT_EQ(outcome->reason, StopReason::HostStop);
    EXPECT_EQ(reported(), (std::set<std::byte>{std::byte{0xa0}, std::byte{0xa1}})) << "vCPU 0 and vCPU 1 each ran";
}

TEST(GuestMemory, RefusesRangesOutsideRamAndAcrossTheGap) {
    auto memory = GuestMemory::create(64ULL << 20, layout::kMmioGapStart, layout::kHighRamStart);
    ASSERT_TRUE(memory);
    EXPECT_TRUE(memory->contains(0, 64ULL << 20));
    EXPECT_FALSE(memory->contains(0, (64ULL << 20) + 1));
    EXPECT_FALSE(memory->contains((64ULL << 20) - 4, 8));
    EXPECT_FALSE(memory->contains(~0ULL - 2, 8)) << "wrapping range";
    EXPECT_FALSE(memory->contains(64ULL << 20, 0)) << "one past the end";
    EXPECT_FALSE(memory->read_obj<std::uint64_t>(layout::kMmioGapStart).has_value());
    EXPECT_TRUE(memory->write_obj<std::uint32_t>(0x1000, 7));
    EXPECT_EQ(memory->read_obj<std::uint32_t>(0x1000).value_or(0), 7u);
}

TEST(GuestMemory, PlacesRamAboveTheGapAt4GiB) {
    // Not touched, so MAP_NORESERVE keeps this cheap.
    auto memory = GuestMemory::create(layout::kMmioGapStart + (1ULL << 20), layout::kMmioGapStart,
                                      layout::kHighRamStart);
    ASSERT_TRUE(memory);
    ASSERT_EQ(memory->regions().size(), 2u);
    EXPECT_EQ(memory->regions()[1].guest_address, layout::kHighRamStart);
    EXPECT_TRUE(memory->contains(layout::kHighRamStart, 1ULL << 20));
    EXPECT_FALSE(memory->contains(layout::kMmioGapStart - 4, 8)) << "straddles RAM and the gap";
    EXPECT_TRUE(memory->write_obj<std::uint64_t>(layout::kHighRamStart, 42));
    EXPECT_EQ(memory->read_obj<std::uint64_t>(layout::kHighRamStart).value_or(0), 42u);
}

}  // namespace
}  // namespace boxlite::vmm
