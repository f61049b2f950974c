// The server name in a connection's first client bytes (lib/net/server_name.hpp): TLS SNI and the
// HTTP/1.x Host header, over hand-made ClientHellos and requests, whole, cut and lying.
#include "client_hello.hpp"
#include "net/server_name.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace boxlite::net {
namespace {

using test::client_hello;

std::vector<std::uint8_t> bytes(const std::string& text) { return {text.begin(), text.end()}; }

ServerNames scan(const std::string& text) { return find_server_names(bytes(text)); }

TEST(NetServerName, ReadsTheSniOfAClientHelloInOneOrSeveralRecords) {
    for (const std::size_t record : {std::size_t{16384}, std::size_t{100}, std::size_t{7}}) {
        const auto hello = client_hello("Api.Example.TEST.", 600, record);
        const auto found = find_server_names(hello);
        ASSERT_EQ(found.scan, ServerNameScan::Names) << record;
        EXPECT_EQ(found.names, std::vector<std::string>{"api.example.test"});
        // Every cut of it is "need more", never a verdict.
        for (std::size_t cut = 0; cut < hello.size(); ++cut) {
            ASSERT_EQ(find_server_names(std::span(hello.data(), cut)).scan, ServerNameScan::NeedMore) << cut;
        }
    }
}

TEST(NetServerName, AClientHelloWithoutSniOrWithAnIpNamesNoServer) {
    EXPECT_EQ(find_server_names(client_hello("")).scan, ServerNameScan::NoName);
    EXPECT_EQ(find_server_names(client_hello("198.51.100.1")).scan, ServerNameScan::NoName);
}

TEST(NetServerName, ALyingClientHelloIsMalformed) {
    // Not a host name.
    EXPECT_EQ(find_server_names(client_hello("bad name")).scan, ServerNameScan::Malformed);
    EXPECT_EQ(find_server_names(client_hello(std::string("a\0b.test", 8))).scan, ServerNameScan::Malformed);
    // A handshake that is not a ClientHello, a record of length 0, a record type change.
    auto hello = client_hello("api.example.test");
    auto server_hello = hello;
    server_hello[5] = 2;
    EXPECT_EQ(find_server_names(server_hello).scan, ServerNameScan::Malformed);
    auto empty = hello;
    empty[3] = empty[4] = 0;
    EXPECT_EQ(find_server_names(empty).scan, ServerNameScan::Malformed);
    auto split = client_hello("api.example.test", 0, 20);
    split[5 + 20] = 0x17;
    EXPECT_EQ(find_server_names(split).scan, ServerNameScan::Malformed);
    // Extension lengths that overrun, or two SNI extensions.
    auto overrun = hello;
    const std::size_t extensions_length_at = 5 + 4 + 2 + 32 + 1 + 32 + 4 + 2;
    overrun[extensions_length_at + 1] = static_cast<std::uint8_t>(overrun[extensions_length_at + 1] + 1);
    EXPECT_EQ(find_server_names(overrun).scan, ServerNameScan::Malformed);
    // A ClientHello claiming more than can be held.
    auto huge = hello;
    huge[6] = 0x01;  // handshake length 65536 + ...
    EXPECT_EQ(find_server_names(huge).scan, ServerNameScan::Malformed);
    // Every byte flipped: a verdict or "need more", never a read out of bounds (ASan watches).
    for (std::size_t i = 0; i < hello.size(); ++i) {
        auto flipped = hello;
        flipped[i] ^= 0xff;
        (void)find_server_names(flipped);
    }
}

TEST(NetServerName, ReadsTheHostOfAnHttpRequest) {
    auto found = scan("GET /x HTTP/1.1\r\nAccept: */*\r\nhOST:  Api.Example.Test:8080 \r\n\r\n");
    ASSERT_EQ(found.scan, ServerNameScan::Names);
    EXPECT_EQ(found.names, std::vector<std::string>{"api.example.test"});
    // LF alone ends lines too, as servers read them.
    found = scan("POST / HTTP/1.0\nHost: a.test\n\n");
    EXPECT_EQ(found.names, std::vector<std::string>{"a.test"});
    // The absolute form and CONNECT name their server in the target as well.
    found = scan("GET http://other.test/path HTTP/1.1\r\nHost: a.test\r\n\r\n");
    EXPECT_EQ(found.names, (std::vector<std::string>{"other.test", "a.test"}));
    found = scan("CONNECT tunnel.test:443 HTTP/1.1\r\n\r\n");
    EXPECT_EQ(found.names, std::vector<std::string>{"tunnel.test"});
    // An IP literal or no Host: no name.
    EXPECT_EQ(scan("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n").scan, ServerNameScan::NoName);
    EXPECT_EQ(scan("GET / HTTP/1.0\r\n\r\n").scan, ServerNameScan::NoName);
}

TEST(NetServerName, WaitsForTheWholeHeaderBlockAndRefusesTwoHosts) {
    EXPECT_EQ(scan("").scan, ServerNameScan::NeedMore);
    EXPECT_EQ(scan("GE").scan, ServerNameScan::NeedMore);
    EXPECT_EQ(scan("GET / HTTP/1.1\r\nHost: a.test\r\n").scan, ServerNameScan::NeedMore);
    EXPECT_EQ(scan("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n").scan, ServerNameScan::Malformed);
    EXPECT_EQ(scan("GET / HTTP/1.1\r\nHost : b.test\r\n\r\n").scan, ServerNameScan::Malformed);
    EXPECT_EQ(scan("GET / HTTP/1.1\r\nHost: bad_name!\r\n\r\n").scan, ServerNameScan::Malformed);
    EXPECT_EQ(scan("GET / HTTP/1.1\r\nHost: a.test:80x\r\n\r\n").scan, ServerNameScan::Malformed);
}

TEST(NetServerName, OtherProtocolsNameNoServer) {
    EXPECT_EQ(scan("SSH-2.0-OpenSSH_9.2\r\n").scan, ServerNameScan::NoName);
    EXPECT_EQ(scan("EHLO mail.test\r\n").scan, ServerNameScan::NoName);
    EXPECT_EQ(scan("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").scan, ServerNameScan::NoName);
    EXPECT_EQ(find_server_names(std::vector<std::uint8_t>{0x16, 0x01, 0x02}).scan, ServerNameScan::NoName);
    EXPECT_EQ(scan(std::string(40, 'A')).scan, ServerNameScan::NoName);
}

}  // namespace
}  // namespace boxlite::net
