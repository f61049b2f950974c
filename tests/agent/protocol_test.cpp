// Frame codec, payload decoders, ExecResult and the tar extractor against hostile input.
#include <boxlite/execution.hpp>
#include <boxlite/protocol/frame.hpp>
#include <boxlite/protocol/messages.hpp>
#include "protocol/tar.hpp"

#include "raw_tar.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

using namespace boxlite;
using namespace boxlite::protocol;
using boxlite::test::extract_archive;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> bytes(std::initializer_list<int> values) {
    std::vector<std::byte> out;
    for (int v : values) out.push_back(static_cast<std::byte>(v));
    return out;
}

TEST(Frame, RoundTripsAcrossArbitrarySplits) {
    const auto payload = ExecRequest{ExecKind::Command, "echo", {"a", "b"}, {"K=V"}, "/tmp", "", true, 30, 100, 500,
                                     kDefaultWindow, kDefaultWindow, ""}
                             .encode();
    const auto frame = encode_frame(FrameType::Exec, 7, payload);
    for (std::size_t split = 0; split <= frame.size(); ++split) {
        FrameDecoder decoder;
        decoder.feed(std::span(frame).first(split));
        auto first = decoder.next();
        ASSERT_TRUE(first);
        if (split < frame.size()) {
            EXPECT_FALSE(first->has_value());
            decoder.feed(std::span(frame).subspan(split));
            first = decoder.next();
            ASSERT_TRUE(first);
        }
        ASSERT_TRUE(first->has_value());
        EXPECT_EQ((*first)->type, FrameType::Exec);
        EXPECT_EQ((*first)->stream, 7U);
        auto request = ExecRequest::decode((*first)->payload);
        ASSERT_TRUE(request);
        EXPECT_EQ(request->program, "echo");
        EXPECT_EQ(request->args, (std::vector<std::string>{"a", "b"}));
        EXPECT_TRUE(request->tty);
        EXPECT_EQ(request->cols, 100);
        EXPECT_EQ(request->timeout_ms, 500U);
    }
}

TEST(Frame, OversizedLengthIsRejectedBeforeBuffering) {
    FrameDecoder decoder;
    decoder.feed(bytes({0xFF, 0xFF, 0xFF, 0x7F, 20, 0, 0, 0, 1, 0, 0, 0}));
    auto frame = decoder.next();
    ASSERT_FALSE(frame);
    EXPECT_EQ(frame.error().kind(), ErrorKind::Portal);
    EXPECT_NE(frame.error().message().find("exceeds"), std::string::npos);
    EXPECT_FALSE(decoder.next()) << "a failed decoder stays failed";
}

TEST(Frame, UnknownTypeAndReservedBitsAreRejected) {
    for (auto header : {bytes({0, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0}), bytes({0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0}),
                        bytes({0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0}), bytes({0, 0, 0, 0, 4, 0, 0, 1, 0, 0, 0, 0})}) {
        FrameDecoder decoder;
        decoder.feed(header);
        EXPECT_FALSE(decoder.next());
    }
}

