// Reference parsing with Docker's normalization rules (distribution/reference's grammar).
#include <boxlite/image/reference.hpp>

#include <algorithm>
#include <cctype>

namespace boxlite::image {
namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | [-]+
bool valid_path_component(std::string_view part) {
    if (part.empty() || !is_lower_alnum(part.front()) || !is_lower_alnum(part.back())) return false;
    std::size_t i = 0;
    while (i < part.size()) {
        if (is_lower_alnum(part[i])) {
            ++i;
            continue;
        }
        // A run of separators between alphanumerics.
        std::size_t j = i;
        while (j < part.size() && !is_lower_alnum(part[j])) ++j;
        const std::string_view sep = part.substr(i, j - i);
        const bool dashes = std::all_of(sep.begin(), sep.end(), [](char c) { return c == '-'; });
        if (!(sep == "." || sep == "_" || sep == "__" || dashes)) return false;
        i = j;
    }
    return true;
}

// domain := domain-component ('.' domain-component)* (':' port)?  |  '[' ipv6 ']' (':' port)?
bool valid_domain(std::string_view domain) {
    if (domain.empty()) return false;
    std::string_view host = domain;
    std::string_view port;
    if (host.front() == '[') {
        const auto close = host.find(']');
        if (close == std::string_view::npos || close < 3) return false;
        for (char c : host.substr(1, close - 1)) {
            if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
        }
        const auto rest = host.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return false;
            port = rest.substr(1);
            if (port.empty()) return false;
        }
        host = {};
    } else if (const auto colon = host.rfind(':'); colon != std::string_view::npos) {
        port = host.substr(colon + 1);
        host = host.substr(0, colon);
        if (port.empty()) return false;
    }
    if (!port.empty() &&
        (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))) {
        return false;
    }
    std::size_t start = 0;
    while (!host.empty() && start <= host.size()) {
        const auto dot = host.find('.', start);
        const auto part = host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (part.empty() || part.size() > 63 || !is_alnum(part.front()) || !is_alnum(part.back())) return false;
        if (!std::all_of(part.begin(), part.end(), [](char c) { return is_alnum(c) || c == '-'; })) return false;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return true;
}

// tag := [\w][\w.-]{0,127}
bool valid_tag(std::string_view tag) {
    if (tag.empty() || tag.size() > kMaxTagLength) return false;
    auto word = [](char c) { return is_alnum(c) || c == '_'; };
    if (!word(tag.front())) return false;
    return std::all_of(tag.begin(), tag.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
}

constexpr std::string_view kGrammar = "[registry[:port]/]repository[:tag][@sha256:<64 hex>]";

}  // namespace

