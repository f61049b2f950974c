#include <boxlite/box_id.hpp>
#include <boxlite/container_id.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite {
namespace {

TEST(BoxliteError, DisplaysWithTheReferencePrefix) {
    BoxliteError error(ErrorKind::Config, "CPU count must be between 1 and 8");
    EXPECT_EQ(error.to_string(), "configuration error: CPU count must be between 1 and 8");
    EXPECT_EQ(fmt::format("{}", BoxliteError(ErrorKind::InvalidState, "cannot execute on stopped box")),
              "invalid state: cannot execute on stopped box");
}

TEST(BoxliteError, EveryKindHasItsPrefixAndIdentifier) {
    struct Row {
        ErrorKind kind;
        std::string_view identifier;
        std::string_view prefix;
    };
    const Row rows[] = {
        {ErrorKind::UnsupportedEngine, "unsupported_engine", "unsupported engine kind"},
        {ErrorKind::Engine, "engine", "engine reported an error"},
        {ErrorKind::Config, "config", "configuration error"},
        {ErrorKind::Storage, "storage", "storage error"},
        {ErrorKind::Image, "image", "images error"},
        {ErrorKind::Portal, "portal", "portal error"},
        {ErrorKind::Network, "network", "network error"},
        {ErrorKind::Rpc, "rpc", "rpc error"},
        {ErrorKind::RpcTransport, "rpc_transport", "rpc transport error"},
        {ErrorKind::Internal, "internal", "internal error"},
        {ErrorKind::Execution, "execution", "execution error"},
        {ErrorKind::Unsupported, "unsupported", "unsupported"},
        {ErrorKind::NotFound, "not_found", "box not found"},
        {ErrorKind::AlreadyExists, "already_exists", "already exists"},
        {ErrorKind::InvalidState, "invalid_state", "invalid state"},
        {ErrorKind::Database, "database", "database error"},
        {ErrorKind::MetadataError, "metadata", "metadata error"},
        {ErrorKind::InvalidArgument, "invalid_argument", "invalid argument"},
        {ErrorKind::Stopped, "stopped", "stopped"},
    };
    std::set<std::string_view> identifiers;
    for (const auto& r : rows) {
        SCOPED_TRACE(r.identifier);
        EXPECT_EQ(to_identifier(r.kind), r.identifier);
        EXPECT_EQ(fmt::format("{}", r.kind), r.identifier);
        EXPECT_EQ(message_prefix(r.kind), r.prefix);
        const BoxliteError error(r.kind, "what failed");
        EXPECT_EQ(error.to_string(), fmt::format("{}: what failed", r.prefix));
        EXPECT_EQ(BoxliteError(r.kind, "").to_string(), r.prefix);
        EXPECT_EQ(error.with_context("box 01J").to_string(), fmt::format("{}: box 01J: what failed", r.prefix));
        EXPECT_EQ(error.with_context("box 01J").kind(), r.kind);
        identifiers.insert(r.identifier);
    }
    EXPECT_EQ(identifiers.size(), std::size(rows));  // no two kinds share an identifier
    EXPECT_EQ(static_cast<int>(ErrorKind::Stopped) + 1, static_cast<int>(std::size(rows)));  // every kind listed
}

TEST(BoxID, GeneratesParsableSortableIds) {
    const auto first = BoxID::generate();
    const auto parsed = BoxID::parse(first.str());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_EQ(*parsed, first);
    EXPECT_EQ(first.short_id().size(), BoxID::kShortLength);
    EXPECT_FALSE(BoxID::parse("not-a-ulid"));

    // Sortable: an id made in a later millisecond sorts after, as text (ULIDs order by time; two
    // made in one millisecond are in random order). Each id here is made after the clock has
    // passed the millisecond of the one before.
    auto now_ms = [] {
        return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    };
    std::vector<std::string> made;
    for (int i = 0; i < 8; ++i) {
        made.push_back(BoxID::generate().str());
        const auto after = now_ms();
        while (now_ms() <= after) {}
    }
    auto sorted = made;
    std::shuffle(sorted.begin(), sorted.end(), std::mt19937(7));
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, made);
}

// A forked child must not carry on its parent's random sequence: two processes forked from one
// parent once created boxes with the same id in the same millisecond.
TEST(BoxID, AForkedChildDrawsItsOwnRandomBits) {
    (void)BoxID::generate();  // the parent's generator is seeded and running
    (void)ContainerID::generate();
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t child = ::fork();
    if (child == 0) {
        const auto text = BoxID::generate().str() + ContainerID::generate().str();
        const auto written = ::write(pipe_fds[1], text.data(), text.size());
        ::_exit(written == static_cast<ssize_t>(text.size()) ? 0 : 1);
    }
    ASSERT_GT(child, 0);
    ::close(pipe_fds[1]);
    const auto mine = BoxID::generate().str() + ContainerID::generate().str();
    std::string theirs(mine.size(), '\0');
    std::size_t got = 0;
    while (got < theirs.size()) {
        const auto n = ::read(pipe_fds[0], theirs.data() + got, theirs.size() - got);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_EQ(got, theirs.size());
    // The random parts: a ULID's last 16 characters, and the whole container id.
    EXPECT_NE(mine.substr(10, 16), theirs.substr(10, 16));
    EXPECT_NE(mine.substr(BoxID::kLength), theirs.substr(BoxID::kLength));
}

}  // namespace
}  // namespace boxlite
