// The Storage contract, checked identically on MemoryStorage and SqliteStorage (typed tests),
// plus what only SqliteStorage does: real files, reopen, schema versions, corrupt rows.
#include <boxlite/json.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/storage/sqlite_storage.hpp>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <thread>

#include <support/support.hpp>

namespace boxlite {
namespace {

using test::TempDir;

BoxConfig config_with(std::string_view id, std::optional<std::string> name = std::nullopt) {
    BoxConfig c;
    c.id = *BoxID::parse(id);
    c.name = std::move(name);
    c.engine = "mock";
    return c;
}

template <class S>
struct StorageFactory;

template <>
struct StorageFactory<MemoryStorage> {
    MemoryStorage make() { return MemoryStorage{}; }
};

template <>
struct StorageFactory<SqliteStorage> {
    TempDir dir;
    SqliteStorage make() { return *SqliteStorage::open(dir.path() / "home"); }
};

template <class S>
class StorageContract : public ::testing::Test {
protected:
    StorageFactory<S> factory_;
    S storage_ = factory_.make();
};

using StorageTypes = ::testing::Types<MemoryStorage, SqliteStorage>;
TYPED_TEST_SUITE(StorageContract, StorageTypes);

TYPED_TEST(StorageContract, InsertGetUpdateRemove) {
    auto config = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "alpha");
    ASSERT_TRUE(this->storage_.insert(config, BoxState{}));
    auto got = this->storage_.get(config.id);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->config, config);

    BoxState running;
    running.status = BoxStatus::Running;
    running.handle = EngineHandle{1, 2, "pipe:x", {}};
    ASSERT_TRUE(this->storage_.update_state(config.id, running));
    EXPECT_EQ(this->storage_.get(config.id)->state, running);

    ASSERT_TRUE(this->storage_.remove(config.id));
    auto gone = this->storage_.get(config.id);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().to_string(), "box not found: 01ARZ3NDEKTSV4RRFFQ69G5FAV");
    EXPECT_EQ(this->storage_.remove(config.id).error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(this->storage_.update_state(config.id, running).error().kind(), ErrorKind::NotFound);
}

// A Relaxed remove (an auto-remove box's) differs only in its durability against a power loss:
// the row goes, the name is free again, and a second remove finds nothing, as with a Durable one.
TYPED_TEST(StorageContract, RelaxedRemoveRemovesLikeDurable) {
    auto config = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAW", "transient");
    ASSERT_TRUE(this->storage_.insert(config, BoxState{}));
    ASSERT_TRUE(this->storage_.remove(config.id, RemoveSync::Relaxed));
    EXPECT_EQ(this->storage_.get(config.id).error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(this->storage_.remove(config.id, RemoveSync::Relaxed).error().kind(), ErrorKind::NotFound);
    auto again = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAX", "transient");
    ASSERT_TRUE(this->storage_.insert(again, BoxState{}));
    EXPECT_EQ(this->storage_.lookup("transient")->config.id, again.id);
}

TYPED_TEST(StorageContract, IdsAndNamesAreUnique) {
    auto first = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "alpha");
    ASSERT_TRUE(this->storage_.insert(first, BoxState{}));
    auto same_id = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "beta");
    EXPECT_EQ(this->storage_.insert(same_id, BoxState{}).error().kind(), ErrorKind::AlreadyExists);
    auto same_name = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAW", "alpha");
    auto clash = this->storage_.insert(same_name, BoxState{});
    ASSERT_FALSE(clash);
    EXPECT_EQ(clash.error().kind(), ErrorKind::AlreadyExists);
    EXPECT_NE(clash.error().message().find("alpha"), std::string::npos);
    // Unnamed boxes never clash with each other.
    ASSERT_TRUE(this->storage_.insert(config_with("01ARZ3NDEKTSV4RRFFQ69G5FB0"), BoxState{}));
    ASSERT_TRUE(this->storage_.insert(config_with("01ARZ3NDEKTSV4RRFFQ69G5FB1"), BoxState{}));
    EXPECT_EQ(this->storage_.list()->size(), 3U);
}

