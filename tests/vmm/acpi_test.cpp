// ACPI tables: checksums, structure, and `iasl -d` (acpica-tools) disassembling each with no
// errors, the DSDT listing every virtio-mmio device as LNRO0005 with its window and interrupt.
#include "vmm/acpi.hpp"
#include "vmm/layout.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>
#include <sstream>

namespace boxlite::vmm {
namespace {

namespace fs = std::filesystem;

std::uint8_t sum(const std::vector<std::uint8_t>& bytes, std::size_t n) {
    return static_cast<std::uint8_t>(std::accumulate(bytes.begin(), bytes.begin() + static_cast<long>(n), 0u));
}

AcpiConfig three_devices() {
    AcpiConfig config;
    config.vcpus = 2;
    for (std::uint32_t i = 0; i < 3; ++i)
        config.virtio_mmio.push_back({layout::kVirtioMmioBase + i * layout::kVirtioMmioSize, layout::kVirtioMmioSize,
                                      layout::kVirtioIrqBase + i});
    return config;
}

TEST(Acpi, TablesHaveValidChecksumsAndLinks) {
    auto tables = build_acpi_tables(three_devices());
    ASSERT_TRUE(tables) << tables.error().to_string();
    EXPECT_EQ(sum(tables->rsdp, 20), 0);
    EXPECT_EQ(sum(tables->rsdp, 36), 0);
    for (auto* t : {&tables->xsdt, &tables->fadt, &tables->madt, &tables->dsdt}) EXPECT_EQ(sum(*t, t->size()), 0);
    std::uint64_t xsdt = 0;
    std::memcpy(&xsdt, tables->rsdp.data() + 24, 8);
    EXPECT_EQ(xsdt, tables->xsdt_address);
    std::uint64_t x_dsdt = 0;
    std::memcpy(&x_dsdt, tables->fadt.data() + 140, 8);
    EXPECT_EQ(x_dsdt, tables->dsdt_address);
    std::uint32_t fadt_flags = 0;
    std::memcpy(&fadt_flags, tables->fadt.data() + 112, 4);
    EXPECT_TRUE(fadt_flags & (1u << 20)) << "HW_REDUCED_ACPI";
    EXPECT_EQ(tables->madt.size(), 44u + 2 * 8 + 12) << "two LAPICs and one IOAPIC";
    EXPECT_LE(tables->dsdt_address + tables->dsdt.size(), layout::kAcpiEnd);
}

TEST(Acpi, AmlPackageLengthEncodings) {
    EXPECT_EQ(Aml::package_length(10), Aml::Bytes{11});
    EXPECT_EQ(Aml::package_length(62), Aml::Bytes{63});
    // 63 bytes of body + 2 length bytes = 65 = 0x41: lead byte 0x41 (1 extra, low nibble 1), then 0x04.
    EXPECT_EQ(Aml::package_length(63), (Aml::Bytes{0x41, 0x04}));
    EXPECT_EQ(Aml::package_length(5000).size(), 3u);
    EXPECT_EQ(Aml::eisa_id("PNP0501"), (Aml::Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01}));
}

std::string run(const std::string& command) {
    std::string output;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (!pipe) return output;
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
    const int status = ::pclose(pipe);
    output += "\n[exit " + std::to_string(WEXITSTATUS(status)) + "]";
    return output;
}

TEST(Acpi, IaslDisassemblesEveryTableWithoutErrors) {
    if (std::system("command -v iasl > /dev/null 2>&1") != 0)
        GTEST_SKIP() << "precondition: iasl (acpica-tools) is not installed";
    auto tables = build_acpi_tables(three_devices());
    ASSERT_TRUE(tables);
    const fs::path dir = fs::temp_directory_path() / ("boxlite-acpi-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    struct Named {
        const char* name;
        const std::vector<std::uint8_t>* bytes;
    };
    // The RSDP is not an SDT (no header iasl can read from a binary file); its checksums and
    // link are checked in TablesHaveValidChecksumsAndLinks.
    for (auto [name, bytes] : {Named{"xsdt", &tables->xsdt}, Named{"facp", &tables->fadt}, Named{"apic", &tables->madt},
                               Named{"dsdt", &tables->dsdt}}) {
        const fs::path file = dir / (std::string(name) + ".dat");
        std::ofstream(file, std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes->data()), static_cast<std::streamsize>(bytes->size()));
        const std::string output = run("cd " + dir.string() + " && iasl -d " + file.string());
        EXPECT_NE(output.find("[exit 0]"), std::string::npos) << name << ":\n" << output;
        EXPECT_EQ(output.find("Error"), std::string::npos) << name << ":\n" << output;
        const fs::path dsl = dir / (std::string(name) + ".dsl");
        ASSERT_TRUE(fs::exists(dsl)) << output;
        std::stringstream text;
        text << std::ifstream(dsl).rdbuf();
        const std::string disassembly = text.str();
        EXPECT_EQ(disassembly.find("**** "), std::string::npos) << name << " has disassembler warnings:\n"
                                                                << disassembly;
        if (std::string(name) == "dsdt") {
            const std::regex device_re("Device \\(V00[0-9]\\)");
            const auto devices = std::distance(std::sregex_iterator(disassembly.begin(), disassembly.end(), device_re),
                                               std::sregex_iterator());
            EXPECT_EQ(devices, 3) << disassembly;
            std::size_t hids = 0;
            for (std::size_t at = 0; (at = disassembly.find("\"LNRO0005\"", at)) != std::string::npos; ++at) ++hids;
            EXPECT_EQ(hids, 3u) << disassembly;
            EXPECT_NE(disassembly.find("0xD0002000"), std::string::npos) << "third window" << disassembly;
            EXPECT_NE(disassembly.find("0x00000007"), std::string::npos) << "third GSI" << disassembly;
            EXPECT_NE(disassembly.find("PNP0501"), std::string::npos) << disassembly;
            EXPECT_NE(disassembly.find("_S5"), std::string::npos) << disassembly;
        }
        if (std::string(name) == "facp") {
            EXPECT_NE(disassembly.find("Hardware Reduced (V5) : 1"), std::string::npos) << disassembly;
        }
    }
    fs::remove_all(dir);
}

TEST(Acpi, WritesTablesIntoGuestMemory) {
    auto memory = GuestMemory::create(16ULL << 20, layout::kMmioGapStart, layout::kHighRamStart);
    ASSERT_TRUE(memory);
    auto rsdp = write_acpi_tables(*memory, three_devices());
    ASSERT_TRUE(rsdp);
    EXPECT_EQ(*rsdp, layout::kRsdp);
    std::array<char, 8> signature{};
    memory->read_bytes(*rsdp, std::as_writable_bytes(std::span(signature)));
    EXPECT_EQ(std::string(signature.data(), 8), "RSD PTR ");
}

}  // namespace
}  // namespace boxlite::vmm
