// The address parsers of include/boxlite/detail/validate.hpp, over inet_pton.
#include <boxlite/detail/validate.hpp>

#include <arpa/inet.h>

#include <array>
#include <string>

namespace boxlite::detail {

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

}  // namespace boxlite::detail