TEST(Messages, TruncatedAndTrailingPayloadsFail) {
    const auto good = ExitStatus{-9, true, "killed"}.encode();
    ASSERT_TRUE(ExitStatus::decode(good));
    for (std::size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(ExitStatus::decode(std::span(good).first(n))) << n;
    auto longer = good;
    longer.push_back(std::byte{0});
    EXPECT_FALSE(ExitStatus::decode(longer));
}

TEST(Messages, ImpossibleCountsAndLengthsFail) {
    // A string claiming 4 GiB, and a list claiming a billion items, in a tiny payload.
    EXPECT_FALSE(ErrorMessage::decode(PayloadWriter{}.u32(0xFFFFFFFF).take()));
    auto request = PayloadWriter{}.u8(0).str("p").u32(1000000000).take();
    auto decoded = ExecRequest::decode(request);
    ASSERT_FALSE(decoded);
    EXPECT_NE(decoded.error().message().find("args"), std::string::npos) << decoded.error().to_string();
    EXPECT_FALSE(Credit::decode(PayloadWriter{}.u8(9).u32(1).take())) << "unknown channel";
    EXPECT_FALSE(SignalRequest::decode(PayloadWriter{}.i32(0).take()));
    EXPECT_FALSE(SignalRequest::decode(PayloadWriter{}.i32(65).take()));
}

TEST(ExecResultFormat, SuccessAndFormatting) {
    EXPECT_TRUE((ExecResult{0, std::nullopt, false}).success());
    EXPECT_FALSE((ExecResult{1, std::nullopt, false}).success());
    EXPECT_FALSE((ExecResult{-9, std::nullopt, false}).success()) << "killed by a signal";
    EXPECT_FALSE((ExecResult{0, std::string("the command exceeded its timeout"), true}).success())
        << "a timeout is not a success even when the leader exited 0";
    EXPECT_EQ(fmt::format("{}", ExecResult{0, std::nullopt, false}), "exit_code=0 success=true");
    EXPECT_EQ(fmt::format("{}", ExecResult{-9, std::string("timed out"), true}),
              "exit_code=-9 success=false timed_out=true error=\"timed out\"");
}

// ---- tar ----

std::string archive_of(const fs::path& source, const std::string& top) {
    std::string out;
    tar::Writer writer([&](std::span<const std::byte> data) -> BoxliteResult<void> {
        out.append(reinterpret_cast<const char*>(data.data()), data.size());
        return {};
    });
    EXPECT_TRUE(writer.add_tree(source.string(), top));
    EXPECT_TRUE(writer.finish());
    return out;
}

TEST(Tar, LongNamesAndLinksRoundTrip) {
    test::TempDir src, dst;
    const std::string long_name(150, 'n');
    fs::create_directories(src.path() / "t" / long_name);
    test::write_file(src.path() / "t" / long_name / "f", "data");
    fs::create_symlink(std::string(200, 'l'), src.path() / "t/long-link");
    ASSERT_TRUE(extract_archive(archive_of(src.path() / "t", "t"), dst.path()));
    EXPECT_EQ(test::read_file(dst.path() / "t" / long_name / "f"), "data");
    EXPECT_EQ(fs::read_symlink(dst.path() / "t/long-link"), std::string(200, 'l'));
}

TEST(Tar, DotDotIsRefused) {
    test::TempDir src, dst;
    test::write_file(src.path() / "p", "x");
    fs::create_directories(dst.path() / "inner");
    auto result = extract_archive(archive_of(src.path() / "p", "../../evil"), dst.path() / "inner");
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("escapes"), std::string::npos);
    EXPECT_FALSE(fs::exists(dst.path() / "evil"));
}

TEST(Tar, WritingThroughAPlantedSymlinkIsRefused) {
    test::TempDir src, dst, outside;
    // Archive 1 plants "a -> <outside>"; archive 2 then writes "a/owned".
    fs::create_symlink(outside.path(), src.path() / "a");
    ASSERT_TRUE(extract_archive(archive_of(src.path() / "a", "a"), dst.path()));
    test::TempDir src2;
    test::write_file(src2.path() / "owned", "x");
    auto archive = archive_of(src2.path() / "owned", "a/owned");
    auto result = extract_archive(archive, dst.path());
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("symlink"), std::string::npos) << result.error().to_string();
    EXPECT_FALSE(fs::exists(outside.path() / "owned"));
}

TEST(Tar, RenameTopAndModes) {
    test::TempDir src, dst;
    test::write_file(src.path() / "file", "content");
    fs::permissions(src.path() / "file", fs::perms(0751));
    ASSERT_TRUE(extract_archive(archive_of(src.path() / "file", "file"), dst.path(), {std::string("renamed"), false}));
    EXPECT_EQ(test::read_file(dst.path() / "renamed"), "content");
    EXPECT_EQ(fs::status(dst.path() / "renamed").permissions() & fs::perms::all, fs::perms(0751));
}

TEST(Tar, GarbageIsNotATar) {
    test::TempDir dst;
    EXPECT_FALSE(extract_archive(std::string(1024, 'G'), dst.path()));
    EXPECT_FALSE(extract_archive(std::string(100, '\0'), dst.path())) << "a short block";
}

}  // namespace
