#include "vmm/acpi.hpp"

#include "vmm/layout.hpp"

#include <cstring>
#include <numeric>

namespace boxlite::vmm {
namespace {

using Bytes = Aml::Bytes;

// AML opcodes (ACPI 6.5 §20.3).
constexpr std::uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08, kBytePrefix = 0x0a, kWordPrefix = 0x0b,
                       kDWordPrefix = 0x0c, kStringPrefix = 0x0d, kQWordPrefix = 0x0e, kScopeOp = 0x10,
                       kBufferOp = 0x11, kPackageOp = 0x12, kExtOpPrefix = 0x5b, kDeviceOp = 0x82, kRootChar = 0x5c,
                       kDualNamePrefix = 0x2e, kMultiNamePrefix = 0x2f;

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }
template <class T>
void append_le(Bytes& out, T value) {
    for (std::size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

Bytes name_segment(std::string_view segment) {
    Bytes out(4, '_');
    for (std::size_t i = 0; i < segment.size() && i < 4; ++i) out[i] = static_cast<std::uint8_t>(segment[i]);
    return out;
}

Bytes with_package_length(std::initializer_list<std::uint8_t> opcode, const Bytes& body) {
    Bytes out(opcode);
    append(out, Aml::package_length(body.size()));
    append(out, body);
    return out;
}

// ---- tables ---------------------------------------------------------------------------------

constexpr char kOemId[6] = {'B', 'O', 'X', 'L', 'T', 'E'};
constexpr char kOemTableId[8] = {'B', 'O', 'X', 'L', 'I', 'T', 'E', 'V'};
constexpr char kCreatorId[4] = {'B', 'X', 'L', 'T'};

std::uint8_t checksum(const std::uint8_t* data, std::size_t length) {
    std::uint8_t sum = 0;
    for (std::size_t i = 0; i < length; ++i) sum = static_cast<std::uint8_t>(sum + data[i]);
    return static_cast<std::uint8_t>(0x100 - sum);
}

// The 36-byte system description table header; length and checksum are fixed up by finish().
Bytes sdt_header(const char (&signature)[5], std::uint8_t revision) {
    // Filled in place (GCC 12 warns falsely about insert() into an empty vector at -O3).
    Bytes out(36, 0);
    std::memcpy(out.data(), signature, 4);
    // 4..7: length, fixed up by finish()
    out[8] = revision;
    // 9: checksum, fixed up by finish()
    std::memcpy(out.data() + 10, kOemId, 6);
    std::memcpy(out.data() + 16, kOemTableId, 8);
    out[24] = 1;  // OEM revision 1
    std::memcpy(out.data() + 28, kCreatorId, 4);
    out[32] = 1;  // creator revision 1
    return out;
}

void finish(Bytes& table) {
    const auto length = static_cast<std::uint32_t>(table.size());
    std::memcpy(table.data() + 4, &length, 4);
    table[9] = 0;
    table[9] = checksum(table.data(), table.size());
}

// Generic Address Structure (12 bytes) for a byte-wide I/O port.
void append_gas_io(Bytes& out, std::uint16_t port) {
    out.push_back(1);  // address space: system I/O
    out.push_back(8);  // register bit width
    out.push_back(0);  // bit offset
    out.push_back(1);  // access size: byte
    append_le<std::uint64_t>(out, port);
}

Bytes build_dsdt(const AcpiConfig& config) {
    std::vector<Bytes> devices;
    if (config.com1) {
        devices.push_back(Aml::device(
            "COM1", {Aml::name("_HID", Aml::eisa_id("PNP0501")), Aml::name("_UID", Aml::integer(0)),
                     Aml::name("_CRS", Aml::resource_template({Aml::io_port(layout::kCom1Port, layout::kCom1PortCount),
                                                               Aml::interrupt(layout::kCom1Irq)}))}));
    }
    for (std::size_t i = 0; i < config.virtio_mmio.size(); ++i) {
        const auto& d = config.virtio_mmio[i];
        devices.push_back(Aml::device(
            fmt::format("V{:03X}", i),
            {Aml::name("_HID", Aml::string("LNRO0005")), Aml::name("_UID", Aml::integer(i)),
             Aml::name("_CCA", Aml::integer(1)),  // cache-coherent DMA
             Aml::name("_CRS", Aml::resource_template({Aml::memory32_fixed(static_cast<std::uint32_t>(d.base),
                                                                           static_cast<std::uint32_t>(d.size), true),
                                                       Aml::interrupt(d.gsi)}))}));
    }
    Bytes table = sdt_header("DSDT", 2);
    append(table, Aml::scope("\\_SB_", devices));
    // \_S5: the SLP_TYP value the guest writes to the sleep control register to power off.
    append(table, Aml::name("\\_S5_", Aml::package({Aml::integer(5), Aml::integer(0)})));
    finish(table);
    return table;
}

Bytes build_fadt(std::uint64_t dsdt_address) {
    Bytes t = sdt_header("FACP", 6);
    t.resize(276, 0);
    auto put32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(t.data() + at, &v, 4); };
    auto put64 = [&](std::size_t at, std::uint64_t v) { std::memcpy(t.data() + at, &v, 8); };
    put32(40, static_cast<std::uint32_t>(dsdt_address));  // DSDT (32-bit)
    // IAPC_BOOT_ARCH (offset 109): VGA not present (bit 2), no MSI... leave MSI allowed.
    t[109] = 0x04;
    // Flags (offset 112): WBINVD (0), PROC_C1 (2), SLP_BUTTON (5), RESET_REG_SUP (10)? no;
    // HW_REDUCED_ACPI (20), plus PWR_BUTTON (4) / SLP_BUTTON (5) meaning "no such buttons".
    const std::uint32_t flags = (1u << 0) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 20);
    put32(112, flags);
    t[131] = 5;                // FADT minor version (6.5)
    put64(140, dsdt_address);  // X_DSDT
    Bytes gas;
    append_gas_io(gas, layout::kAcpiSleepControlPort);
    std::memcpy(t.data() + 244, gas.data(), 12);  // SLEEP_CONTROL_REG
    gas.clear();
    append_gas_io(gas, layout::kAcpiSleepStatusPort);
    std::memcpy(t.data() + 256, gas.data(), 12);  // SLEEP_STATUS_REG
    std::memcpy(t.data() + 268, "BOXLITE\0", 8);  // hypervisor vendor identity
    finish(t);
    return t;
}

Bytes build_madt(std::uint32_t vcpus) {
    Bytes t = sdt_header("APIC", 5);
    append_le<std::uint32_t>(t, static_cast<std::uint32_t>(layout::kLapic));
    append_le<std::uint32_t>(t, 0);  // flags: no dual 8259 set-up to disable
    for (std::uint32_t i = 0; i < vcpus; ++i) {
        t.push_back(0);  // processor local APIC
        t.push_back(8);
        t.push_back(static_cast<std::uint8_t>(i));  // ACPI processor UID
        t.push_back(static_cast<std::uint8_t>(i));  // APIC id
        append_le<std::uint32_t>(t, 1);             // enabled
    }
    t.push_back(1);  // I/O APIC
    t.push_back(12);
    t.push_back(0);  // IOAPIC id
    t.push_back(0);
    append_le<std::uint32_t>(t, static_cast<std::uint32_t>(layout::kIoapic));
    append_le<std::uint32_t>(t, 0);  // global system interrupt base
    finish(t);
    return t;
}

}  // namespace

