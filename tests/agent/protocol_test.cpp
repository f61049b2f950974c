// Frame codec, payload decoders, ExecResult and the tar extractor against hostile input.
#include <boxlite/execution.hpp>
#include <boxlite/protocol/frame.hpp>
#include <boxlite/protocol/messages.hpp>
#include "protocol/tar.hpp"

#include "raw_tar.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

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

// ---- the wire format, byte for byte ----------------------------------------------------------
// These frames were written by hand from docs/protocol.md (a 12-byte little-endian header: u32
// length, u8 type, u8 flags, u16 reserved, u32 stream; payload integers little-endian; string =
// u32 length + bytes; list = u32 count + items), not produced by the encoder: a mistake shared
// by our encoder and decoder shows up here.

/// "text" as bytes, for writing string fields by hand.
std::vector<int> wire_chars(std::string_view text) { return {text.begin(), text.end()}; }

std::vector<std::byte> wire_concat(std::initializer_list<std::vector<int>> parts) {
    std::vector<std::byte> out;
    for (const auto& part : parts) {
        for (int v : part) out.push_back(static_cast<std::byte>(v));
    }
    return out;
}

/// The one frame in `wire`, decoded; fails the test unless exactly that frame is there.
Frame decode_one_frame(const std::vector<std::byte>& wire) {
    FrameDecoder decoder;
    decoder.feed(wire);
    auto frame = decoder.next();
    EXPECT_TRUE(frame && frame->has_value()) << (frame ? "incomplete" : frame.error().to_string());
    EXPECT_EQ(decoder.buffered(), 0u);
    return frame && frame->has_value() ? std::move(**frame) : Frame{};
}

TEST(WireFormat, HelloMatchesTheDocument) {
    const auto wire = wire_concat({{0x04, 0x00, 0x00, 0x00,   // length 4
                                    0x01,                     // type 1 Hello
                                    0x00,                     // flags
                                    0x00, 0x00,               // reserved
                                    0x00, 0x00, 0x00, 0x00},  // stream 0
                                   {0x01, 0x00,               // u16 min_version 1
                                    0x01, 0x00}});            // u16 max_version 1
    EXPECT_EQ(encode_frame(FrameType::Hello, 0, Hello{1, 1}.encode()), wire);
    const auto frame = decode_one_frame(wire);
    EXPECT_EQ(frame.type, FrameType::Hello);
    EXPECT_EQ(frame.stream, 0u);
    auto hello = Hello::decode(frame.payload);
    ASSERT_TRUE(hello) << hello.error().to_string();
    EXPECT_EQ(hello->min_version, 1);
    EXPECT_EQ(hello->max_version, 1);
}

// Version 2's trailing fields: sent only when set, so a version-1 peer's bytes are unchanged, and
// decoded when present; anything else after them is refused.
TEST(WireFormat, VersionTwoTrailingFieldsAreOptional) {
    HelloAck plain{2, "a"};
    EXPECT_EQ(plain.encode().size(), 2U + 4U + 1U);
    HelloAck with{2, "a", kFeatureStdinDescriptor};
    const auto bytes = with.encode();
    ASSERT_EQ(bytes.size(), 2U + 4U + 1U + 4U);
    auto decoded = HelloAck::decode(bytes);
    ASSERT_TRUE(decoded) << decoded.error().to_string();
    EXPECT_EQ(decoded->features, kFeatureStdinDescriptor);
    auto old = HelloAck::decode(plain.encode());
    ASSERT_TRUE(old);
    EXPECT_EQ(old->features, 0U);
    auto short_features = std::vector<std::byte>(bytes.begin(), bytes.end() - 1);
    EXPECT_FALSE(HelloAck::decode(short_features)) << "a cut feature field must be refused";

    ExecRequest request;
    request.program = "cat";
    const auto v1 = request.encode();
    request.stdin_descriptor = true;
    const auto v2 = request.encode();
    ASSERT_EQ(v2.size(), v1.size() + 1);
    EXPECT_EQ(std::to_integer<int>(v2.back()), 1);
    auto without = ExecRequest::decode(v1);
    ASSERT_TRUE(without);
    EXPECT_FALSE(without->stdin_descriptor);
    auto with_fd = ExecRequest::decode(v2);
    ASSERT_TRUE(with_fd);
    EXPECT_TRUE(with_fd->stdin_descriptor);
    auto extra = v2;
    extra.push_back(std::byte{0});
    EXPECT_FALSE(ExecRequest::decode(extra)) << "bytes after stdin_descriptor must be refused";
    auto bad_flag = v1;
    bad_flag.push_back(std::byte{7});
    EXPECT_FALSE(ExecRequest::decode(bad_flag)) << "stdin_descriptor must be 0 or 1";
}

