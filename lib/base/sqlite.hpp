// The one SQLite wrapper: an owned connection, prepared statements, and errors as BoxliteResult
// (ErrorKind::Database, naming what failed and SQLite's message and extended code). Used by the
// box store (lib/core/sqlite_storage.cpp) and the image catalog (lib/image/catalog.cpp).
//
// Errors say "<what>: <SQLite's message> (sqlite code N)"; where a caller gives no `what`, the
// database file's name stands in. After a failed step() the connection still holds the error,
// so callers may look at extended_errcode() to tell, for example, a UNIQUE violation apart.
#pragma once

#include <boxlite/error.hpp>

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

namespace boxlite::base {

/// A Database error for the connection's last failure: "<what>: <message> (sqlite code N)".
[[nodiscard]] tl::unexpected<BoxliteError> sqlite_error(sqlite3* db, std::string_view what);

/// Runs one or more SQL statements that return no rows (PRAGMAs, DDL, BEGIN/COMMIT/ROLLBACK).
[[nodiscard]] BoxliteResult<void> sqlite_exec(sqlite3* db, const char* sql, std::string_view what = {});

/// An open connection, closed on destruction (sqlite3_close_v2: statements still open keep it
/// alive until they are finalized).
class Database {
public:
    /// The auto-checkpoint threshold keep_wal_between_connections() sets, in WAL frames (pages).
    static constexpr int kWalCheckpointPages = 64;
    /// And the size the WAL file is truncated back to after a checkpoint restarts it.
    static constexpr std::int64_t kWalSizeLimit = 512 * 1024;

    /// Opens (creating if needed) `path` read-write in serialized mode, with a busy timeout.
    [[nodiscard]] static BoxliteResult<Database> open(const std::filesystem::path& path, int busy_timeout_ms);

    Database() = default;
    Database(Database&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
    Database& operator=(Database&& other) noexcept;
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database();

    [[nodiscard]] sqlite3* get() const noexcept { return db_; }
    [[nodiscard]] BoxliteResult<void> exec(const char* sql, std::string_view what = {}) const {
        return sqlite_exec(db_, sql, what);
    }
    /// For a WAL database that many short-lived processes open in turn (every CLI command): the
    /// -wal and -shm files stay when the last connection closes, and closing does not
    /// checkpoint. Without it each process deletes both files, checkpoints with two fsyncs, and
    /// the next one makes them again.
    ///
    /// The WAL is kept short all the same (kWalCheckpointPages): when no process has the
    /// database open, the next one to open it rebuilds the WAL index by reading and
    /// checksumming every frame written since the last checkpoint. At SQLite's default of 1000
    /// pages that was up to 4 MB, about 2 ms of every command on average in a `run --rm` loop;
    /// a checkpoint of a database this small (a few pages) costs two fsyncs.
    [[nodiscard]] BoxliteResult<void> keep_wal_between_connections() const;
    /// Rows the last INSERT, UPDATE or DELETE changed.
    [[nodiscard]] std::int64_t changes() const noexcept { return sqlite3_changes64(db_); }
    /// The extended result code of the last failure (SQLITE_CONSTRAINT_UNIQUE, …).
    [[nodiscard]] int extended_errcode() const noexcept { return sqlite3_extended_errcode(db_); }

private:
    explicit Database(sqlite3* db) : db_(db) {}
    sqlite3* db_ = nullptr;
};

/// A prepared statement. A statement that fails to prepare reports that at its first step(), so
/// call sites stay one expression: `Statement st(db, "…"); st.bind(1, x); BOXLITE_TRY(row, st.step());`.
class Statement {
public:
    Statement(sqlite3* db, std::string_view sql);
    Statement(const Database& db, std::string_view sql) : Statement(db.get(), sql) {}
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement();

    Statement& bind(int index, std::string_view text);
    Statement& bind(int index, std::int64_t value);
    Statement& bind_null(int index);

    /// true: a row is available; false: the statement is done. `what` names the operation in
    /// the error (default: the database file's name).
    [[nodiscard]] BoxliteResult<bool> step(std::string_view what = {});
    /// Steps once and ignores any row (INSERT, UPDATE, DELETE).
    [[nodiscard]] BoxliteResult<void> run(std::string_view what = {});

    [[nodiscard]] std::string text(int column) const;
    [[nodiscard]] std::int64_t integer(int column) const;

private:
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
    int prepare_rc_ = SQLITE_OK;
};

}  // namespace boxlite::base