TYPED_TEST(StorageContract, LookupByNameIdAndPrefix) {
    ASSERT_TRUE(this->storage_.insert(config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "alpha"), BoxState{}));
    ASSERT_TRUE(this->storage_.insert(config_with("01ARZ3NDEKTSV4RRFFQ69G5FB0", "beta"), BoxState{}));
    ASSERT_TRUE(this->storage_.insert(config_with("01BX5ZZKBKACTAV9WEVGEMMVRZ"), BoxState{}));
    EXPECT_EQ(this->storage_.lookup("alpha")->config.id.str(), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    EXPECT_EQ(this->storage_.lookup("01ARZ3NDEKTSV4RRFFQ69G5FB0")->config.name, "beta");
    EXPECT_EQ(this->storage_.lookup("01arz3ndektsv4rrffq69g5fb0")->config.name, "beta");  // case-insensitive
    EXPECT_FALSE(this->storage_.lookup("01BX")->config.name);                             // unique prefix
    auto ambiguous = this->storage_.lookup("01ARZ");
    ASSERT_FALSE(ambiguous);
    EXPECT_EQ(ambiguous.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(ambiguous.error().message().find("ambiguous"), std::string::npos);
    EXPECT_EQ(this->storage_.lookup("zzz-nothing").error().to_string(), "box not found: zzz-nothing");
    EXPECT_EQ(this->storage_.lookup("01C").error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(this->storage_.lookup("").error().kind(), ErrorKind::NotFound);
    // A name wins over an id prefix it happens to look like.
    ASSERT_TRUE(this->storage_.insert(config_with("01CX5ZZKBKACTAV9WEVGEMMVRZ", "01BX"), BoxState{}));
    EXPECT_EQ(this->storage_.lookup("01BX")->config.name, "01BX");
}

TYPED_TEST(StorageContract, UpdateStateIfIsACompareAndSwap) {
    auto config = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "cas");
    BoxState configured;
    ASSERT_TRUE(this->storage_.insert(config, configured));
    BoxState running = configured;
    running.status = BoxStatus::Running;
    running.handle = EngineHandle{1, 2, "pipe:x", {}};
    // The stored state is `configured`: a swap from it succeeds, a second one from it does not.
    EXPECT_EQ(this->storage_.update_state_if(config.id, configured, running).value(), true);
    EXPECT_EQ(this->storage_.get(config.id)->state, running);
    BoxState stopped = configured;
    stopped.status = BoxStatus::Stopped;
    EXPECT_EQ(this->storage_.update_state_if(config.id, configured, stopped).value(), false);
    EXPECT_EQ(this->storage_.get(config.id)->state, running);  // untouched
    // Any difference counts, not just the status: here only the handle differs.
    BoxState other_handle = running;
    other_handle.handle->pid_start_time = 3;
    EXPECT_EQ(this->storage_.update_state_if(config.id, other_handle, stopped).value(), false);
    EXPECT_EQ(this->storage_.update_state_if(config.id, running, stopped).value(), true);
    EXPECT_EQ(this->storage_.get(config.id)->state, stopped);
    ASSERT_TRUE(this->storage_.remove(config.id));
    EXPECT_EQ(this->storage_.update_state_if(config.id, stopped, running).error().kind(), ErrorKind::NotFound);
}

TYPED_TEST(StorageContract, AnAmbiguousPrefixCountsEveryMatch) {
    // Twelve ids sharing "01ARZ3NDEKTSV4RRFFQ69G5F": more than the error lists.
    const std::string alphabet = "0123456789AB";
    for (char c : alphabet) {
        ASSERT_TRUE(this->storage_.insert(config_with(std::string("01ARZ3NDEKTSV4RRFFQ69G5F") + c + "V"), BoxState{}));
    }
    auto ambiguous = this->storage_.lookup("01ARZ3NDEKTSV4RRFFQ69G5F");
    ASSERT_FALSE(ambiguous);
    EXPECT_EQ(ambiguous.error().kind(), ErrorKind::InvalidArgument);
    const auto& message = ambiguous.error().message();
    EXPECT_NE(message.find("it matches 12 boxes"), std::string::npos) << message;
    EXPECT_NE(message.find("and 4 more"), std::string::npos) << message;
    EXPECT_EQ(this->storage_.lookup("01ARZ3NDEKTSV4RRFFQ69G5FBV")->config.id.str(), "01ARZ3NDEKTSV4RRFFQ69G5FBV");
}

TYPED_TEST(StorageContract, ListIsOldestFirst) {
    auto older = config_with("01BX5ZZKBKACTAV9WEVGEMMVRZ", "older");
    auto newer = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "newer");
    older.created_at = std::chrono::system_clock::now() - std::chrono::hours(1);
    newer.created_at = std::chrono::system_clock::now();
    ASSERT_TRUE(this->storage_.insert(newer, BoxState{}));
    ASSERT_TRUE(this->storage_.insert(older, BoxState{}));
    auto all = this->storage_.list();
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 2U);
    EXPECT_EQ((*all)[0].config.name, "older");
    EXPECT_EQ((*all)[1].config.name, "newer");
}

