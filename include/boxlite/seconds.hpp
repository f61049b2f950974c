// Seconds: a duration in whole seconds, as the reference's timeouts and CPU-time limits.
// Converts to std::chrono for the APIs that take milliseconds (BoxCommand::timeout).
#pragma once

#include <boxlite/error.hpp>

#include <chrono>
#include <compare>
#include <cstdint>
#include <limits>
#include <string_view>

namespace boxlite {

class Seconds {
public:
    constexpr Seconds() = default;
    constexpr explicit Seconds(std::uint64_t count) : count_(count) {}

    [[nodiscard]] constexpr std::uint64_t count() const noexcept { return count_; }
    [[nodiscard]] constexpr std::chrono::seconds chrono() const noexcept {
        return std::chrono::seconds(static_cast<std::chrono::seconds::rep>(count_));
    }
    /// Implicit on purpose: `BoxCommand(...).timeout(Seconds{30})` reads as the reference.
    constexpr operator std::chrono::milliseconds() const noexcept { return chrono(); }

    /// "30", "30s", "5m", "2h".
    [[nodiscard]] static BoxliteResult<Seconds> parse(std::string_view text) {
        std::uint64_t value = 0;
        std::size_t i = 0;
        for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
            if (value > std::numeric_limits<std::uint32_t>::max()) break;
            value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
        }
        const auto unit = text.substr(i);
        std::uint64_t factor = 0;
        if (unit.empty() || unit == "s") factor = 1;
        else if (unit == "m") factor = 60;
        else if (unit == "h") factor = 3600;
        if (i == 0 || factor == 0 || value > std::numeric_limits<std::uint32_t>::max()) {
            return fail(ErrorKind::InvalidArgument,
                        "duration '{}' must be a number of seconds, optionally with s, m or h", text);
        }
        return Seconds(value * factor);
    }

    friend constexpr auto operator<=>(const Seconds&, const Seconds&) = default;

private:
    std::uint64_t count_ = 0;
};

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::Seconds> : fmt::formatter<std::string_view> {
    auto format(const boxlite::Seconds& s, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("{}s", s.count()), ctx);
    }
};
