#include "net/server_name.hpp"

#include "net/packet.hpp"

#include <boxlite/detail/validate.hpp>

#include <algorithm>
#include <string_view>

namespace boxlite::net {
namespace {

constexpr std::uint8_t kTlsHandshake = 0x16;
constexpr std::uint8_t kTlsClientHello = 1;
constexpr std::size_t kTlsMaxRecord = 16384;  // RFC 8446 §5.1: a plaintext record, at most
constexpr std::uint16_t kTlsExtensionServerName = 0;
constexpr std::size_t kHttpMaxMethod = 20;

ServerNames result(ServerNameScan scan) { return ServerNames{scan, {}}; }

// Bounds-checked reads over a span; any read past its end sets `failed` and yields zeros.
class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
    [[nodiscard]] bool failed() const { return failed_; }
    [[nodiscard]] std::size_t left() const { return failed_ ? 0 : bytes_.size() - at_; }
    std::uint32_t number(std::size_t width) {
        if (failed_ || left() < width) {
            failed_ = true;
            return 0;
        }
        std::uint32_t value = 0;
        for (std::size_t i = 0; i < width; ++i) value = (value << 8) | bytes_[at_ + i];
        at_ += width;
        return value;
    }
    std::span<const std::uint8_t> take(std::size_t count) {
        if (failed_ || left() < count) {
            failed_ = true;
            return {};
        }
        const auto out = bytes_.subspan(at_, count);
        at_ += count;
        return out;
    }

private:
    std::span<const std::uint8_t> bytes_;
    std::size_t at_ = 0;
    bool failed_ = false;
};

char lower_ascii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_ignoring_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower_ascii(x) == lower_ascii(y); });
}

enum class NameCheck : std::uint8_t { Name, IpLiteral, Bad };

// A host name as a server will take it: lower-cased, a trailing dot dropped. An IP literal
// names no server.
NameCheck normalise_host(std::string_view host, std::string& out) {
    out.clear();
    for (const char c : host) out.push_back(lower_ascii(c));
    if (out.ends_with('.')) out.pop_back();
    if (IpAddress::parse(out)) return NameCheck::IpLiteral;
    return detail::is_hostname(out) ? NameCheck::Name : NameCheck::Bad;
}

// An HTTP authority (RFC 3986 §3.2): [userinfo@]host[:port], host maybe an [IPv6] literal.
NameCheck authority_host(std::string_view authority, std::string& out) {
    if (const auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
    if (authority.starts_with('[')) {
        const auto close = authority.find(']');
        if (close == std::string_view::npos) return NameCheck::Bad;
        const auto rest = authority.substr(close + 1);
        if (!rest.empty() && !rest.starts_with(':')) return NameCheck::Bad;
        return IpAddress::parse(authority.substr(1, close - 1)) ? NameCheck::IpLiteral : NameCheck::Bad;
    }
    if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        const auto port = authority.substr(colon + 1);
        if (!std::ranges::all_of(port, [](char c) { return c >= '0' && c <= '9'; })) return NameCheck::Bad;
        authority = authority.substr(0, colon);
    }
    return normalise_host(authority, out);
}

ServerNames parse_client_hello(std::span<const std::uint8_t> body) {
    Reader r(body);
    (void)r.take(2 + 32);  // legacy_version, random
    const auto session_id = r.number(1);
    if (session_id > 32) return result(ServerNameScan::Malformed);
    (void)r.take(session_id);
    const auto suites = r.number(2);
    if (suites < 2 || suites % 2 != 0) return result(ServerNameScan::Malformed);
    (void)r.take(suites);
    const auto compressions = r.number(1);
    if (compressions < 1) return result(ServerNameScan::Malformed);
    (void)r.take(compressions);
    if (r.failed()) return result(ServerNameScan::Malformed);
    if (r.left() == 0) return result(ServerNameScan::NoName);  // no extensions at all
    const auto extensions_length = r.number(2);
    if (r.failed() || extensions_length != r.left()) return result(ServerNameScan::Malformed);
    ServerNames out{ServerNameScan::NoName, {}};
    bool seen = false;
    while (r.left() > 0) {
        const auto type = r.number(2);
        const auto length = r.number(2);
        const auto data = r.take(length);
        if (r.failed()) return result(ServerNameScan::Malformed);
        if (type != kTlsExtensionServerName) continue;
        if (seen) return result(ServerNameScan::Malformed);  // RFC 8446 §4.2: one of each
        seen = true;
        Reader list(data);
        const auto list_length = list.number(2);
        if (list.failed() || list_length != list.left() || list_length == 0) return result(ServerNameScan::Malformed);
        bool host_name = false;
        while (list.left() > 0) {
            const auto name_type = list.number(1);
            const auto name_length = list.number(2);
            const auto name = list.take(name_length);
            if (list.failed()) return result(ServerNameScan::Malformed);
            if (name_type != 0) continue;
            if (host_name) return result(ServerNameScan::Malformed);  // RFC 6066 §3: one host_name
            host_name = true;
            std::string normalised;
            const std::string_view text(reinterpret_cast<const char*>(name.data()), name.size());
            switch (normalise_host(text, normalised)) {
                case NameCheck::Bad: return result(ServerNameScan::Malformed);
                case NameCheck::IpLiteral: break;
                case NameCheck::Name:
                    out.scan = ServerNameScan::Names;
                    out.names.push_back(std::move(normalised));
                    break;
            }
        }
    }
    return out;
}