TEST(SqliteStorageFiles, ReopenSeesTheSameBoxesAndState) {
    TempDir dir;
    auto config = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "persist");
    BoxState state;
    state.status = BoxStatus::Stopped;
    {
        auto storage = SqliteStorage::open(dir.path());
        ASSERT_TRUE(storage);
        ASSERT_TRUE(storage->insert(config, BoxState{}));
        ASSERT_TRUE(storage->update_state(config.id, state));
    }
    auto reopened = SqliteStorage::open(dir.path());
    ASSERT_TRUE(reopened);
    auto record = reopened->get(config.id);
    ASSERT_TRUE(record);
    EXPECT_EQ(record->config, config);
    EXPECT_EQ(record->state, state);
    // The mirror is the same config, readable without SQLite.
    std::ifstream mirror(dir.path() / "boxes" / config.id.str() / "config.json");
    std::string text((std::istreambuf_iterator<char>(mirror)), std::istreambuf_iterator<char>());
    EXPECT_EQ(*parse_json_as<BoxConfig>(text, "mirror"), config);
    EXPECT_EQ(std::filesystem::status(dir.path() / "boxes" / config.id.str() / "config.json").permissions() &
                  std::filesystem::perms::others_read,
              std::filesystem::perms::none);
    ASSERT_TRUE(reopened->remove(config.id));
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "boxes" / config.id.str() / "config.json"));
}

// Every CLI command opens the database in a new process, and the first connection rebuilds the
// WAL index by reading every frame since the last checkpoint. The WAL must stay short (it grew to
// 4 MB at SQLite's default of 1000 pages) and must still persist between connections.
TEST(SqliteStorageFiles, TheWalStaysShortAcrossManyShortLivedConnections) {
    TempDir dir;
    const auto wal = dir.path() / "db" / "boxes.db-wal";
    BoxState running;
    running.status = BoxStatus::Running;
    for (int i = 0; i < 150; ++i) {
        auto storage = SqliteStorage::open(dir.path());
        ASSERT_TRUE(storage) << storage.error().message();
        auto config = config_with(BoxID::generate().str());
        ASSERT_TRUE(storage->insert(config, BoxState{}));
        ASSERT_TRUE(storage->update_state(config.id, running));
        ASSERT_TRUE(storage->remove(config.id, i % 2 == 0 ? RemoveSync::Relaxed : RemoveSync::Durable));
    }
    ASSERT_TRUE(std::filesystem::exists(wal)) << "the WAL is kept between connections";
    EXPECT_LE(std::filesystem::file_size(wal), 600U * 1024U);

    // The frames a new connection must read: what the WAL holds since its last checkpoint.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir.path() / "db" / "boxes.db").c_str(), &db), SQLITE_OK);
    // The first read opens the WAL (a connection finds the journal mode lazily).
    ASSERT_EQ(sqlite3_exec(db, "SELECT count(*) FROM boxes", nullptr, nullptr, nullptr), SQLITE_OK);
    int log_frames = -1;
    int checkpointed = -1;
    ASSERT_EQ(sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &log_frames, &checkpointed), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
    EXPECT_GE(log_frames, 0);
    EXPECT_LE(log_frames, 100);
}

void run_sql(const std::filesystem::path& db_path, const char* sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
}

