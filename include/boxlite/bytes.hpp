// Bytes: a size in bytes, with the reference's constructors (from_kib/mib/gib) and a parser
// for human-written sizes ("512M", "1GiB", "4096"). Binary units throughout: K = KiB = 1024.
#pragma once

#include <boxlite/error.hpp>

#include <compare>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace boxlite {

class Bytes {
public:
    constexpr Bytes() = default;
    constexpr explicit Bytes(std::uint64_t count) : count_(count) {}

    [[nodiscard]] static constexpr Bytes from_kib(std::uint64_t n) { return Bytes(n << 10); }
    [[nodiscard]] static constexpr Bytes from_mib(std::uint64_t n) { return Bytes(n << 20); }
    [[nodiscard]] static constexpr Bytes from_gib(std::uint64_t n) { return Bytes(n << 30); }

    [[nodiscard]] constexpr std::uint64_t count() const noexcept { return count_; }
    [[nodiscard]] constexpr std::uint64_t kib() const noexcept { return count_ >> 10; }
    [[nodiscard]] constexpr std::uint64_t mib() const noexcept { return count_ >> 20; }
    [[nodiscard]] constexpr std::uint64_t gib() const noexcept { return count_ >> 30; }

    /// "4096", "64K", "512M", "512MiB", "2G", "1GiB", "1T" (case-insensitive, binary units).
    [[nodiscard]] static BoxliteResult<Bytes> parse(std::string_view text) {
        std::size_t i = 0;
        std::uint64_t value = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
            const auto digit = static_cast<std::uint64_t>(text[i] - '0');
            if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return too_big(text);
            value = value * 10 + digit;
            ++i;
        }
        if (i == 0) {
            return fail(ErrorKind::InvalidArgument, "size '{}' must start with a number (e.g. 512M, 1GiB)", text);
        }
        std::string unit;
        for (; i < text.size(); ++i) {
            char c = text[i];
            if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
            unit.push_back(c);
        }
        unsigned shift = 0;
        if (unit.empty() || unit == "B") shift = 0;
        else if (unit == "K" || unit == "KB" || unit == "KIB") shift = 10;
        else if (unit == "M" || unit == "MB" || unit == "MIB") shift = 20;
        else if (unit == "G" || unit == "GB" || unit == "GIB") shift = 30;
        else if (unit == "T" || unit == "TB" || unit == "TIB") shift = 40;
        else {
            return fail(ErrorKind::InvalidArgument,
                        "size '{}' has unknown unit (allowed: B, K, M, G, T, KiB, MiB, GiB, TiB)", text);
        }
        if (shift != 0 && value > (std::numeric_limits<std::uint64_t>::max() >> shift)) return too_big(text);
        return Bytes(value << shift);
    }

    /// The largest binary unit that divides the count, else one decimal: "512 MiB", "1.5 GiB".
    [[nodiscard]] std::string to_string() const {
        static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        unsigned unit = 0;
        double value = static_cast<double>(count_);
        while (unit + 1 < std::size(kUnits) && value >= 1024.0) {
            value /= 1024.0;
            ++unit;
        }
        if (unit == 0 || count_ % (std::uint64_t{1} << (10 * unit)) == 0) {
            return fmt::format("{} {}", count_ >> (10 * unit), kUnits[unit]);
        }
        return fmt::format("{:.1f} {}", value, kUnits[unit]);
    }

    friend constexpr auto operator<=>(const Bytes&, const Bytes&) = default;
    friend constexpr Bytes operator+(Bytes a, Bytes b) { return Bytes(a.count_ + b.count_); }

private:
    static tl::unexpected<BoxliteError> too_big(std::string_view text) {
        return fail(ErrorKind::InvalidArgument, "size '{}' does not fit in 64 bits", text);
    }
    std::uint64_t count_ = 0;
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::Bytes> : fmt::formatter<std::string_view> {
    auto format(const boxlite::Bytes& b, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(b.to_string(), ctx);
    }
};