// TLS records of type handshake carrying a ClientHello, which may span several records.
ServerNames scan_tls(std::span<const std::uint8_t> stream) {
    std::vector<std::uint8_t> handshake;
    std::size_t needed = 0;  // the ClientHello's size with its 4-byte header, once known
    std::size_t at = 0;
    for (;;) {
        if (stream.size() - at < 5) return result(ServerNameScan::NeedMore);
        if (stream[at] != kTlsHandshake || stream[at + 1] != 3) return result(ServerNameScan::Malformed);
        const std::size_t length = (std::size_t{stream[at + 3]} << 8) | stream[at + 4];
        if (length == 0 || length > kTlsMaxRecord) return result(ServerNameScan::Malformed);
        const std::size_t body = at + 5;
        const std::size_t available = std::min(length, stream.size() - body);
        handshake.insert(handshake.end(), stream.begin() + static_cast<std::ptrdiff_t>(body),
                         stream.begin() + static_cast<std::ptrdiff_t>(body + available));
        if (needed == 0 && handshake.size() >= 4) {
            if (handshake[0] != kTlsClientHello) return result(ServerNameScan::Malformed);
            needed = 4 + ((std::size_t{handshake[1]} << 16) | (std::size_t{handshake[2]} << 8) | handshake[3]);
            // Records add 5 bytes each: a ClientHello this large cannot be seen whole within the bound.
            if (needed + 5 > kMaxServerNameScan) return result(ServerNameScan::Malformed);
        }
        if (needed != 0 && handshake.size() >= needed) {
            return parse_client_hello(std::span<const std::uint8_t>(handshake).subspan(4, needed - 4));
        }
        if (available < length) return result(ServerNameScan::NeedMore);
        at = body + length;
    }
}

// Lines end in LF (a CR before it is dropped), as servers read them.
bool next_line(std::string_view& rest, std::string_view& line) {
    const auto end = rest.find('\n');
    if (end == std::string_view::npos) return false;
    line = rest.substr(0, end);
    if (line.ends_with('\r')) line.remove_suffix(1);
    rest.remove_prefix(end + 1);
    return true;
}

ServerNames scan_http(std::string_view text, std::size_t method_length) {
    std::string_view rest = text;
    std::string_view line;
    if (!next_line(rest, line)) return result(ServerNameScan::NeedMore);
    const std::string_view method = line.substr(0, method_length);
    const auto last_space = line.rfind(' ');
    if (last_space == std::string_view::npos || last_space <= method_length) return result(ServerNameScan::NoName);
    const std::string_view version = line.substr(last_space + 1);
    if (version.size() != 8 || !version.starts_with("HTTP/1.") || version[7] < '0' || version[7] > '9') {
        return result(ServerNameScan::NoName);  // not HTTP/1.x (HTTP/0.9, HTTP/2's preface, SMTP ...)
    }
    const std::string_view target = line.substr(method_length + 1, last_space - method_length - 1);
    std::vector<std::string_view> authorities;
    if (method == "CONNECT") {
        authorities.push_back(target);
    } else {
        for (const std::string_view scheme : {"http://", "https://"}) {
            if (target.size() > scheme.size() && equals_ignoring_case(target.substr(0, scheme.size()), scheme)) {
                const auto authority = target.substr(scheme.size());
                authorities.push_back(authority.substr(0, authority.find_first_of("/?#")));
            }
        }
    }
    // The header block, to its empty line: a second Host header could otherwise hide behind it.
    std::size_t hosts = 0;
    for (;;) {
        if (!next_line(rest, line)) return result(ServerNameScan::NeedMore);
        if (line.empty()) break;
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        if (!equals_ignoring_case(line.substr(0, colon), "host")) {
            // "Host :" is refused by servers (RFC 9112 §5.1); refuse it here too.
            const auto name = line.substr(0, colon);
            if (name.size() > 4 && equals_ignoring_case(name.substr(0, 4), "host") &&
                name.find_first_not_of(" \t", 4) == std::string_view::npos) {
                return result(ServerNameScan::Malformed);
            }
            continue;
        }
        if (++hosts > 1) return result(ServerNameScan::Malformed);
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
        if (!value.empty()) authorities.push_back(value);
    }
    ServerNames out{ServerNameScan::NoName, {}};
    for (const auto authority : authorities) {
        std::string name;
        switch (authority_host(authority, name)) {
            case NameCheck::Bad: return result(ServerNameScan::Malformed);
            case NameCheck::IpLiteral: break;
            case NameCheck::Name:
                if (std::ranges::find(out.names, name) == out.names.end()) out.names.push_back(std::move(name));
                out.scan = ServerNameScan::Names;
                break;
        }
    }
    return out;
}

}  // namespace

ServerNames find_server_names(std::span<const std::uint8_t> stream) {
    if (stream.size() > kMaxServerNameScan) stream = stream.first(kMaxServerNameScan);
    if (stream.empty()) return result(ServerNameScan::NeedMore);
    if (stream[0] == kTlsHandshake) {
        if (stream.size() < 2) return result(ServerNameScan::NeedMore);
        // 0x16 0x03: a TLS (or SSL 3) record. Anything else starting 0x16 is some other protocol.
        if (stream[1] == 3) return scan_tls(stream);
        return result(ServerNameScan::NoName);
    }
    // HTTP/1.x: a method token of capitals, a space.
    std::size_t method = 0;
    while (method < stream.size() && method < kHttpMaxMethod && stream[method] >= 'A' && stream[method] <= 'Z') {
        ++method;
    }
    if (method == stream.size())
        return result(method < kHttpMaxMethod ? ServerNameScan::NeedMore : ServerNameScan::NoName);
    if (method == 0 || stream[method] != ' ') return result(ServerNameScan::NoName);
    return scan_http(std::string_view(reinterpret_cast<const char*>(stream.data()), stream.size()), method);
}

}  // namespace boxlite::net
