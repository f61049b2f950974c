// A hand-made TLS 1.3 ClientHello (RFC 8446 §4.1.2) for the server-name tests and the fuzzer's
// seeds: the handshake in one TLS record, or cut into several.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace boxlite::net::test {

/// `server_name` empty: no SNI extension. `padding`: bytes of a padding extension (RFC 7685).
/// `record_size`: the most handshake bytes one record carries.
inline std::vector<std::uint8_t> client_hello(const std::string& server_name, std::size_t padding = 0,
                                              std::size_t record_size = 16384) {
    auto put16 = [](std::vector<std::uint8_t>& out, std::size_t value) {
        out.push_back(static_cast<std::uint8_t>(value >> 8));
        out.push_back(static_cast<std::uint8_t>(value));
    };
    std::vector<std::uint8_t> extensions;
    if (!server_name.empty()) {
        put16(extensions, 0);  // server_name
        put16(extensions, server_name.size() + 5);
        put16(extensions, server_name.size() + 3);
        extensions.push_back(0);  // host_name
        put16(extensions, server_name.size());
        extensions.insert(extensions.end(), server_name.begin(), server_name.end());
    }
    extensions.insert(extensions.end(), {0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04});  // supported_versions
    if (padding > 0) {
        put16(extensions, 21);
        put16(extensions, padding);
        extensions.insert(extensions.end(), padding, 0);
    }
    std::vector<std::uint8_t> body = {0x03, 0x03};
    for (int i = 0; i < 32; ++i) body.push_back(static_cast<std::uint8_t>(i * 7));  // random
    body.push_back(32);                                                             // session id
    for (int i = 0; i < 32; ++i) body.push_back(static_cast<std::uint8_t>(i));
    body.insert(body.end(), {0x00, 0x02, 0x13, 0x01, 0x01, 0x00});  // one suite, no compression
    put16(body, extensions.size());
    body.insert(body.end(), extensions.begin(), extensions.end());
    std::vector<std::uint8_t> handshake = {0x01, static_cast<std::uint8_t>(body.size() >> 16),
                                           static_cast<std::uint8_t>(body.size() >> 8),
                                           static_cast<std::uint8_t>(body.size())};
    handshake.insert(handshake.end(), body.begin(), body.end());
    std::vector<std::uint8_t> out;
    for (std::size_t at = 0; at < handshake.size(); at += record_size) {
        const std::size_t length = std::min(record_size, handshake.size() - at);
        out.insert(out.end(), {0x16, 0x03, 0x01});
        put16(out, length);
        out.insert(out.end(), handshake.begin() + static_cast<std::ptrdiff_t>(at),
                   handshake.begin() + static_cast<std::ptrdiff_t>(at + length));
    }
    return out;
}

}  // namespace boxlite::net::test
