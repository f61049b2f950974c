// RFC 3339 timestamps with nanoseconds ("2026-01-02T03:04:05.123456789Z") for JSON and the
// database: lossless for std::chrono::system_clock on Linux, so stored records compare equal.
#pragma once

#include <boxlite/error.hpp>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

namespace boxlite::detail {

[[nodiscard]] inline std::string format_rfc3339(std::chrono::system_clock::time_point tp) {
    const auto ns_total = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
    std::int64_t seconds = ns_total / 1'000'000'000;
    std::int64_t nanos = ns_total % 1'000'000'000;
    if (nanos < 0) {
        nanos += 1'000'000'000;
        --seconds;
    }
    const auto time = static_cast<std::time_t>(seconds);
    std::tm tm{};
    gmtime_r(&time, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, nanos);
}

/// Accepts "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (fraction 0..9 digits). Offsets other than Z are
/// rejected: BoxLite writes UTC only, anything else is corrupt metadata.
[[nodiscard]] inline BoxliteResult<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text) {
    auto bad = [&] {
        return fail(ErrorKind::MetadataError, "timestamp '{}' is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.fff]Z)", text);
    };
    auto digits = [&](std::size_t pos, std::size_t count, int& out) {
        if (pos + count > text.size()) return false;
        int value = 0;
        for (std::size_t i = pos; i < pos + count; ++i) {
            if (text[i] < '0' || text[i] > '9') return false;
            value = value * 10 + (text[i] - '0');
        }
        out = value;
        return true;
    };
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
    if (text.size() < 20 || !digits(0, 4, year) || text[4] != '-' || !digits(5, 2, month) || text[7] != '-' ||
        !digits(8, 2, day) || (text[10] != 'T' && text[10] != 't') || !digits(11, 2, hour) || text[13] != ':' ||
        !digits(14, 2, minute) || text[16] != ':' || !digits(17, 2, second)) {
        return bad();
    }
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return bad();
    // system_clock counts nanoseconds in 64 bits: only years 1678..2261 are representable.
    if (year < 1678 || year > 2261) return bad();
    std::size_t pos = 19;
    std::int64_t nanos = 0;
    if (text[pos] == '.') {
        ++pos;
        std::size_t count = 0;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
            if (count == 9) return bad();
            nanos = nanos * 10 + (text[pos] - '0');
            ++pos;
            ++count;
        }
        if (count == 0) return bad();
        for (; count < 9; ++count) nanos *= 10;
    }
    if (pos + 1 != text.size() || (text[pos] != 'Z' && text[pos] != 'z')) return bad();
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    const std::time_t seconds = timegm(&tm);
    return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::seconds(seconds) + std::chrono::nanoseconds(nanos)));
}

}  // namespace boxlite::detail