// ---- Aml ------------------------------------------------------------------------------------

Bytes Aml::package_length(std::size_t length) {
    // The encoded length includes the PkgLength bytes themselves.
    if (length + 1 < 64) return {static_cast<std::uint8_t>(length + 1)};
    for (std::size_t extra = 1; extra <= 3; ++extra) {
        const std::size_t total = length + 1 + extra;
        if (total < (std::size_t{1} << (4 + 8 * extra))) {
            Bytes out;
            out.push_back(static_cast<std::uint8_t>((extra << 6) | (total & 0xf)));
            for (std::size_t i = 0; i < extra; ++i) out.push_back(static_cast<std::uint8_t>(total >> (4 + 8 * i)));
            return out;
        }
    }
    return {};  // > 256 MiB: not representable; never produced by our tables
}

Bytes Aml::name_string(std::string_view name) {
    Bytes out;
    if (!name.empty() && name[0] == '\\') {
        out.push_back(kRootChar);
        name.remove_prefix(1);
    }
    std::vector<std::string_view> segments;
    while (!name.empty()) {
        const auto dot = name.find('.');
        segments.push_back(name.substr(0, dot));
        name = dot == std::string_view::npos ? std::string_view{} : name.substr(dot + 1);
    }
    if (segments.size() == 2) out.push_back(kDualNamePrefix);
    if (segments.size() > 2) {
        out.push_back(kMultiNamePrefix);
        out.push_back(static_cast<std::uint8_t>(segments.size()));
    }
    if (segments.empty()) out.push_back(0);  // NullName
    for (auto s : segments) append(out, name_segment(s));
    return out;
}