bool is_valid_sha256_digest(std::string_view digest) {
    constexpr std::string_view prefix = "sha256:";
    if (digest.size() != prefix.size() + 64 || digest.substr(0, prefix.size()) != prefix) return false;
    return std::all_of(digest.begin() + static_cast<std::ptrdiff_t>(prefix.size()), digest.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool is_valid_registry_host(std::string_view registry) { return registry.size() <= 255 && valid_domain(registry); }

bool is_loopback_registry(std::string_view registry) {
    std::string_view host = registry;
    if (!host.empty() && host.front() == '[') {
        const auto close = host.find(']');
        host = host.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1);
        return host == "::1";
    }
    if (const auto colon = host.rfind(':'); colon != std::string_view::npos) host = host.substr(0, colon);
    if (host == "localhost" || host.ends_with(".localhost")) return true;
    // 127.0.0.0/8 written as a dotted quad (not a name that merely starts with "127.").
    int octets = 0;
    std::size_t start = 0;
    while (start <= host.size()) {
        const auto dot = host.find('.', start);
        const auto part = host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (part.empty() || part.size() > 3 ||
            !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return false;
        }
        if (octets == 0 && part != "127") return false;
        ++octets;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return octets == 4;
}

std::string ImageReference::to_string() const {
    std::string out = name();
    if (tag) out += ":" + *tag;
    if (digest) out += "@" + *digest;
    return out;
}

BoxliteResult<ImageReference> parse_reference(std::string_view text, std::string_view default_registry) {
    if (text.empty()) return fail(ErrorKind::InvalidArgument, "image reference is empty (expected {})", kGrammar);
    if (text.size() > 1024) {
        return fail(ErrorKind::InvalidArgument, "image reference is {} characters long (at most 1024 allowed)",
                    text.size());
    }
    for (char c : text) {
        if (static_cast<unsigned char>(c) <= ' ' || static_cast<unsigned char>(c) >= 0x7f) {
            return fail(ErrorKind::InvalidArgument,
                        "image reference '{}' contains whitespace or a non-ASCII character (expected {})", text,
                        kGrammar);
        }
    }
    ImageReference ref;
    std::string_view rest = text;
    if (const auto at = rest.find('@'); at != std::string_view::npos) {
        const auto digest = rest.substr(at + 1);
        if (!is_valid_sha256_digest(digest)) {
            return fail(ErrorKind::InvalidArgument,
                        "image reference '{}' has an invalid digest '{}' (allowed: sha256: followed by 64 "
                        "lower-case hex digits)",
                        text, digest);
        }
        ref.digest = std::string(digest);
        rest = rest.substr(0, at);
    }
    // The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    const auto last_slash = rest.rfind('/');
    const auto last_colon = rest.rfind(':');
    if (last_colon != std::string_view::npos && (last_slash == std::string_view::npos || last_colon > last_slash)) {
        const auto tag = rest.substr(last_colon + 1);
        if (!valid_tag(tag)) {
            return fail(ErrorKind::InvalidArgument,
                        "image reference '{}' has an invalid tag '{}' (allowed: 1-128 of [A-Za-z0-9_.-], not "
                        "starting with '.' or '-')",
                        text, tag);
        }
        ref.tag = std::string(tag);
        rest = rest.substr(0, last_colon);
    }
    if (rest.empty()) return fail(ErrorKind::InvalidArgument, "image reference '{}' has no repository name", text);

    // Docker: the first component is a registry when it has '.' or ':', is "localhost", or has
    // upper-case letters (a repository never does).
    std::string_view remainder = rest;
    const auto slash = rest.find('/');
    if (slash != std::string_view::npos) {
        const auto first = rest.substr(0, slash);
        const bool has_upper = std::any_of(first.begin(), first.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
        if (first.find_first_of(".:") != std::string_view::npos || first == "localhost" || has_upper) {
            if (!valid_domain(first)) {
                return fail(ErrorKind::InvalidArgument,
                            "image reference '{}' has an invalid registry '{}' (expected {})", text, first, kGrammar);
            }
            ref.registry = std::string(first);
            ref.registry_explicit = true;
            remainder = rest.substr(slash + 1);
        }
    }
    if (!ref.registry_explicit) ref.registry = std::string(default_registry);
    if (ref.registry == "index.docker.io" || ref.registry == "registry-1.docker.io") ref.registry = kDockerHub;
    if (remainder.empty()) return fail(ErrorKind::InvalidArgument, "image reference '{}' has no repository name", text);

    if (std::any_of(remainder.begin(), remainder.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
        return fail(ErrorKind::InvalidArgument, "image reference '{}': repository name '{}' must be lowercase", text,
                    remainder);
    }
    std::size_t start = 0;
    while (true) {
        const auto next = remainder.find('/', start);
        const auto part = remainder.substr(start,
                                           next == std::string_view::npos ? std::string_view::npos : next - start);
        if (!valid_path_component(part)) {
            return fail(ErrorKind::InvalidArgument,
                        "image reference '{}' has an invalid path component '{}' in '{}' (allowed: [a-z0-9] "
                        "separated by '.', '_', '__' or '-')",
                        text, part, remainder);
        }
        if (next == std::string_view::npos) break;
        start = next + 1;
    }
    ref.repository = std::string(remainder);
    if (ref.registry == kDockerHub && ref.repository.find('/') == std::string::npos) {
        ref.repository = "library/" + ref.repository;
    }
    if (ref.name().size() > kMaxNameLength) {
        return fail(ErrorKind::InvalidArgument, "image reference '{}': name is longer than {} characters", text,
                    kMaxNameLength);
    }
    if (!ref.tag && !ref.digest) ref.tag = std::string(kDefaultTag);
    return ref;
}

BoxliteResult<std::vector<ImageReference>> candidate_references(std::string_view text,
                                                                std::span<const std::string> registries) {
    BOXLITE_TRY(auto first, parse_reference(text));
    std::vector<ImageReference> out;
    if (first.registry_explicit) {
        out.push_back(std::move(first));
        return out;
    }
    std::vector<std::string> order(registries.begin(), registries.end());
    order.emplace_back(kDockerHub);
    for (auto& registry : order) {
        if (registry == "index.docker.io" || registry == "registry-1.docker.io") registry = kDockerHub;
        if (!valid_domain(registry)) {
            return fail(ErrorKind::Config, "image registry '{}' in the search list is not a valid host[:port]",
                        registry);
        }
        BOXLITE_TRY(auto ref, parse_reference(text, registry));
        if (std::find(out.begin(), out.end(), ref) == out.end()) out.push_back(std::move(ref));
    }
    return out;
}

}  // namespace boxlite::image
