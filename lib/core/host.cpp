// What the public headers' inline code asks of the host system, compiled once: the CPU count
// (box_options.hpp) and the address syntax of detail/validate.hpp (inet_pton). Also linked into
// boxlite_cli_support, which uses the headers without the compiled core (cli/CMakeLists.txt).
#include <boxlite/box_options.hpp>
#include <boxlite/detail/validate.hpp>

#include <arpa/inet.h>
#include <unistd.h>

#include <array>
#include <string>

namespace boxlite {

std::uint32_t host_cpu_count() noexcept {
    const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1U : static_cast<std::uint32_t>(n);
}

namespace detail {

bool is_ipv4(std::string_view text) {
    std::array<unsigned char, 4> out{};
    const std::string copy(text);
    return inet_pton(AF_INET, copy.c_str(), out.data()) == 1;
}

bool is_ipv6(std::string_view text) {
    std::array<unsigned char, 16> out{};
    const std::string copy(text);
    return inet_pton(AF_INET6, copy.c_str(), out.data()) == 1;
}

std::string cidr_with_host_bits_cleared(std::string_view cidr) {
    const auto slash = cidr.find('/');
    if (slash == std::string_view::npos) return std::string(cidr);
    const std::string address(cidr.substr(0, slash));
    unsigned bits = 0;
    for (char c : cidr.substr(slash + 1)) bits = bits * 10 + static_cast<unsigned>(c - '0');
    std::array<unsigned char, 16> bytes{};
    const bool v6 = address.find(':') != std::string::npos;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), bytes.data()) != 1) return std::string(cidr);
    const unsigned width = v6 ? 128 : 32;
    bool changed = false;
    for (unsigned bit = bits; bit < width; ++bit) {
        const auto mask = static_cast<unsigned char>(0x80U >> (bit % 8));
        changed = changed || (bytes[bit / 8] & mask) != 0;
        bytes[bit / 8] &= static_cast<unsigned char>(~mask);
    }
    if (!changed) return std::string(cidr);
    char text[64] = {};
    inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), text, sizeof text);
    return std::string(text) + "/" + std::to_string(bits);
}

}  // namespace detail
}  // namespace boxlite