Bytes Aml::integer(std::uint64_t value) {
    Bytes out;
    if (value == 0) return {kZeroOp};
    if (value == 1) return {kOneOp};
    if (value <= 0xff) {
        out.push_back(kBytePrefix);
        append_le<std::uint8_t>(out, static_cast<std::uint8_t>(value));
    } else if (value <= 0xffff) {
        out.push_back(kWordPrefix);
        append_le<std::uint16_t>(out, static_cast<std::uint16_t>(value));
    } else if (value <= 0xffffffff) {
        out.push_back(kDWordPrefix);
        append_le<std::uint32_t>(out, static_cast<std::uint32_t>(value));
    } else {
        out.push_back(kQWordPrefix);
        append_le<std::uint64_t>(out, value);
    }
    return out;
}

Bytes Aml::string(std::string_view text) {
    Bytes out;
    out.reserve(text.size() + 2);
    out.push_back(kStringPrefix);
    for (char c : text) out.push_back(static_cast<std::uint8_t>(c));
    out.push_back(0);
    return out;
}

Bytes Aml::eisa_id(std::string_view id) {
    // Three letters (5 bits each, 'A' = 1) and four hex digits, stored big-endian.
    auto hex = [](char c) -> std::uint32_t { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
    std::uint32_t value = 0;
    if (id.size() == 7) {
        value = ((std::uint32_t(id[0] - '@') & 0x1f) << 26) | ((std::uint32_t(id[1] - '@') & 0x1f) << 21) |
                ((std::uint32_t(id[2] - '@') & 0x1f) << 16) | (hex(id[3]) << 12) | (hex(id[4]) << 8) |
                (hex(id[5]) << 4) | hex(id[6]);
    }
    const std::uint32_t swapped = __builtin_bswap32(value);
    Bytes out{kDWordPrefix};
    append_le<std::uint32_t>(out, swapped);
    return out;
}

Bytes Aml::name(std::string_view name, const Bytes& object) {
    Bytes out{kNameOp};
    append(out, name_string(name));
    append(out, object);
    return out;
}

Bytes Aml::scope(std::string_view name, const std::vector<Bytes>& children) {
    Bytes body = name_string(name);
    for (const auto& child : children) append(body, child);
    return with_package_length({kScopeOp}, body);
}

Bytes Aml::device(std::string_view name, const std::vector<Bytes>& children) {
    Bytes body = name_string(name);
    for (const auto& child : children) append(body, child);
    return with_package_length({kExtOpPrefix, kDeviceOp}, body);
}

Bytes Aml::package(const std::vector<Bytes>& elements) {
    Bytes body{static_cast<std::uint8_t>(elements.size())};
    for (const auto& e : elements) append(body, e);
    return with_package_length({kPackageOp}, body);
}

Bytes Aml::buffer(const Bytes& bytes) {
    Bytes body = integer(bytes.size());
    append(body, bytes);
    return with_package_length({kBufferOp}, body);
}

Bytes Aml::resource_template(const std::vector<Bytes>& descriptors) {
    Bytes bytes;
    for (const auto& d : descriptors) append(bytes, d);
    bytes.push_back(0x79);  // end tag
    bytes.push_back(0);     // checksum 0: "treat as correct"
    return buffer(bytes);
}

Bytes Aml::memory32_fixed(std::uint32_t base, std::uint32_t length, bool writable) {
    Bytes out{0x86, 9, 0, static_cast<std::uint8_t>(writable ? 1 : 0)};
    append_le(out, base);
    append_le(out, length);
    return out;
}

Bytes Aml::interrupt(std::uint32_t gsi) {
    // Flags: bit0 consumer, bit1 edge, bit2 active-low (0), bit3 shared (0).
    Bytes out{0x89, 6, 0, 0x03, 1};
    append_le(out, gsi);
    return out;
}

Bytes Aml::io_port(std::uint16_t base, std::uint8_t length) {
    Bytes out{0x47, 0x01};  // I/O port descriptor, 16-bit decode
    append_le(out, base);
    append_le(out, base);
    out.push_back(1);  // alignment
    out.push_back(length);
    return out;
}

// ---- tables -------------------------------------------------------------------------------------

BoxliteResult<AcpiTables> build_acpi_tables(const AcpiConfig& config) {
    if (config.vcpus == 0 || config.vcpus > 255)
        return fail(ErrorKind::Config, "{} vCPUs cannot be described with 8-bit APIC ids", config.vcpus);
    AcpiTables tables;
    auto align16 = [](std::uint64_t v) { return (v + 15) & ~15ULL; };
    tables.rsdp_address = layout::kRsdp;
    tables.dsdt = build_dsdt(config);
    tables.madt = build_madt(config.vcpus);
    // Place: RSDP (36) | XSDT | FADT | MADT | DSDT — XSDT size is known up front (2 entries).
    tables.xsdt_address = align16(tables.rsdp_address + 36);
    const std::uint64_t xsdt_size = 36 + 2 * 8;
    tables.fadt_address = align16(tables.xsdt_address + xsdt_size);
    tables.madt_address = align16(tables.fadt_address + 276);
    tables.dsdt_address = align16(tables.madt_address + tables.madt.size());
    if (tables.dsdt_address + tables.dsdt.size() > layout::kAcpiEnd)
        return fail(ErrorKind::Config, "ACPI tables do not fit below 1 MiB ({} virtio devices)",
                    config.virtio_mmio.size());
    tables.fadt = build_fadt(tables.dsdt_address);

    tables.xsdt = sdt_header("XSDT", 1);
    append_le<std::uint64_t>(tables.xsdt, tables.fadt_address);
    append_le<std::uint64_t>(tables.xsdt, tables.madt_address);
    finish(tables.xsdt);

    Bytes& r = tables.rsdp;
    r.assign(36, 0);
    std::memcpy(r.data(), "RSD PTR ", 8);
    // 8: checksum of the first 20 bytes (below)
    std::memcpy(r.data() + 9, kOemId, 6);
    r[15] = 2;  // revision: ACPI 2.0+
    // 16..19: no RSDT
    const std::uint32_t rsdp_length = 36;
    std::memcpy(r.data() + 20, &rsdp_length, 4);
    std::memcpy(r.data() + 24, &tables.xsdt_address, 8);
    // 32: extended checksum (below), 33..35 reserved
    r[8] = checksum(r.data(), 20);
    r[32] = checksum(r.data(), 36);
    return tables;
}

BoxliteResult<std::uint64_t> write_acpi_tables(const GuestMemory& memory, const AcpiConfig& config) {
    BOXLITE_TRY(auto tables, build_acpi_tables(config));
    auto write = [&](std::uint64_t at, const Bytes& bytes) {
        return memory.write_bytes(at, std::as_bytes(std::span(bytes)));
    };
    if (!write(tables.rsdp_address, tables.rsdp) || !write(tables.xsdt_address, tables.xsdt) ||
        !write(tables.fadt_address, tables.fadt) || !write(tables.madt_address, tables.madt) ||
        !write(tables.dsdt_address, tables.dsdt))
        return fail(ErrorKind::Config, "guest memory does not cover the ACPI area {:#x}..{:#x}", layout::kAcpiStart,
                    layout::kAcpiEnd);
    return tables.rsdp_address;
}

}  // namespace boxlite::vmm
