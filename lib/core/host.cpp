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

}  // namespace detail
}  // namespace boxlite
