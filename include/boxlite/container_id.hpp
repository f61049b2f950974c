// ContainerID: the OCI container id of a box's main container inside the guest — 64 lower-case
// hex characters (256 random bits), shown shortened to 12 like `docker ps`.
#pragma once

#include <boxlite/detail/random.hpp>
#include <boxlite/error.hpp>

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace boxlite {

class ContainerID {
public:
    static constexpr std::size_t kLength = 64;
    static constexpr std::size_t kShortLength = 12;

    [[nodiscard]] static ContainerID generate() {
        auto& engine = detail::id_random();
        static constexpr char kHex[] = "0123456789abcdef";
        ContainerID id;
        for (std::size_t i = 0; i < kLength; i += 16) {
            std::uint64_t bits = engine();
            for (std::size_t j = 0; j < 16; ++j, bits >>= 4) id.text_[i + j] = kHex[bits & 0xF];
        }
        return id;
    }

    /// Exactly 64 hex digits; upper case is accepted and stored lower case.
    [[nodiscard]] static BoxliteResult<ContainerID> parse(std::string_view text) {
        if (text.size() != kLength) {
            return fail(ErrorKind::InvalidArgument, "container id '{}' must be {} hex characters, got {}", text,
                        kLength, text.size());
        }
        ContainerID id;
        for (std::size_t i = 0; i < kLength; ++i) {
            char c = text[i];
            if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                return fail(ErrorKind::InvalidArgument, "container id '{}' has non-hex character at position {}", text,
                            i);
            }
            id.text_[i] = c;
        }
        return id;
    }

    [[nodiscard]] std::string_view view() const noexcept { return {text_.data(), kLength}; }
    [[nodiscard]] std::string str() const { return std::string(view()); }
    [[nodiscard]] std::string short_id() const { return std::string(text_.data(), kShortLength); }

    friend bool operator==(const ContainerID&, const ContainerID&) = default;
    friend auto operator<=>(const ContainerID&, const ContainerID&) = default;

private:
    ContainerID() { text_.fill('0'); }
    std::array<char, kLength> text_{};
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::ContainerID> : fmt::formatter<std::string_view> {
    auto format(const boxlite::ContainerID& id, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(id.view(), ctx);
    }
};
