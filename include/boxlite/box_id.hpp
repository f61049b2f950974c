// BoxID: a box's identity, a ULID (26 Crockford base32 characters: 48-bit millisecond
// timestamp + 80 random bits), so ids sort by creation time and never collide in practice.
#pragma once

#include <boxlite/detail/random.hpp>
#include <boxlite/error.hpp>

#include <array>
#include <chrono>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace boxlite {

class BoxID {
public:
    static constexpr std::size_t kLength = 26;
    /// Length of `short_id()`, as `docker ps` shows container ids.
    static constexpr std::size_t kShortLength = 12;

    /// A fresh ULID for "now".
    [[nodiscard]] static BoxID generate() {
        const auto now = std::chrono::system_clock::now().time_since_epoch();
        const auto millis = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
        auto& engine = detail::id_random();
        const std::uint64_t random_high = engine() & 0xFFFF;  // 16 bits
        const std::uint64_t random_low = engine();            // 64 bits
        return from_parts(millis, random_high, random_low);
    }

    /// Parses a full 26-character ULID (case-insensitive, Crockford aliases I/L -> 1, O -> 0).
    [[nodiscard]] static BoxliteResult<BoxID> parse(std::string_view text) {
        if (text.size() != kLength) {
            return fail(ErrorKind::InvalidArgument, "box id '{}' must be {} characters of Crockford base32, got {}",
                        text, kLength, text.size());
        }
        BoxID id;
        for (std::size_t i = 0; i < kLength; ++i) {
            const int value = decode_char(text[i]);
            if (value < 0) {
                return fail(ErrorKind::InvalidArgument,
                            "box id '{}' has invalid character '{}' at position {} (allowed: 0-9, A-Z "
                            "without I, L, O, U)",
                            text, text[i], i);
            }
            id.text_[i] = kAlphabet[static_cast<std::size_t>(value)];
        }
        if (decode_char(text[0]) > 7) {
            return fail(ErrorKind::InvalidArgument, "box id '{}' overflows 128 bits (first character must be 0-7)",
                        text);
        }
        return id;
    }

    /// True when `text` could be the start of a box id (used for prefix lookups).
    [[nodiscard]] static bool is_valid_prefix(std::string_view text) noexcept {
        if (text.empty() || text.size() > kLength) return false;
        for (char c : text) {
            if (decode_char(c) < 0) return false;
        }
        return true;
    }

    [[nodiscard]] std::string str() const { return std::string(text_.data(), kLength); }
    [[nodiscard]] std::string_view view() const noexcept { return {text_.data(), kLength}; }
    [[nodiscard]] std::string short_id() const { return std::string(text_.data(), kShortLength); }

    /// Milliseconds since the Unix epoch at which the id was generated.
    [[nodiscard]] std::uint64_t timestamp_ms() const noexcept {
        std::uint64_t value = 0;
        for (std::size_t i = 0; i < 10; ++i) value = (value << 5) | static_cast<std::uint64_t>(decode_char(text_[i]));
        return value;
    }

    friend bool operator==(const BoxID&, const BoxID&) = default;
    friend auto operator<=>(const BoxID&, const BoxID&) = default;

private:
    static constexpr std::string_view kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    BoxID() { text_.fill('0'); }

    static constexpr int decode_char(char c) noexcept {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        if (c == 'I' || c == 'L') return 1;
        if (c == 'O') return 0;
        for (std::size_t i = 0; i < kAlphabet.size(); ++i) {
            if (kAlphabet[i] == c) return static_cast<int>(i);
        }
        return -1;
    }

    static BoxID from_parts(std::uint64_t millis, std::uint64_t random_high16, std::uint64_t random_low64) {
        BoxID id;
        // 48-bit timestamp -> 10 characters (the top 2 bits of the first are zero).
        for (int i = 9; i >= 0; --i) {
            id.text_[static_cast<std::size_t>(i)] = kAlphabet[millis & 31U];
            millis >>= 5;
        }
        // 80 random bits -> 16 characters.
        for (int i = 25; i >= 10; --i) {
            id.text_[static_cast<std::size_t>(i)] = kAlphabet[random_low64 & 31U];
            random_low64 = (random_low64 >> 5) | ((random_high16 & 31U) << 59);
            random_high16 >>= 5;
        }
        return id;
    }

    std::array<char, kLength> text_{};
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::BoxID> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxID& id, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(id.view(), ctx);
    }
};

template <>
struct std::hash<boxlite::BoxID> {
    std::size_t operator()(const boxlite::BoxID& id) const noexcept { return std::hash<std::string_view>{}(id.view()); }
};
