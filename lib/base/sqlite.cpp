// See sqlite.hpp.
#include "sqlite.hpp"

namespace boxlite::base {
namespace {

/// The caller's `what`, or the database file's name when there is none.
std::string context(sqlite3* db, std::string_view what) {
    if (!what.empty()) return std::string(what);
    const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
    if (file == nullptr || *file == '\0') return "SQLite database";
    return std::filesystem::path(file).filename().string();
}

}  // namespace

tl::unexpected<BoxliteError> sqlite_error(sqlite3* db, std::string_view what) {
    return fail(ErrorKind::Database, "{}: {} (sqlite code {})", context(db, what),
                db != nullptr ? sqlite3_errmsg(db) : "out of memory",
                db != nullptr ? sqlite3_extended_errcode(db) : SQLITE_NOMEM);
}

BoxliteResult<void> sqlite_exec(sqlite3* db, const char* sql, std::string_view what) {
    char* message = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
        std::string text = message != nullptr ? message : sqlite3_errmsg(db);
        sqlite3_free(message);
        return fail(ErrorKind::Database, "{}: {} (sqlite code {})", context(db, what), text,
                    sqlite3_extended_errcode(db));
    }
    return {};
}

BoxliteResult<Database> Database::open(const std::filesystem::path& path, int busy_timeout_ms) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &db,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
    Database owned(db);  // sqlite3_open_v2 may hand back a handle even when it fails
    if (rc != SQLITE_OK) {
        return fail(ErrorKind::Database, "opening {}: {}", path.string(),
                    db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
    sqlite3_busy_timeout(db, busy_timeout_ms);
    return owned;
}

BoxliteResult<void> Database::keep_wal_between_connections() const {
    int persist = 1;
    if (const int rc = sqlite3_file_control(db_, "main", SQLITE_FCNTL_PERSIST_WAL, &persist); rc != SQLITE_OK) {
        return fail(ErrorKind::Database, "keeping the WAL of {}: {}", sqlite3_db_filename(db_, "main"),
                    sqlite3_errstr(rc));
    }
    if (const int rc = sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr); rc != SQLITE_OK) {
        return fail(ErrorKind::Database, "configuring {}: {}", sqlite3_db_filename(db_, "main"), sqlite3_errstr(rc));
    }
    if (sqlite3_wal_autocheckpoint(db_, kWalCheckpointPages) != SQLITE_OK) return sqlite_error(db_, "");
    const auto limit = fmt::format("PRAGMA journal_size_limit={}", kWalSizeLimit);
    return exec(limit.c_str());
}

Database& Database::operator=(Database&& other) noexcept {
    if (this != &other) {
        if (db_ != nullptr) sqlite3_close_v2(db_);
        db_ = std::exchange(other.db_, nullptr);
    }
    return *this;
}

Database::~Database() {
    if (db_ != nullptr) sqlite3_close_v2(db_);
}

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
    prepare_rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, std::string_view text) {
    if (stmt_ != nullptr) sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
    if (stmt_ != nullptr) sqlite3_bind_int64(stmt_, index, value);
    return *this;
}

Statement& Statement::bind_null(int index) {
    if (stmt_ != nullptr) sqlite3_bind_null(stmt_, index);
    return *this;
}

BoxliteResult<bool> Statement::step(std::string_view what) {
    if (prepare_rc_ != SQLITE_OK || stmt_ == nullptr) {
        return fail(ErrorKind::Database, "{}: preparing a statement: {} (sqlite code {})", context(db_, what),
                    sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
    }
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return sqlite_error(db_, what);
}

BoxliteResult<void> Statement::run(std::string_view what) {
    BOXLITE_TRY(const bool row, step(what));
    (void)row;
    return {};
}

std::string Statement::text(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return text == nullptr ? std::string()
                           : std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::int64_t Statement::integer(int column) const { return sqlite3_column_int64(stmt_, column); }

}  // namespace boxlite::base