TEST(WireFormat, ExecRequestMatchesTheDocument) {
    const auto wire = wire_concat({{0x47, 0x00, 0x00, 0x00,   // length 71
                                    0x10, 0x00, 0x00, 0x00,   // type 16 Exec, flags, reserved
                                    0x07, 0x00, 0x00, 0x00},  // stream 7
                                   {0x00},                    // u8 kind: command
                                   {0x04, 0x00, 0x00, 0x00},
                                   wire_chars("echo"),        // string program
                                   {0x02, 0x00, 0x00, 0x00},  // list args: 2 items
                                   {0x01, 0x00, 0x00, 0x00},
                                   wire_chars("a"),
                                   {0x01, 0x00, 0x00, 0x00},
                                   wire_chars("b"),
                                   {0x01, 0x00, 0x00, 0x00},  // list env: 1 item
                                   {0x03, 0x00, 0x00, 0x00},
                                   wire_chars("K=V"),
                                   {0x04, 0x00, 0x00, 0x00},
                                   wire_chars("/tmp"),                                // string working_dir
                                   {0x00, 0x00, 0x00, 0x00},                          // string user: empty
                                   {0x01},                                            // u8 tty
                                   {0x1e, 0x00},                                      // u16 rows 30
                                   {0x64, 0x00},                                      // u16 cols 100
                                   {0xf4, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},  // u64 timeout_ms 500
                                   {0x00, 0x00, 0x04, 0x00},                          // u32 stdout_window 256 KiB
                                   {0x00, 0x00, 0x04, 0x00},                          // u32 stderr_window 256 KiB
                                   {0x00, 0x00, 0x00, 0x00}});                        // string path: empty
    ASSERT_EQ(wire.size(), kHeaderSize + 71);
    const ExecRequest request{ExecKind::Command, "echo",       {"a", "b"}, {"K=V"}, "/tmp", "", true, 30, 100, 500,
                              256U * 1024U,      256U * 1024U, ""};
    EXPECT_EQ(encode_frame(FrameType::Exec, 7, request.encode()), wire);
    const auto frame = decode_one_frame(wire);
    EXPECT_EQ(frame.type, FrameType::Exec);
    EXPECT_EQ(frame.stream, 7u);
    auto decoded = ExecRequest::decode(frame.payload);
    ASSERT_TRUE(decoded) << decoded.error().to_string();
    EXPECT_EQ(decoded->kind, ExecKind::Command);
    EXPECT_EQ(decoded->program, "echo");
    EXPECT_EQ(decoded->args, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(decoded->env, (std::vector<std::string>{"K=V"}));
    EXPECT_EQ(decoded->working_dir, "/tmp");
    EXPECT_EQ(decoded->user, "");
    EXPECT_TRUE(decoded->tty);
    EXPECT_EQ(decoded->rows, 30);
    EXPECT_EQ(decoded->cols, 100);
    EXPECT_EQ(decoded->timeout_ms, 500u);
    EXPECT_EQ(decoded->stdout_window, 262144u);
    EXPECT_EQ(decoded->stderr_window, 262144u);
    EXPECT_EQ(decoded->path, "");
}

TEST(WireFormat, CreditAndExitMatchTheDocument) {
    const auto credit_wire = wire_concat({{0x05, 0x00, 0x00, 0x00,     // length 5
                                           0x16, 0x00, 0x00, 0x00,     // type 22 Credit
                                           0x03, 0x00, 0x00, 0x00},    // stream 3
                                          {0x01},                      // u8 channel: stdout
                                          {0x00, 0x00, 0x01, 0x00}});  // u32 bytes 65536
    EXPECT_EQ(encode_frame(FrameType::Credit, 3, Credit{Channel::Stdout, 65536}.encode()), credit_wire);
    const auto credit_frame = decode_one_frame(credit_wire);
    EXPECT_EQ(credit_frame.type, FrameType::Credit);
    EXPECT_EQ(credit_frame.stream, 3u);
    auto credit = Credit::decode(credit_frame.payload);
    ASSERT_TRUE(credit) << credit.error().to_string();
    EXPECT_EQ(credit->channel, Channel::Stdout);
    EXPECT_EQ(credit->bytes, 65536u);

    const auto exit_wire = wire_concat({{0x10, 0x00, 0x00, 0x00,   // length 16
                                         0x19, 0x00, 0x00, 0x00,   // type 25 Exit
                                         0x04, 0x03, 0x02, 0x01},  // stream 0x01020304
                                        {0xf7, 0xff, 0xff, 0xff},  // i32 code -9
                                        {0x01},                    // u8 timed_out
                                        {0x07, 0x00, 0x00, 0x00},
                                        wire_chars("timeout")});  // string message
    EXPECT_EQ(encode_frame(FrameType::Exit, 0x01020304, ExitStatus{-9, true, "timeout"}.encode()), exit_wire);
    const auto exit_frame = decode_one_frame(exit_wire);
    EXPECT_EQ(exit_frame.type, FrameType::Exit);
    EXPECT_EQ(exit_frame.stream, 0x01020304u);
    auto exit = ExitStatus::decode(exit_frame.payload);
    ASSERT_TRUE(exit) << exit.error().to_string();
    EXPECT_EQ(exit->code, -9);
    EXPECT_TRUE(exit->timed_out);
    EXPECT_EQ(exit->message, "timeout");
}

TEST(Frame, RoundTripsAcrossArbitrarySplits) {
    const auto payload =
        ExecRequest{ExecKind::Command, "echo",         {"a", "b"}, {"K=V"}, "/tmp", "", true, 30, 100, 500,
                    kDefaultWindow,    kDefaultWindow, ""}
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

TEST(Frame, ReceivingInPlaceGivesTheSameFramesAsFeeding) {
    // Two frames received the way the agent does: at most what missing() asks for once a header
    // is in, straight into prepare()'s room, each taken as a view.
    std::vector<std::byte> data(300 * 1024);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7);
    auto wire = encode_frame(FrameType::Stdin, 3, data);
    const auto ping = encode_frame(FrameType::Ping, 0, bytes({1, 2}));
    wire.insert(wire.end(), ping.begin(), ping.end());
    FrameDecoder decoder;
    std::size_t at = 0;
    std::vector<FrameType> types;
    std::vector<std::byte> stdin_bytes;
    while (at < wire.size()) {
        const auto missing = decoder.missing();
        if (decoder.buffered() >= kHeaderSize && missing > 0) {
            EXPECT_EQ(missing, kHeaderSize + data.size() - decoder.buffered());
        }
        auto room = decoder.prepare(missing > 0 ? missing : 1000);
        const auto n = std::min(room.size(), wire.size() - at);
        std::memcpy(room.data(), wire.data() + at, n);
        decoder.commit(n);
        at += n;
        while (true) {
            auto view = decoder.next_view();
            ASSERT_TRUE(view) << view.error().to_string();
            if (!*view) break;
            types.push_back((*view)->type);
            if ((*view)->type == FrameType::Stdin) {
                EXPECT_EQ((*view)->stream, 3U);
                stdin_bytes.assign((*view)->payload.begin(), (*view)->payload.end());
            }
        }
    }
    EXPECT_EQ(types, (std::vector<FrameType>{FrameType::Stdin, FrameType::Ping}));
    EXPECT_EQ(stdin_bytes, data);
    EXPECT_EQ(decoder.buffered(), 0U);
}

TEST(Frame, APeekedHeaderIsTakenAloneAndBadOnesAreNotPeeked) {
    FrameDecoder decoder;
    const auto wire = encode_frame(FrameType::Stdin, 9, bytes({1, 2, 3}));
    decoder.feed(std::span(wire).first(kHeaderSize - 1));
    EXPECT_FALSE(decoder.peek_header()) << "no whole header yet";
    decoder.feed(std::span(wire).subspan(kHeaderSize - 1, 1));
    const auto header = decoder.peek_header();
    ASSERT_TRUE(header);
    EXPECT_EQ(header->type, FrameType::Stdin);
    EXPECT_EQ(header->stream, 9U);
    EXPECT_EQ(header->length, 3U);
    EXPECT_EQ(decoder.missing(), 3U);
    decoder.take_header();  // the caller reads the payload itself
    EXPECT_EQ(decoder.buffered(), 0U);
    const auto ping = encode_frame(FrameType::Ping, 0, bytes({}));
    decoder.feed(ping);
    auto next = decoder.next_view();
    ASSERT_TRUE(next && next->has_value());
    EXPECT_EQ((*next)->type, FrameType::Ping);

    FrameDecoder bad;
    bad.feed(bytes({0xFF, 0xFF, 0xFF, 0x7F, 20, 0, 0, 0, 1, 0, 0, 0}));
    EXPECT_FALSE(bad.peek_header()) << "an oversized length is not offered";
    EXPECT_EQ(bad.missing(), 0U) << "nor asked to be received";
    EXPECT_FALSE(bad.next_view());
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
