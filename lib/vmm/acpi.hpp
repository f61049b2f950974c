// ACPI tables for a hardware-reduced x86 micro-VM: RSDP → XSDT → {FADT → DSDT, MADT}.
//
// The DSDT is where Debian's cloud kernel learns about virtio-mmio devices: each is a
// `LNRO0005` device with its memory window and its interrupt in _CRS. COM1 (PNP0501) is
// described too, and \_S5 gives the sleep type our ACPI sleep-control register powers off on.
// The AML is produced by the small builder below (ACPI 6.5 §20, the AML grammar).
#pragma once

#include "memory/guest_memory.hpp"

#include <boxlite/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::vmm {

/// A tiny AML encoder: enough of the grammar for a DSDT of devices with names and resources.
class Aml {
public:
    using Bytes = std::vector<std::uint8_t>;
    /// "_SB_", "COM1" (padded with '_' to 4 chars); a leading '\\' makes it absolute;
    /// dotted paths ("\\_SB_.V000") become multi-name paths.
    static Bytes name_string(std::string_view name);
    static Bytes integer(std::uint64_t value);
    static Bytes string(std::string_view text);
    /// EISA id ("PNP0501") compressed into a 32-bit integer.
    static Bytes eisa_id(std::string_view id);
    static Bytes name(std::string_view name, const Bytes& object);
    static Bytes scope(std::string_view name, const std::vector<Bytes>& children);
    static Bytes device(std::string_view name, const std::vector<Bytes>& children);
    static Bytes package(const std::vector<Bytes>& elements);
    static Bytes buffer(const Bytes& bytes);
    /// Resource template: a buffer of resource descriptors plus the end tag.
    static Bytes resource_template(const std::vector<Bytes>& descriptors);
    static Bytes memory32_fixed(std::uint32_t base, std::uint32_t length, bool writable);
    /// Extended interrupt descriptor: consumer, edge-triggered, active-high, exclusive.
    static Bytes interrupt(std::uint32_t gsi);
    static Bytes io_port(std::uint16_t base, std::uint8_t length);
    /// PkgLength encoding of a body of `length` bytes (the encoding counts itself).
    static Bytes package_length(std::size_t length);
};

struct AcpiMmioDevice {
    std::uint64_t base = 0;
    std::uint64_t size = 0;
    std::uint32_t gsi = 0;
};

struct AcpiConfig {
    std::uint32_t vcpus = 1;
    std::vector<AcpiMmioDevice> virtio_mmio;
    bool com1 = true;
};

/// Each table as its bytes, with the guest addresses they were built for.
struct AcpiTables {
    std::uint64_t rsdp_address = 0;
    std::vector<std::uint8_t> rsdp, xsdt, fadt, madt, dsdt;
    std::uint64_t xsdt_address = 0, fadt_address = 0, madt_address = 0, dsdt_address = 0;
};

/// Builds the tables to live at layout::kAcpiStart.. (RSDP first).
BoxliteResult<AcpiTables> build_acpi_tables(const AcpiConfig& config);
/// Builds and writes them into guest memory; returns the RSDP address for the boot protocol.
BoxliteResult<std::uint64_t> write_acpi_tables(const GuestMemory& memory, const AcpiConfig& config);

}  // namespace boxlite::vmm
