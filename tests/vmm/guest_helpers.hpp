// Helpers shared by the tests that run tiny guests under the real /dev/kvm.
#pragma once

#include "memory/bus.hpp"
#include "vmm/file.hpp"
#include "vmm/layout.hpp"
#include "vmm/machine.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

namespace boxlite::vmm::testing {

/// Why KVM cannot run tiny guests here (a skip message), or an empty string when it can.
inline std::string kvm_unusable_reason() {
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) return std::string("precondition: no /dev/kvm (it cannot be opened: ") + std::strerror(errno) + ")";
    ::close(fd);
    return {};
}

inline std::vector<std::byte> read_guest_binary(const std::string& name) {
    return read_file_bytes(std::string(BOXLITE_TEST_GUEST_DIR) + "/" + name).value_or(std::vector<std::byte>{});
}

/// Loads a tiny guest at layout::kTestGuestLoad and points vCPU 0 at it (32-bit flat mode).
inline void load_tiny_guest(Machine& machine, const std::string& name) {
    auto binary = read_guest_binary(name);
    ASSERT_FALSE(binary.empty()) << "tiny guest " << name << " was not built";
    ASSERT_TRUE(machine.memory().write_bytes(layout::kTestGuestLoad, binary));
    auto set = machine.setup_flat32(0, layout::kTestGuestLoad);
    ASSERT_TRUE(set) << set.error().to_string();
}

/// Records every access it gets; reads return `read_value` bytes.
class RecordingDevice final : public BusDevice {
public:
    struct Access {
        bool write;
        std::uint64_t offset;
        std::vector<std::byte> data;
    };
    explicit RecordingDevice(std::uint64_t read_value = 0) : read_value_(read_value) {}
    void read(std::uint64_t offset, std::span<std::byte> data) override {
        std::lock_guard lock(mutex_);
        std::memcpy(data.data(), &read_value_, std::min(data.size(), sizeof(read_value_)));
        accesses_.push_back({false, offset, {data.begin(), data.end()}});
    }
    void write(std::uint64_t offset, std::span<const std::byte> data) override {
        std::lock_guard lock(mutex_);
        accesses_.push_back({true, offset, {data.begin(), data.end()}});
    }
    std::vector<Access> accesses() {
        std::lock_guard lock(mutex_);
        return accesses_;
    }

private:
    std::mutex mutex_;
    std::uint64_t read_value_;
    std::vector<Access> accesses_;
};

}  // namespace boxlite::vmm::testing
