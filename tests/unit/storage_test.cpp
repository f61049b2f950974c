// The Storage contract, checked identically on MemoryStorage and SqliteStorage (typed tests),
// plus what only SqliteStorage does: real files, reopen, schema versions, corrupt rows.
#include <boxlite/json.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/storage/sqlite_storage.hpp>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>

#include "test_support.hpp"

namespace boxlite {
namespace {

using testing::TempDir;

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
    running.handle = EngineHandle{1, 2, "pipe:x"};
    ASSERT_TRUE(this->storage_.update_state(config.id, running));
    EXPECT_EQ(this->storage_.get(config.id)->state, running);

    ASSERT_TRUE(this->storage_.remove(config.id));
    auto gone = this->storage_.get(config.id);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().to_string(), "box not found: 01ARZ3NDEKTSV4RRFFQ69G5FAV");
    EXPECT_EQ(this->storage_.remove(config.id).error().kind(), ErrorKind::NotFound);
    EXPECT_EQ(this->storage_.update_state(config.id, running).error().kind(), ErrorKind::NotFound);
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
    EXPECT_FALSE(this->storage_.lookup("01BX")->config.name);                            // unique prefix
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

TEST(SqliteStorageFiles, UnwritableHomeIsAStorageError) {
    TempDir dir;
    std::ofstream(dir.path() / "file") << "x";
    auto storage = SqliteStorage::open(dir.path() / "file" / "home");
    ASSERT_FALSE(storage);
    EXPECT_EQ(storage.error().kind(), ErrorKind::Storage);
}

}  // namespace
}  // namespace boxlite
