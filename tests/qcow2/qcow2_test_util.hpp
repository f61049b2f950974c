// Helpers for the QCOW2 tests: running qemu-img, byte patterns (TempDir comes from tests/support).
#pragma once

#include "qcow2/qcow2_image.hpp"
#include "qcow2/raw_file.hpp"

#include <gtest/gtest.h>
#include <support/support.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace boxlite::qcow2::test {

struct CommandResult {
    int exit_code = -1;
    std::string output;
};

inline CommandResult run(const std::string& command) {
    CommandResult result;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return result;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
    const int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

inline bool have_qemu_img() { return run("qemu-img --version").exit_code == 0; }

using ::boxlite::test::TempDir;

inline CreateOptions sized(std::uint64_t size, std::uint32_t cluster_bits = 16, std::string backing = "") {
    CreateOptions options;
    options.size = size;
    options.cluster_bits = cluster_bits;
    options.backing_file = std::move(backing);
    return options;
}

inline OpenOptions read_only() {
    OpenOptions options;
    options.read_only = true;
    return options;
}

inline iovec iov_of(std::vector<std::uint8_t>& data) { return iovec{data.data(), data.size()}; }

inline void fill_pattern(std::vector<std::uint8_t>& data, std::mt19937_64& rng) {
    // Half random, half runs of one byte: compressible and still detects misplacement.
    const std::uint8_t fill = static_cast<std::uint8_t>(rng());
    const bool random_bytes = rng() % 2 == 0;
    for (auto& b : data) b = random_bytes ? static_cast<std::uint8_t>(rng()) : fill;
}

inline BoxliteResult<void> write_bytes(block::BlockBackend& disk, std::uint64_t offset,
                                       std::vector<std::uint8_t>& data) {
    iovec v = iov_of(data);
    return disk.write(offset, std::span<const iovec>(&v, 1));
}

inline BoxliteResult<std::vector<std::uint8_t>> read_bytes(block::BlockBackend& disk, std::uint64_t offset,
                                                           std::size_t length) {
    std::vector<std::uint8_t> data(length, 0xAA);
    iovec v = iov_of(data);
    BOXLITE_TRY_VOID(disk.read(offset, std::span<const iovec>(&v, 1)));
    return data;
}

/// `qemu-img check` exit codes: 0 clean, 2 corruptions, 3 leaks only.
inline CommandResult qemu_check(const std::string& path) { return run("qemu-img check -f qcow2 '" + path + "'"); }

/// `qemu-img check` finds neither corruption nor leaks.
inline void expect_qemu_clean_check(const std::string& path) {
    const auto result = qemu_check(path);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("No errors were found"), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("leaked"), std::string::npos) << result.output;
}

}  // namespace boxlite::qcow2::test
