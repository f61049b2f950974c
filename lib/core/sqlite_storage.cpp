// SqliteStorage: see include/boxlite/storage/sqlite_storage.hpp for the design.
#include <boxlite/json.hpp>
#include <boxlite/storage/lookup.hpp>
#include <boxlite/storage/sqlite_storage.hpp>

#include "base/file_lock.hpp"
#include "base/sqlite.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>

namespace boxlite {
namespace {

using base::Statement;

/// Ordered migrations: entry i brings the schema from version i to i + 1. Never edit a
/// released entry; append a new one.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the boxes table.
    R"sql(
    CREATE TABLE boxes (
        id          TEXT PRIMARY KEY NOT NULL,   -- ULID, upper case
        name        TEXT UNIQUE,                 -- NULL for unnamed boxes
        created_at  TEXT NOT NULL,               -- RFC 3339 with ns, sorts as text
        engine      TEXT NOT NULL,
        status      TEXT NOT NULL,
        config      TEXT NOT NULL,               -- BoxConfig JSON, immutable
        state       TEXT NOT NULL                -- BoxState JSON
    );
    CREATE INDEX boxes_by_creation ON boxes (created_at, id);
    )sql",
};
static_assert(std::size(kMigrations) == SqliteStorage::kSchemaVersion);

/// An open <home>/lock and the flock held on it (none, shared or exclusive); closing releases it.
using HomeLock = base::FileLock;

/// Creates `path` 0600 when absent and makes an existing one 0600, whatever the umask: box
/// records hold secrets. SQLite gives the -wal and -shm files the database file's mode.
/// An existing file is never opened: closing any descriptor of a file drops every POSIX lock
/// this process holds on it — SQLite's included, on connections this process has open.
BoxliteResult<void> ensure_private_file(const std::filesystem::path& path, bool create) {
    if (create) {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            const int rc = ::fchmod(fd, 0600);  // the umask may have taken the owner's bits
            const int saved = errno;
            ::close(fd);
            if (rc != 0)
                return fail_errno(ErrorKind::Storage, fmt::format("making {} private (mode 0600)", path.string()),
                                  saved);
            return {};
        }
        if (errno != EEXIST) return fail_errno(ErrorKind::Storage, fmt::format("creating {}", path.string()), errno);
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (!create && errno == ENOENT) return {};
        return fail_errno(ErrorKind::Storage, fmt::format("inspecting {}", path.string()), errno);
    }
    if ((st.st_mode & 07777) != 0600 && ::chmod(path.c_str(), 0600) != 0) {
        return fail_errno(ErrorKind::Storage, fmt::format("making {} private (mode 0600)", path.string()), errno);
    }
    return {};
}

/// Writes `text` to `path` via a temporary file and rename, so readers never see half a file.
BoxliteResult<void> write_file_atomically(const std::filesystem::path& path, const std::string& text) {
    const auto tmp = path.string() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("creating {}", tmp), errno);
    std::size_t done = 0;
    while (done < text.size()) {
        const auto n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int saved = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            return fail_errno(ErrorKind::Storage, fmt::format("writing {}", tmp), saved);
        }
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int saved = errno;
        ::unlink(tmp.c_str());
        return fail_errno(ErrorKind::Storage, fmt::format("renaming {} to {}", tmp, path.string()), saved);
    }
    return {};
}

}  // namespace

struct SqliteStorage::Impl {
    Impl(HomeLayout home, HomeLock lock) : layout(std::move(home)), home_lock(std::move(lock)) {}
    HomeLayout layout;
    HomeLock home_lock;
    base::Database db;         // after home_lock: closed before the lock lets a migrator in
    mutable std::mutex mutex;  // one statement sequence at a time on the shared connection

    /// list()'s last answer, valid while the database is unchanged: PRAGMA data_version moves
    /// when another connection (another process, or another storage in this one) commits, and
    /// this connection's own writes move sqlite3_total_changes64(). Parsing every box's JSON
    /// was most of the cost of a listing (GET /v1/boxes).
    struct ListCache {
        std::int64_t data_version = 0;
        std::int64_t own_changes = 0;
        std::vector<BoxRecord> records;
    };
    mutable std::optional<ListCache> list_cache;

