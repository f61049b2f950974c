// The id-or-name lookup rule shared by every Storage, so MemoryStorage and SqliteStorage
// answer the same way:
//   1. a box whose full id is `key` (case-insensitive, Crockford aliases accepted);
//   2. a box whose name is exactly `key`;
//   3. the single box whose id starts with `key` (InvalidArgument, listing them, when several do).
// An id always wins over a name, and create() refuses names that are a valid id or a prefix of
// an existing box's id, so a name can never pass for another box's id.
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::detail {

/// Upper-cases and maps Crockford aliases so prefixes compare with stored ids.
[[nodiscard]] inline std::string normalize_id_prefix(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        if (c == 'I' || c == 'L') c = '1';
        if (c == 'O') c = '0';
    }
    return out;
}

[[nodiscard]] inline tl::unexpected<BoxliteError> not_found(std::string_view id_or_name) {
    return fail(ErrorKind::NotFound, "{}", id_or_name);
}

/// How many of the boxes an ambiguous prefix matches the error names.
inline constexpr std::size_t kPrefixCandidatesShown = 8;

/// Picks the match among `candidates` (boxes whose id starts with the prefix; a storage may
/// pass only the first few) out of `total` matches in all.
[[nodiscard]] inline BoxliteResult<BoxRecord> single_prefix_match(std::string_view key,
                                                                  std::vector<BoxRecord> candidates,
                                                                  std::size_t total) {
    if (candidates.empty()) return not_found(key);
    if (total < candidates.size()) total = candidates.size();
    if (total > 1) {
        std::string ids;
        const std::size_t shown = std::min(candidates.size(), kPrefixCandidatesShown);
        for (std::size_t i = 0; i < shown; ++i) ids += (ids.empty() ? "" : ", ") + candidates[i].config.id.short_id();
        if (total > shown) ids += fmt::format(" and {} more", total - shown);
        return fail(ErrorKind::InvalidArgument,
                    "box id prefix '{}' is ambiguous: it matches {} boxes ({}); give more characters", key, total, ids);
    }
    return std::move(candidates.front());
}

}  // namespace boxlite::detail