TEST(SqliteStorageFiles, UsesWalAndRefusesANewerSchema) {
    TempDir dir;
    ASSERT_TRUE(SqliteStorage::open(dir.path()));
    EXPECT_TRUE(std::filesystem::exists(dir.path() / "db" / "boxes.db-wal") ||
                std::filesystem::exists(dir.path() / "db" / "boxes.db"));
    {
        sqlite3* db = nullptr;
        ASSERT_EQ(sqlite3_open((dir.path() / "db" / "boxes.db").c_str(), &db), SQLITE_OK);
        sqlite3_stmt* st = nullptr;
        ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    run_sql(dir.path() / "db" / "boxes.db", "UPDATE schema_version SET version = 99");
    auto refused = SqliteStorage::open(dir.path());
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::Database);
    EXPECT_NE(refused.error().message().find("newer than this BoxLite understands"), std::string::npos);
}

TEST(SqliteStorageFiles, MigratesAnEmptyVersionZeroDatabase) {
    TempDir dir;
    std::filesystem::create_directories(dir.path() / "db");
    run_sql(dir.path() / "db" / "boxes.db", "CREATE TABLE schema_version (version INTEGER NOT NULL)");
    auto storage = SqliteStorage::open(dir.path());
    ASSERT_TRUE(storage) << storage.error().to_string();
    EXPECT_EQ(storage->schema_version().value(), SqliteStorage::kSchemaVersion);
    EXPECT_TRUE(storage->list()->empty());
}

TEST(SqliteStorageFiles, CorruptRowsAreMetadataErrors) {
    TempDir dir;
    auto config = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "bad");
    {
        auto storage = SqliteStorage::open(dir.path());
        ASSERT_TRUE(storage->insert(config, BoxState{}));
    }
    run_sql(dir.path() / "db" / "boxes.db", "UPDATE boxes SET state = '{\"status\": \"exploded\"}'");
    auto storage = SqliteStorage::open(dir.path());
    ASSERT_TRUE(storage);
    auto record = storage->get(config.id);
    ASSERT_FALSE(record);
    EXPECT_EQ(record.error().kind(), ErrorKind::MetadataError);
    EXPECT_NE(record.error().message().find("exploded"), std::string::npos);
}

mode_t mode_of(const std::filesystem::path& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

/// Restores the umask at scope exit.
struct ScopedUmask {
    explicit ScopedUmask(mode_t mask) : saved(::umask(mask)) {}
    ~ScopedUmask() { ::umask(saved); }
    mode_t saved;
};

// Box records hold secrets in clear (the runtime needs them at every start): the database and
// the boxes are the owner's only, whatever the umask.
TEST(SqliteStorageFiles, SecretsAreReadableByTheOwnerOnly) {
    TempDir dir;
    ::chmod(dir.path().c_str(), 0755);  // so only BoxLite's own modes keep others out
    const auto home = dir.path() / "home";
    auto config = config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "secretive");
    config.options.secrets = {Secret{"TOKEN", "s3cret-value", {"api.example.com"}, ""}};
    {
        ScopedUmask open_mask(0);  // the widest: every mode below is BoxLite's choice
        auto storage = SqliteStorage::open(home);
        ASSERT_TRUE(storage) << storage.error().to_string();
        ASSERT_TRUE(storage->insert(config, BoxState{}));
        EXPECT_EQ(mode_of(home), 0700U);  // BoxLite made it
        for (const char* sub : {"db", "boxes", "logs"}) EXPECT_EQ(mode_of(home / sub), 0700U) << sub;
        for (const char* file : {"db/boxes.db", "db/boxes.db-wal", "db/boxes.db-shm"}) {
            ASSERT_TRUE(std::filesystem::exists(home / file)) << file;
            EXPECT_EQ(mode_of(home / file), 0600U) << file;
        }
        EXPECT_EQ(mode_of(home / "boxes" / config.id.str() / "config.json"), 0600U);
    }

    // A home the user made keeps its mode; an older BoxLite's wide folders and files are tightened.
    ::chmod(home.c_str(), 0755);
    ::chmod((home / "db").c_str(), 0755);
    ::chmod((home / "boxes").c_str(), 0755);
    ::chmod((home / "db" / "boxes.db").c_str(), 0644);
    {
        auto storage = SqliteStorage::open(home);
        ASSERT_TRUE(storage) << storage.error().to_string();
        EXPECT_EQ(mode_of(home), 0755U);
        EXPECT_EQ(mode_of(home / "db"), 0700U);
        EXPECT_EQ(mode_of(home / "boxes"), 0700U);
        EXPECT_EQ(mode_of(home / "db" / "boxes.db"), 0600U);
        ASSERT_TRUE(storage->get(config.id));
    }

    if (::geteuid() != 0)
        GTEST_SKIP()
            << "precondition: not root (checking another user's access means becoming nobody); modes checked above";
    // Another user, through the home that lets them in: neither the database nor the mirror.
    const pid_t child = ::fork();
    if (child == 0) {
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
        int failures = 0;
        for (const auto& path : {home / "db" / "boxes.db", home / "db" / "boxes.db-wal",
                                 home / "boxes" / config.id.str() / "config.json"}) {
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd >= 0 || errno != EACCES) ++failures;
            if (fd >= 0) ::close(fd);
        }
        for (const auto& path : {home / "db", home / "boxes"}) {
            if (::opendir(path.c_str()) != nullptr || errno != EACCES) ++failures;
        }
        ::_exit(failures);
    }
    ASSERT_GT(child, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "files another user could open";
}