    BoxliteResult<BoxRecord> row_to_record(const Statement& st, int first_column) const {
        BOXLITE_TRY(auto config, parse_json_as<BoxConfig>(st.text(first_column), "stored box config"));
        BOXLITE_TRY(auto state, parse_json_as<BoxState>(st.text(first_column + 1),
                                                        fmt::format("stored state of box {}", config.id)));
        return BoxRecord{std::move(config), std::move(state)};
    }

    BoxliteResult<std::vector<BoxRecord>> collect(Statement& st, std::string_view what) const {
        std::vector<BoxRecord> out;
        for (;;) {
            BOXLITE_TRY(const bool row, st.step(what));
            if (!row) break;
            BOXLITE_TRY(auto record, row_to_record(st, 0));
            out.push_back(std::move(record));
        }
        return out;
    }

    /// 0 for a fresh file (no schema_version table yet).
    BoxliteResult<int> read_version() const {
        {
            Statement st(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
            BOXLITE_TRY(const bool row, st.step("reading schema_version"));
            if (!row) return 0;
        }
        Statement st(db, "SELECT version FROM schema_version LIMIT 1");
        BOXLITE_TRY(const bool row, st.step("reading schema_version"));
        if (!row) return 0;
        return static_cast<int>(st.integer(0));
    }

    BoxliteResult<std::string> journal_mode() const {
        Statement st(db, "PRAGMA journal_mode");
        BOXLITE_TRY(const bool row, st.step("reading journal_mode"));
        if (!row) return fail(ErrorKind::Database, "reading journal_mode: no answer");
        return st.text(0);
    }

    BoxliteResult<void> refuse_newer(int version) const {
        if (version > kSchemaVersion) {
            return fail(ErrorKind::Database,
                        "{} has schema version {}, newer than this BoxLite understands ({}); upgrade BoxLite",
                        layout.boxes_db().string(), version, kSchemaVersion);
        }
        return {};
    }

    /// synchronous=FULL for the commits made while it lives (see SqliteStorage::open).
    class Durable {
    public:
        explicit Durable(const base::Database& db) : db_(db) { (void)db_.exec("PRAGMA synchronous=FULL"); }
        ~Durable() { (void)db_.exec("PRAGMA synchronous=NORMAL"); }
        Durable(const Durable&) = delete;
        Durable& operator=(const Durable&) = delete;

    private:
        const base::Database& db_;
    };

    /// Under the exclusive lock: WAL, then every migration the file lacks.
    BoxliteResult<void> migrate() {
        // WAL: readers never block the writer.
        BOXLITE_TRY_VOID(db.exec("PRAGMA journal_mode=WAL", fmt::format("configuring {}", layout.boxes_db().string())));
        BOXLITE_TRY_VOID(
            db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", "creating schema_version"));
        BOXLITE_TRY(int version, read_version());
        BOXLITE_TRY_VOID(refuse_newer(version));
        for (; version < kSchemaVersion; ++version) {
            BOXLITE_TRY_VOID(db.exec("BEGIN IMMEDIATE", "starting migration"));
            auto step = db.exec(kMigrations[version],
                                fmt::format("migrating {} to version {}", layout.boxes_db().string(), version + 1));
            if (step) {
                const auto sql = fmt::format("DELETE FROM schema_version; INSERT INTO schema_version VALUES ({})",
                                             version + 1);
                step = db.exec(sql.c_str(), "recording schema version");
            }
            if (!step) {
                (void)db.exec("ROLLBACK", "rolling back migration");
                return step;
            }
            BOXLITE_TRY_VOID(db.exec("COMMIT", "committing migration"));
        }
        return {};
    }

    /// Leaves this process holding <home>/lock shared with a database at kSchemaVersion in WAL
    /// mode. Creating or migrating the file needs the lock exclusively, so it waits (up to
    /// `wait`) until no other process has the home open: an older BoxLite never finds its
    /// database changed under it. Retries, because two processes upgrading at once each drop
    /// their shared lock when their conversion fails (flock(2)); one of them wins the next round.
    BoxliteResult<void> attach(std::chrono::milliseconds wait) {
        const auto deadline = std::chrono::steady_clock::now() + wait;
        std::minstd_rand jitter(static_cast<unsigned>(::getpid()));
        for (;;) {
            BOXLITE_TRY_VOID(home_lock.lock(HomeLock::Mode::Shared));
            BOXLITE_TRY(int version, read_version());
            BOXLITE_TRY_VOID(refuse_newer(version));
            BOXLITE_TRY(auto mode, journal_mode());
            if (version == kSchemaVersion && mode == "wal") return {};
            BOXLITE_TRY(bool exclusive, home_lock.try_lock(HomeLock::Mode::Exclusive));
            if (exclusive) {
                auto migrated = migrate();
                BOXLITE_TRY_VOID(home_lock.lock(HomeLock::Mode::Shared));
                if (!migrated) return migrated;
                continue;  // checked again under the shared lock
            }
            if (std::chrono::steady_clock::now() >= deadline) {
                return fail(ErrorKind::Database,
                            "cannot {} {} (schema version {} -> {}): another process has the BoxLite home {} open "
                            "(it holds {} shared); stop the BoxLite processes using this home (an older BoxLite "
                            "cannot use the new schema) and retry",
                            version == 0 ? "create" : "migrate", layout.boxes_db().string(), version, kSchemaVersion,
                            layout.root().string(), home_lock.path().string());
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2 + jitter() % 20));
        }
    }
};

BoxliteResult<SqliteStorage> SqliteStorage::open(const std::filesystem::path& home_dir) {
    return open(home_dir, kMigrationWait);
}

BoxliteResult<SqliteStorage> SqliteStorage::open(const std::filesystem::path& home_dir,
                                                 std::chrono::milliseconds migration_wait) {
    HomeLayout layout(home_dir);
    BOXLITE_TRY_VOID(layout.ensure());
    BOXLITE_TRY(auto lock, HomeLock::open(layout.lock_file()));
    auto impl = std::make_shared<Impl>(std::move(layout), std::move(lock));
    const auto path = impl->layout.boxes_db().string();
    // Made before SQLite creates it, so the database and its -wal/-shm are 0600 from the start.
    BOXLITE_TRY_VOID(ensure_private_file(path, /*create=*/true));
    BOXLITE_TRY(impl->db, base::Database::open(path, static_cast<int>(kBusyTimeout.count())));
    // synchronous=NORMAL: in WAL mode a commit is safe from a crash of any process (kill -9),
    // and only a power loss can take the last commits back. That is right for state updates
    // (Running, Stopped, a handle): after a power loss no box runs, and every state is checked
    // against its process on the next look anyway. Rows that must survive a power loss, a new
    // box and a removal, commit with synchronous=FULL (Impl::Durable), which also makes every
    // commit before them durable. Four fsyncs fewer per `run --rm` (about 4 ms each here).
    BOXLITE_TRY_VOID(
        impl->db.exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", fmt::format("configuring {}", path)));
    BOXLITE_TRY_VOID(impl->db.keep_wal_between_connections());
    BOXLITE_TRY_VOID(impl->attach(migration_wait));
    // An older BoxLite left these at the umask's mode.
    for (const char* suffix : {"-wal", "-shm"}) BOXLITE_TRY_VOID(ensure_private_file(path + suffix, /*create=*/false));
    return SqliteStorage(std::move(impl));
}

const HomeLayout& SqliteStorage::layout() const noexcept { return impl_->layout; }

BoxliteResult<int> SqliteStorage::schema_version() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->read_version();
}

BoxliteResult<void> SqliteStorage::insert(const BoxConfig& config, const BoxState& state) {
    const auto config_json = to_json_text(config);
    const auto state_json = to_json_text(state);
    {
        std::lock_guard lock(impl_->mutex);
        auto& db = impl_->db;
        Impl::Durable durable(db);
        Statement st(db,
                     "INSERT INTO boxes (id, name, created_at, engine, status, config, state) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        st.bind(1, config.id.view());
        if (config.name) st.bind(2, *config.name);
        else st.bind_null(2);
        st.bind(3, detail::format_rfc3339(config.created_at));
        st.bind(4, config.engine);
        st.bind(5, to_string(state.status));
        st.bind(6, config_json);
        st.bind(7, state_json);
        if (auto inserted = st.run(fmt::format("inserting box {}", config.id)); !inserted) {
            if (db.extended_errcode() == SQLITE_CONSTRAINT_UNIQUE && config.name) {
                return fail(ErrorKind::AlreadyExists, "box with name '{}' already exists", *config.name);
            }
            if (db.extended_errcode() == SQLITE_CONSTRAINT_PRIMARYKEY) {
                return fail(ErrorKind::AlreadyExists, "box with id {} already exists", config.id);
            }
            return inserted;
        }
    }
    // The mirror is a convenience for humans and tools; the database row is the truth. A box
    // whose mirror cannot be written is still taken back out, so create() either fully
    // succeeds or leaves nothing.
    std::error_code ec;
    std::filesystem::create_directories(impl_->layout.box_dir(config.id), ec);
    auto mirrored = ec ? fail(ErrorKind::Storage, "creating {}: {}", impl_->layout.box_dir(config.id).string(),
                              ec.message())
                       : write_file_atomically(impl_->layout.box_config_mirror(config.id),
                                               to_json_text(config, 2) + "\n");
    if (!mirrored) {
        (void)remove(config.id);
        std::filesystem::remove_all(impl_->layout.box_dir(config.id), ec);
        return mirrored;
    }
    return {};
}

BoxliteResult<BoxRecord> SqliteStorage::get(const BoxID& id) const {
    std::lock_guard lock(impl_->mutex);
    Statement st(impl_->db, "SELECT config, state FROM boxes WHERE id = ?1");
    st.bind(1, id.view());
    BOXLITE_TRY(const bool row, st.step(fmt::format("reading box {}", id)));
    if (!row) return detail::not_found(id.view());
    return impl_->row_to_record(st, 0);
}

BoxliteResult<BoxRecord> SqliteStorage::lookup(std::string_view id_or_name) const {
    std::lock_guard lock(impl_->mutex);
    const auto& db = impl_->db;
    // 1. exact id (a name can never be a full id: create refuses it), 2. exact name, 3. prefix.
    const bool id_like = BoxID::is_valid_prefix(id_or_name);
    const auto prefix = id_like ? detail::normalize_id_prefix(id_or_name) : std::string();
    if (id_like && prefix.size() == BoxID::kLength) {
        Statement st(db, "SELECT config, state FROM boxes WHERE id = ?1");
        st.bind(1, prefix);
        BOXLITE_TRY(const bool row, st.step(fmt::format("looking up id '{}'", id_or_name)));
        if (row) return impl_->row_to_record(st, 0);
    }
    {
        Statement st(db, "SELECT config, state FROM boxes WHERE name = ?1");
        st.bind(1, id_or_name);
        BOXLITE_TRY(const bool row, st.step(fmt::format("looking up '{}'", id_or_name)));
        if (row) return impl_->row_to_record(st, 0);
    }
    if (!id_like) return detail::not_found(id_or_name);
    // Ids are upper-case Crockford base32, so the prefix range is [prefix, prefix + '~'). A few
    // candidates are enough to name in an error; the window count says how many match in all.
    Statement st(db,
                 "SELECT config, state, count(*) OVER () FROM boxes WHERE id >= ?1 AND id < ?2 ORDER BY id "
                 "LIMIT ?3");
    st.bind(1, prefix);
    st.bind(2, prefix + "~");
    st.bind(3, static_cast<std::int64_t>(detail::kPrefixCandidatesShown));
    std::vector<BoxRecord> candidates;
    std::size_t total = 0;
    for (;;) {
        BOXLITE_TRY(const bool row, st.step(fmt::format("looking up id prefix '{}'", id_or_name)));
        if (!row) break;
        BOXLITE_TRY(auto record, impl_->row_to_record(st, 0));
        if (record.config.id.view() == prefix) return record;
        total = static_cast<std::size_t>(st.integer(2));
        candidates.push_back(std::move(record));
    }
    return detail::single_prefix_match(id_or_name, std::move(candidates), total);
}

BoxliteResult<std::vector<BoxRecord>> SqliteStorage::list() const {
    std::lock_guard lock(impl_->mutex);
    // The version is read before the rows: a commit in between makes the next call read again.
    Statement version(impl_->db, "PRAGMA data_version");
    BOXLITE_TRY(const bool has_version, version.step("reading the version of the box database"));
    const std::int64_t data_version = has_version ? version.integer(0) : -1;
    const std::int64_t own_changes = sqlite3_total_changes64(impl_->db.get());
    auto& cache = impl_->list_cache;
    if (has_version && cache && cache->data_version == data_version && cache->own_changes == own_changes) {
        return cache->records;
    }
    Statement st(impl_->db, "SELECT config, state FROM boxes ORDER BY created_at, id");
    BOXLITE_TRY(auto records, impl_->collect(st, "listing boxes"));
    if (has_version) cache = Impl::ListCache{data_version, own_changes, records};
    return records;
}

BoxliteResult<void> SqliteStorage::update_state(const BoxID& id, const BoxState& state) {
    const auto state_json = to_json_text(state);
    std::lock_guard lock(impl_->mutex);
    Statement st(impl_->db, "UPDATE boxes SET status = ?2, state = ?3 WHERE id = ?1");
    st.bind(1, id.view());
    st.bind(2, to_string(state.status));
    st.bind(3, state_json);
    BOXLITE_TRY_VOID(st.run(fmt::format("updating state of box {}", id)));
    if (impl_->db.changes() == 0) return detail::not_found(id.view());
    return {};
}

BoxliteResult<bool> SqliteStorage::update_state_if(const BoxID& id, const BoxState& expected, const BoxState& state) {
    const auto state_json = to_json_text(state);
    std::lock_guard lock(impl_->mutex);
    auto& db = impl_->db;
    // IMMEDIATE: the write lock is taken before the read, so no other process can change the
    // row between the comparison and the update.
    BOXLITE_TRY_VOID(db.exec("BEGIN IMMEDIATE", fmt::format("updating state of box {}", id)));
    auto body = [&]() -> BoxliteResult<bool> {
        Statement read(db, "SELECT state FROM boxes WHERE id = ?1");
        read.bind(1, id.view());
        BOXLITE_TRY(const bool row, read.step(fmt::format("reading state of box {}", id)));
        if (!row) return detail::not_found(id.view());
        BOXLITE_TRY(auto current, parse_json_as<BoxState>(read.text(0), fmt::format("stored state of box {}", id)));
        if (current != expected) return false;
        Statement write(db, "UPDATE boxes SET status = ?2, state = ?3 WHERE id = ?1");
        write.bind(1, id.view());
        write.bind(2, to_string(state.status));
        write.bind(3, state_json);
        BOXLITE_TRY_VOID(write.run(fmt::format("updating state of box {}", id)));
        return true;
    };
    auto swapped = body();
    if (!swapped || !*swapped) {
        (void)db.exec("ROLLBACK", "rolling back state update");
        return swapped;
    }
    BOXLITE_TRY_VOID(db.exec("COMMIT", fmt::format("committing state of box {}", id)));
    return true;
}

BoxliteResult<void> SqliteStorage::remove(const BoxID& id, RemoveSync sync) {
    {
        std::lock_guard lock(impl_->mutex);
        // A Relaxed delete (an auto-remove box's) commits without a sync of its own
        // (synchronous=NORMAL): safe from any process crash (WAL), and a power loss can only take
        // back the last commits, leaving the row as an earlier commit of its own made it: the rows
        // a power loss before the delete could leave already, which the next look at the box
        // settles (a dead engine: Stopped, then reaped; Removing: finished).
        // A Durable delete (a kept box's) stays FULL: once removed, it must not come back
        // (docs/performance.md, "The FULL syncs").
        std::optional<Impl::Durable> durable;
        if (sync == RemoveSync::Durable) durable.emplace(impl_->db);
        Statement st(impl_->db, "DELETE FROM boxes WHERE id = ?1");
        st.bind(1, id.view());
        BOXLITE_TRY_VOID(st.run(fmt::format("removing box {}", id)));
        if (impl_->db.changes() == 0) return detail::not_found(id.view());
    }
    std::error_code ec;
    std::filesystem::remove(impl_->layout.box_config_mirror(id), ec);
    return {};
}

}  // namespace boxlite
