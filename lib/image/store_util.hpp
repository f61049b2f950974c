// Small pieces the store is built from: atomic file writes, bounded reads, a thin SQLite
// statement wrapper and running a tool. Internal to lib/image. (Its file locks are
// lib/base/file_lock.hpp.)
#pragma once

#include <boxlite/error.hpp>

#include <sqlite3.h>

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

class Statement {
public:
    Statement(sqlite3* db, std::string_view sql);
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement();

    Statement& bind(int index, std::string_view text);
    Statement& bind(int index, std::int64_t value);
    /// true: a row is available; false: done. Errors become Database errors.
    [[nodiscard]] BoxliteResult<bool> step();
    [[nodiscard]] BoxliteResult<void> run();
    [[nodiscard]] std::string text(int column) const;
    [[nodiscard]] std::int64_t integer(int column) const;

private:
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
    int prepare_rc_ = SQLITE_OK;
};

[[nodiscard]] BoxliteResult<void> sql_exec(sqlite3* db, const char* sql);

/// Runs a program (argv[0] looked up in PATH) and waits; on non-zero exit the error carries the
/// tail of its stderr. With `diagnostics`, stdout is discarded and the tail of stderr is stored
/// there on success too (for programs such as debugfs that report errors but exit 0).
[[nodiscard]] BoxliteResult<void> run_program(const std::vector<std::string>& argv, ErrorKind kind,
                                              std::string* diagnostics = nullptr);

}  // namespace boxlite::image
