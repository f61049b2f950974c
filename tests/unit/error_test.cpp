#include <boxlite/box_id.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>

#include <gtest/gtest.h>

namespace boxlite {
namespace {

TEST(BoxliteError, DisplaysWithTheReferencePrefix) {
    BoxliteError error(ErrorKind::Config, "CPU count must be between 1 and 8");
    EXPECT_EQ(error.to_string(), "configuration error: CPU count must be between 1 and 8");
    EXPECT_EQ(fmt::format("{}", BoxliteError(ErrorKind::InvalidState, "cannot execute on stopped box")),
              "invalid state: cannot execute on stopped box");
}

TEST(BoxID, GeneratesParsableSortableIds) {
    const auto first = BoxID::generate();
    const auto parsed = BoxID::parse(first.str());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_EQ(*parsed, first);
    EXPECT_EQ(first.short_id().size(), BoxID::kShortLength);
    EXPECT_FALSE(BoxID::parse("not-a-ulid"));
}

}  // namespace
}  // namespace boxlite
