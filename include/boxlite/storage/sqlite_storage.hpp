// SqliteStorage: the Storage policy of real runtimes — box records in <home>/db/boxes.db, shared
// by every process that opens the same home.
//
//   * one row per box: the immutable BoxConfig and the mutable BoxState as JSON, plus the
//     columns lookups need (id, name UNIQUE, created_at, status);
//   * WAL journal, so readers never block the writer, and a busy timeout, so two processes
//     writing at once wait for each other instead of failing with SQLITE_BUSY;
//   * schema_version + ordered migrations. Every open storage holds <home>/lock shared; creating
//     or migrating the file takes it exclusively, so two processes opening an old home do not
//     migrate it twice, and a newer BoxLite never migrates a database an older process has open
//     (it waits up to `migration_wait`, then fails saying so);
//   * update_state_if(): compare-and-swap on the whole state inside one IMMEDIATE transaction,
//     so it is atomic across processes;
//   * boxes.db (and its -wal/-shm) and boxes/<id>/config.json, a human-readable mirror of the
//     config row written on insert, are 0600 in 0700 folders: they hold the box's secrets.
//
// Copies share one connection; every call is thread-safe. The implementation is in
// lib/core/sqlite_storage.cpp (no SQLite in public headers).
#pragma once

#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>
#include <boxlite/storage/home_layout.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

namespace boxlite {

class SqliteStorage {
public:
    /// The newest schema this build writes; a database with a higher version is refused.
    static constexpr int kSchemaVersion = 1;
    static constexpr std::chrono::milliseconds kBusyTimeout{10'000};
    /// How long open() waits for other processes to close the home before creating or migrating.
    static constexpr std::chrono::milliseconds kMigrationWait{10'000};

    /// Opens (creating when absent) the database of the home at `home_dir`, creating the
    /// home's folders and migrating the schema.
    [[nodiscard]] static BoxliteResult<SqliteStorage> open(const std::filesystem::path& home_dir);
    [[nodiscard]] static BoxliteResult<SqliteStorage> open(const std::filesystem::path& home_dir,
                                                           std::chrono::milliseconds migration_wait);

    BoxliteResult<void> insert(const BoxConfig& config, const BoxState& state);
    BoxliteResult<BoxRecord> get(const BoxID& id) const;
    BoxliteResult<BoxRecord> lookup(std::string_view id_or_name) const;
    BoxliteResult<std::vector<BoxRecord>> list() const;
    BoxliteResult<void> update_state(const BoxID& id, const BoxState& state);
    BoxliteResult<bool> update_state_if(const BoxID& id, const BoxState& expected, const BoxState& state);
    /// Durable commits with synchronous=FULL; Relaxed with NORMAL (no sync of its own).
    BoxliteResult<void> remove(const BoxID& id, RemoveSync sync = RemoveSync::Durable);

    /// The schema version found in the file (after migrations: kSchemaVersion).
    [[nodiscard]] BoxliteResult<int> schema_version() const;
    [[nodiscard]] const HomeLayout& layout() const noexcept;

    struct Impl;

private:
    explicit SqliteStorage(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<Impl> impl_;
};

static_assert(Storage<SqliteStorage>);

}  // namespace boxlite
