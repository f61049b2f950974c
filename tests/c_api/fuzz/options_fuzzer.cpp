// libFuzzer target over boxlite_create_box's JSON (lib/c_api/options_json.cpp): whatever the
// bytes, parsing returns — no crash, no sanitizer report, no exception — and a rejection is one of
// the kinds the C API documents for bad options (InvalidArgument for text that is not JSON,
// Config for a bad key or value, Unsupported for a key this runtime cannot honour).
#include "c_api/options_json.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = boxlite::capi::parse_create_options(text);
    if (parsed) {
        // What parsed is in range for the runtime's own checks to take over.
        if (parsed->options.cpus < 1 || parsed->options.cpus > 255) std::abort();
        if (parsed->options.memory_mib < boxlite::BoxOptions::kMinMemoryMib) std::abort();
        return 0;
    }
    switch (parsed.error().kind()) {
        case boxlite::ErrorKind::InvalidArgument:
        case boxlite::ErrorKind::Config:
        case boxlite::ErrorKind::Unsupported: break;
        default: std::abort();
    }
    if (parsed.error().message().empty()) std::abort();
    return 0;
}
