// Small pieces the store is built from: atomic file writes, bounded reads and running helper
// programs. Internal to lib/image (file locks: lib/base/file_lock.hpp; SQLite: lib/base/sqlite.hpp).
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::image {

/// Writes `data` to a temporary file beside `path`, fsyncs it and renames it over `path`.
[[nodiscard]] BoxliteResult<void> write_file_atomic(const std::filesystem::path& path, std::string_view data);

/// Reads a whole file of at most `max_bytes`.
[[nodiscard]] BoxliteResult<std::string> read_file_bounded(const std::filesystem::path& path, std::uint64_t max_bytes);

/// Runs a program (argv[0] looked up in PATH) and waits; on non-zero exit the error carries the
/// tail of its stderr. With `diagnostics`, stdout is discarded and the tail of stderr is stored
/// there on success too (for programs such as debugfs that report errors but exit 0).
[[nodiscard]] BoxliteResult<void> run_program(const std::vector<std::string>& argv, ErrorKind kind,
                                              std::string* diagnostics = nullptr);

}  // namespace boxlite::image
