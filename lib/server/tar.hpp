// Tar archives for the files routes (libarchive): unpacking a client's upload, refusing entries
// that would land outside the target folder, and packing a tree that was copied out of a box.
#pragma once

#include <boxlite/error.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace boxlite::server {

/// Unpacks `archive` (tar, optionally compressed) into `dest`. Refuses absolute names, ".."
/// components, links pointing outside and device nodes (InvalidArgument, naming the entry).
[[nodiscard]] BoxliteResult<void> extract_tar(std::string_view archive, const std::filesystem::path& dest);

/// A tar of `base / name` (a file or a tree), its entries named from `name`.
[[nodiscard]] BoxliteResult<std::string> create_tar(const std::filesystem::path& base, const std::string& name);

}  // namespace boxlite::server