// The lock file is held shared by every open storage: a BoxLite that needs to create or migrate
// the schema waits for the home to be free, then fails saying why instead of changing a
// database an older process has open.
TEST(SqliteStorageFiles, MigrationWaitsForOtherProcessesToCloseTheHome) {
    TempDir dir;
    std::filesystem::create_directories(dir.path() / "db");
    run_sql(dir.path() / "db" / "boxes.db", "CREATE TABLE schema_version (version INTEGER NOT NULL)");
    // An older BoxLite with the home open (another open file description acts as another process).
    const int other = ::open((dir.path() / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(other, 0);
    ASSERT_EQ(::flock(other, LOCK_SH), 0);
    auto refused = SqliteStorage::open(dir.path(), std::chrono::milliseconds(100));
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::Database);
    EXPECT_NE(refused.error().message().find("another process has the BoxLite home"), std::string::npos)
        << refused.error().message();
    ::close(other);

    auto storage = SqliteStorage::open(dir.path(), std::chrono::milliseconds(100));
    ASSERT_TRUE(storage) << storage.error().to_string();
    EXPECT_EQ(storage->schema_version().value(), SqliteStorage::kSchemaVersion);
    // Now this storage holds it shared: nobody can take it exclusively, anyone can share it.
    const int probe = ::open((dir.path() / "lock").c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(probe, 0);
    EXPECT_NE(::flock(probe, LOCK_EX | LOCK_NB), 0);
    EXPECT_EQ(::flock(probe, LOCK_SH | LOCK_NB), 0);
    ::flock(probe, LOCK_UN);
    auto second = SqliteStorage::open(dir.path(), std::chrono::milliseconds(100));  // up to date: shares
    ASSERT_TRUE(second) << second.error().to_string();
    storage = fail(ErrorKind::Internal, "closed");
    second = fail(ErrorKind::Internal, "closed");
    EXPECT_EQ(::flock(probe, LOCK_EX | LOCK_NB), 0);  // every storage closed: free
    ::close(probe);
}

// Another connection holding the write lock makes writers wait (busy timeout), not fail.
TEST(SqliteStorageFiles, WritersWaitForALockedDatabase) {
    TempDir dir;
    auto storage = SqliteStorage::open(dir.path());
    ASSERT_TRUE(storage);
    sqlite3* other = nullptr;
    ASSERT_EQ(sqlite3_open((dir.path() / "db" / "boxes.db").c_str(), &other), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    // The lock is released only once the insert is about to be issued (and a while after, so
    // the insert meets it); without a busy timeout the insert fails at once with SQLITE_BUSY
    // ("database is locked").
    std::atomic<bool> issuing{false};
    std::thread holder([&] {
        issuing.wait(false);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
    });
    issuing = true;
    issuing.notify_one();
    auto inserted = storage->insert(config_with("01ARZ3NDEKTSV4RRFFQ69G5FAV", "waits"), BoxState{});
    holder.join();
    sqlite3_close(other);
    EXPECT_TRUE(inserted) << inserted.error().to_string();
}

TEST(SqliteStorageFiles, UnwritableHomeIsAStorageError) {
    TempDir dir;
    std::ofstream(dir.path() / "file") << "x";
    auto storage = SqliteStorage::open(dir.path() / "file" / "home");
    ASSERT_FALSE(storage);
    EXPECT_EQ(storage.error().kind(), ErrorKind::Storage);
}

}  // namespace
}  // namespace boxlite
