#include "registry_client.hpp"
#include "dynamic_libs.hpp"

#include "digest.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace boxlite::image {
namespace {

std::string to_lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

constexpr std::string_view kBase64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view data) {
    std::string out;
    out.reserve(4 * ((data.size() + 2) / 3));
    for (std::size_t i = 0; i < data.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, data.size() - i);
        std::uint32_t group = 0;
        for (std::size_t j = 0; j < 3; ++j) group = group << 8 | (j < n ? static_cast<unsigned char>(data[i + j]) : 0u);
        for (std::size_t j = 0; j < 4; ++j) out += j <= n ? kBase64Alphabet[(group >> (18 - 6 * j)) & 0x3f] : '=';
    }
    return out;
}

/// Standard base64 with padding (line breaks and spaces ignored); nullopt for anything else.
std::optional<std::string> base64_decode(std::string_view data) {
    std::string clean;
    for (char c : data) {
        if (c != '\n' && c != '\r' && c != ' ') clean += c;
    }
    if (clean.size() % 4 != 0 || clean.size() > (1u << 16)) return std::nullopt;
    std::string out;
    for (std::size_t i = 0; i < clean.size(); i += 4) {
        std::uint32_t group = 0;
        std::size_t padding = 0;
        for (std::size_t j = 0; j < 4; ++j) {
            const char c = clean[i + j];
            std::size_t value = 0;
            if (c == '=') {
                // Only at the end, at most two, and nothing but padding after the first.
                if (i + 4 != clean.size() || j < 2) return std::nullopt;
                ++padding;
            } else {
                if (padding > 0) return std::nullopt;
                value = kBase64Alphabet.find(c);
                if (value == std::string_view::npos) return std::nullopt;
            }
            group = group << 6 | static_cast<std::uint32_t>(value);
        }
        for (std::size_t j = 0; j < 3 - padding; ++j) out += static_cast<char>((group >> (16 - 8 * j)) & 0xff);
    }
    return out;
}

std::string url_escape(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

// The host part of an `auths` key: "https://index.docker.io/v1/" -> "index.docker.io".
std::string auth_key_host(std::string_view key) {
    if (const auto scheme = key.find("://"); scheme != std::string_view::npos) key = key.substr(scheme + 3);
    if (const auto slash = key.find('/'); slash != std::string_view::npos) key = key.substr(0, slash);
    return to_lower(key);
}

bool transient(CURLcode code) {
    switch (code) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_GOT_NOTHING:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_SSL_CONNECT_ERROR: return true;
        default: return false;
    }
}

}  // namespace

std::optional<AuthChallenge> parse_www_authenticate(std::string_view header) {
    std::size_t i = 0;
    auto skip_space = [&] {
        while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
    };
    skip_space();
    const auto scheme_start = i;
    while (i < header.size() && header[i] != ' ') ++i;
    if (i == scheme_start) return std::nullopt;
    AuthChallenge challenge;
    challenge.scheme = to_lower(header.substr(scheme_start, i - scheme_start));
    while (i < header.size()) {
        skip_space();
        const auto key_start = i;
        while (i < header.size() && header[i] != '=' && header[i] != ',' && header[i] != ' ') ++i;
        const auto key = to_lower(header.substr(key_start, i - key_start));
        skip_space();
        if (i >= header.size() || header[i] != '=') {
            if (i < header.size() && header[i] == ',') {
                ++i;
                continue;
            }
            // A second challenge starts ("Bearer …, Basic realm=…"): keep only the first.
            break;
        }
        ++i;  // '='
        skip_space();
        std::string value;
        if (i < header.size() && header[i] == '"') {
            ++i;
            bool closed = false;
            while (i < header.size()) {
                char c = header[i++];
                if (c == '\\' && i < header.size()) {
                    value += header[i++];
                } else if (c == '"') {
                    closed = true;
                    break;
                } else {
                    value += c;
                }
            }
            if (!closed) return std::nullopt;
        } else {
            while (i < header.size() && header[i] != ',' && header[i] != ' ') value += header[i++];
        }
        if (key.empty()) return std::nullopt;
        challenge.params[key] = value;
        skip_space();
        if (i < header.size() && header[i] == ',') ++i;
    }
    return challenge;
}

std::filesystem::path default_docker_config_path() {
    if (const char* dir = std::getenv("DOCKER_CONFIG"); dir != nullptr && *dir != '\0') {
        return std::filesystem::path(dir) / "config.json";
    }
    if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
        return std::filesystem::path(home) / ".docker" / "config.json";
    }
    return {};
}

BoxliteResult<std::optional<RegistryCredentials>> docker_config_credentials(const std::filesystem::path& config,
                                                                            std::string_view registry) {
    std::error_code ec;
    if (config.empty() || !std::filesystem::is_regular_file(config, ec)) return std::optional<RegistryCredentials>{};
    const auto size = std::filesystem::file_size(config, ec);
    if (ec || size > (4u << 20)) {
        return fail(ErrorKind::Config, "docker config {} is unreadable or larger than 4 MiB", config.string());
    }
    std::ifstream in(config);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::Config, "docker config {} is not valid JSON: {}", config.string(), e.what());
    }
    const auto auths = doc.find("auths");
    if (!doc.is_object() || auths == doc.end() || !auths->is_object()) return std::optional<RegistryCredentials>{};

    std::vector<std::string> wanted{to_lower(registry)};
    if (registry == kDockerHub) wanted = {"index.docker.io", "docker.io", "registry-1.docker.io"};
    for (const auto& host : wanted) {
        for (const auto& [key, entry] : auths->items()) {
            if (auth_key_host(key) != host || !entry.is_object()) continue;
            RegistryCredentials creds;
            if (const auto a = entry.find("auth");
                a != entry.end() && a->is_string() && !a->get<std::string>().empty()) {
                const auto decoded = base64_decode(a->get<std::string>());
                const auto colon = decoded ? decoded->find(':') : std::string::npos;
                if (!decoded || colon == std::string::npos) {
                    return fail(ErrorKind::Config,
                                "docker config {}: auths['{}'].auth is not base64 of 'user:password'", config.string(),
                                key);
                }
                creds.username = decoded->substr(0, colon);
                creds.password = decoded->substr(colon + 1);
                return std::optional<RegistryCredentials>{std::move(creds)};
            }
            const auto u = entry.find("username");
            const auto p = entry.find("password");
            if (u != entry.end() && p != entry.end() && u->is_string() && p->is_string()) {
                creds.username = u->get<std::string>();
                creds.password = p->get<std::string>();
                return std::optional<RegistryCredentials>{std::move(creds)};
            }
        }
    }
    return std::optional<RegistryCredentials>{};
}

struct RegistryClient::Response {
    long status = 0;
    std::map<std::string, std::string> headers;  // lower-case names, last value wins
    std::string body;                            // non-2xx bodies, or 2xx bodies without a sink
    CURLcode curl = CURLE_OK;
    std::string curl_error;
    bool body_too_large = false;
    bool sink_refused = false;
};

struct RegistryClient::Sink {
    /// Called once, before the first byte of a 2xx body, with its status (200 or 206).
    std::function<bool(long status, const std::map<std::string, std::string>& headers)> begin;
    /// Returns false to abort the transfer.
    std::function<bool(const char* data, std::size_t size)> write;
};

namespace {

/// What every request to a registry or token realm sets: redirects limited to HTTP(S), no
/// signals (threads), connect and stall timeouts, curl's error text, our user agent.
void set_common_options(const dynamic::CurlApi* api, CURL* h, const std::string& url, char* error_buffer,
                        const RegistryOptions& options) {
    api->easy_setopt(h, CURLOPT_URL, url.c_str());
    api->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    api->easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    api->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    api->easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    api->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    api->easy_setopt(h, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options.connect_timeout.count()));
    api->easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    api->easy_setopt(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.stall_timeout.count()));
    api->easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
    api->easy_setopt(h, CURLOPT_USERAGENT, "boxlite/0.1");
}

struct Transfer {
    const dynamic::CurlApi* api = nullptr;
    RegistryClient::Response* response = nullptr;
    void* sink = nullptr;
    CURL* curl = nullptr;
    std::uint64_t max_body = 0;
    bool begun = false;
};

}  // namespace

RegistryClient::RegistryClient(const RegistryOptions& options, ImageReference reference)
    : options_(options), reference_(std::move(reference)) {
    const auto registry = to_lower(reference_.registry);
    const bool insecure = std::any_of(options_.insecure_registries.begin(), options_.insecure_registries.end(),
                                      [&](const std::string& listed) { return to_lower(listed) == registry; });
    scheme_ = (insecure || is_loopback_registry(reference_.registry)) ? "http" : "https";
    host_ = reference_.registry == kDockerHub ? std::string("registry-1.docker.io") : reference_.registry;
}

RegistryClient::~RegistryClient() = default;

BoxliteResult<RegistryClient::Response> RegistryClient::get(const std::string& url, const std::string& accept,
                                                            Sink* sink, std::uint64_t resume_from,
                                                            std::uint64_t max_body) {
    BOXLITE_TRY(const auto* api, dynamic::curl());
    std::unique_ptr<CURL, decltype(api->easy_cleanup)> curl(api->easy_init(), api->easy_cleanup);
    if (!curl) return fail(ErrorKind::Internal, "libcurl: cannot create a handle");
    Response response;
    Transfer transfer{api, &response, sink, curl.get(), max_body, false};
    char error_buffer[CURL_ERROR_SIZE] = {0};

    curl_slist* headers = nullptr;
    if (!accept.empty()) headers = api->slist_append(headers, ("Accept: " + accept).c_str());
    const auto auth = authorization_header();
    if (!auth.empty()) headers = api->slist_append(headers, auth.c_str());
    std::unique_ptr<curl_slist, decltype(api->slist_free_all)> header_list(headers, api->slist_free_all);

    CURL* h = curl.get();
    set_common_options(api, h, url, error_buffer, options_);
    api->easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    // Layers are already compressed; manifests are small. Let curl ask for nothing else.
    api->easy_setopt(h, CURLOPT_ACCEPT_ENCODING, nullptr);
    // A Range header rather than CURLOPT_RESUME_FROM_LARGE: with the latter curl itself fails
    // (CURLE_RANGE_ERROR) when the server ignores the range and answers 200, before our sink can
    // see the full body and start over. The sink checks Content-Range on a 206 itself.
    const std::string range = fmt::format("{}-", resume_from);
    if (resume_from > 0) api->easy_setopt(h, CURLOPT_RANGE, range.c_str());

    api->easy_setopt(h, CURLOPT_HEADERDATA, &transfer);
    api->easy_setopt(
        h, CURLOPT_HEADERFUNCTION, +[](char* data, size_t size, size_t count, void* user) -> size_t {
            auto* t = static_cast<Transfer*>(user);
            const std::string_view line(data, size * count);
            if (line.starts_with("HTTP/")) {
                t->response->headers.clear();  // a new response (after a redirect or 100-continue)
            } else if (const auto colon = line.find(':'); colon != std::string_view::npos) {
                auto value = line.substr(colon + 1);
                while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
                while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
                    value.remove_suffix(1);
                }
                if (t->response->headers.size() < 256)
                    t->response->headers[to_lower(line.substr(0, colon))] = std::string(value);
            }
            return size * count;
        });
    api->easy_setopt(h, CURLOPT_WRITEDATA, &transfer);
    api->easy_setopt(
        h, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* user) -> size_t {
            auto* t = static_cast<Transfer*>(user);
            const std::size_t n = size * count;
            long status = 0;
            t->api->easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
            auto* target = static_cast<Sink*>(t->sink);
            if (status >= 200 && status < 300 && target != nullptr) {
                if (!t->begun) {
                    t->begun = true;
                    if (target->begin && !target->begin(status, t->response->headers)) {
                        t->response->sink_refused = true;
                        return 0;
                    }
                }
                if (!target->write(data, n)) {
                    t->response->sink_refused = true;
                    return 0;
                }
                return n;
            }
            if (t->response->body.size() + n > t->max_body) {
                t->response->body_too_large = true;
                return 0;
            }
            t->response->body.append(data, n);
            return n;
        });

    response.curl = api->easy_perform(h);
    api->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
    if (response.curl != CURLE_OK) {
        response.curl_error = error_buffer[0] != '\0' ? error_buffer : api->easy_strerror(response.curl);
    }
    return response;
}

std::string RegistryClient::authorization_header() {
    std::lock_guard lock(token_mutex_);
    if (!token_.empty()) return "Authorization: Bearer " + token_;
    if (basic_ && credentials_)
        return "Authorization: Basic " + base64_encode(credentials_->username + ":" + credentials_->password);
    return {};
}

BoxliteError RegistryClient::http_error(const Response& response, std::string_view what) const {
    std::string detail;
    try {
        const auto doc = nlohmann::json::parse(response.body);
        if (doc.contains("errors") && doc["errors"].is_array() && !doc["errors"].empty()) {
            const auto& e = doc["errors"][0];
            if (e.contains("code") && e["code"].is_string()) detail += e["code"].get<std::string>();
            if (e.contains("message") && e["message"].is_string()) {
                detail += (detail.empty() ? "" : ": ") + e["message"].get<std::string>();
            }
        }
    } catch (const nlohmann::json::exception&) {}
    if (detail.size() > 300) detail.resize(300);
    return BoxliteError(ErrorKind::Image, fmt::format("{}: registry {} answered HTTP {}{}", what, reference_.registry,
                                                      response.status, detail.empty() ? "" : " (" + detail + ")"));
}

BoxliteResult<void> RegistryClient::fetch_token(const AuthChallenge& challenge) {
    const auto realm = challenge.params.find("realm");
    if (realm == challenge.params.end() || realm->second.empty()) {
        return fail(ErrorKind::Image, "registry {} asked for a bearer token without a realm", reference_.registry);
    }
    if (!realm->second.starts_with("https://") && !realm->second.starts_with("http://")) {
        return fail(ErrorKind::Image, "registry {} names a token realm '{}' that is not an http(s) URL",
                    reference_.registry, realm->second.substr(0, 200));
    }
    std::string url = realm->second + (realm->second.find('?') == std::string::npos ? "?" : "&");
    if (const auto service = challenge.params.find("service"); service != challenge.params.end()) {
        url += "service=" + url_escape(service->second) + "&";
    }
    url += "scope=" + url_escape("repository:" + reference_.repository + ":pull");

    BOXLITE_TRY(const auto* api, dynamic::curl());
    std::unique_ptr<CURL, decltype(api->easy_cleanup)> curl(api->easy_init(), api->easy_cleanup);
    if (!curl) return fail(ErrorKind::Internal, "libcurl: cannot create a handle");
    CURL* h = curl.get();
    std::string body;
    bool too_large = false;
    struct Ctx {
        std::string* body;
        bool* too_large;
        std::uint64_t max;
    } ctx{&body, &too_large, options_.max_json_bytes};
    char error_buffer[CURL_ERROR_SIZE] = {0};
    set_common_options(api, h, url, error_buffer, options_);
    // Credentials go to the token realm only over TLS, or to a loopback / insecure registry's realm.
    const bool realm_plain = realm->second.starts_with("http://");
    if (credentials_ && (!realm_plain || scheme_ == "http")) {
        api->easy_setopt(h, CURLOPT_USERNAME, credentials_->username.c_str());
        api->easy_setopt(h, CURLOPT_PASSWORD, credentials_->password.c_str());
        api->easy_setopt(h, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    }
    api->easy_setopt(h, CURLOPT_WRITEDATA, &ctx);
    api->easy_setopt(
        h, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* user) -> size_t {
            auto* c = static_cast<Ctx*>(user);
            if (c->body->size() + size * count > c->max) {
                *c->too_large = true;
                return 0;
            }
            c->body->append(data, size * count);
            return size * count;
        });
    CURLcode rc = CURLE_OK;
    long status = 0;
    auto backoff = options_.initial_backoff;
    for (unsigned attempt = 1; attempt <= std::max(1u, options_.max_attempts); ++attempt) {
        body.clear();
        rc = api->easy_perform(h);
        api->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (!(transient(rc) || status >= 500 || status == 429) || attempt == options_.max_attempts) break;
        std::this_thread::sleep_for(backoff);
        backoff *= 2;
    }
    if (too_large) {
        return fail(ErrorKind::Image, "token server {} sent more than {} bytes", realm->second,
                    options_.max_json_bytes);
    }
    if (rc != CURLE_OK) {
        return fail(ErrorKind::Image, "cannot get a token for registry {} from {}: {}", reference_.registry,
                    realm->second, error_buffer[0] != '\0' ? error_buffer : api->easy_strerror(rc));
    }
    if (status == 401 || status == 403) {
        if (credentials_) {
            return fail(ErrorKind::Image,
                        "authentication to registry {} failed for user '{}': the token server answered HTTP {} (check "
                        "the credentials)",
                        reference_.registry, credentials_->username, status);
        }
        return fail(ErrorKind::Image,
                    "registry {} requires credentials for repository {} (token server answered HTTP {}); add them to "
                    "~/.docker/config.json auths or pass RegistryOptions::credentials",
                    reference_.registry, reference_.repository, status);
    }
    if (status != 200) {
        return fail(ErrorKind::Image, "token server {} for registry {} answered HTTP {}", realm->second,
                    reference_.registry, status);
    }
    try {
        const auto doc = nlohmann::json::parse(body);
        std::string token;
        if (doc.contains("token") && doc["token"].is_string()) token = doc["token"].get<std::string>();
        if (token.empty() && doc.contains("access_token") && doc["access_token"].is_string()) {
            token = doc["access_token"].get<std::string>();
        }
        if (token.empty()) return fail(ErrorKind::Image, "token server {} returned no token", realm->second);
        if (token.find_first_of("\r\n") != std::string::npos) {
            return fail(ErrorKind::Image, "token server {} returned a token with a line break", realm->second);
        }
        std::lock_guard lock(token_mutex_);
        token_ = std::move(token);
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::Image, "token server {} returned invalid JSON: {}", realm->second, e.what());
    }
    return {};
}

BoxliteResult<void> RegistryClient::authenticate() {
    std::lock_guard lock(auth_mutex_);
    if (authenticated_) return {};
    if (!credentials_loaded_) {
        credentials_loaded_ = true;
        if (const auto it = options_.credentials.find(reference_.registry); it != options_.credentials.end()) {
            credentials_ = it->second;
        } else {
            const auto path = options_.docker_config ? *options_.docker_config : default_docker_config_path();
            BOXLITE_TRY(credentials_, docker_config_credentials(path, reference_.registry));
        }
    }
    const std::string url = scheme_ + "://" + host_ + "/v2/";
    Response ping;
    auto backoff = options_.initial_backoff;
    for (unsigned attempt = 1;; ++attempt) {
        BOXLITE_TRY(ping, get(url, "", nullptr, 0, options_.max_json_bytes));
        const bool retry = transient(ping.curl) || ping.status >= 500 || ping.status == 429;
        if (!retry || attempt >= std::max(1u, options_.max_attempts)) break;
        std::this_thread::sleep_for(backoff);
        backoff *= 2;
    }
    if (ping.curl != CURLE_OK && !ping.body_too_large) {
        return fail(ErrorKind::Image, "cannot reach registry {} at {}: {}", reference_.registry, url, ping.curl_error);
    }
    if (ping.status == 200) {
        authenticated_ = true;
        return {};
    }
    if (ping.status != 401) return fail(http_error(ping, fmt::format("registry API check {}", url)));
    const auto header = ping.headers.find("www-authenticate");
    const auto challenge = header == ping.headers.end() ? std::nullopt : parse_www_authenticate(header->second);
    if (!challenge) {
        return fail(ErrorKind::Image, "registry {} answered 401 without a usable WWW-Authenticate header",
                    reference_.registry);
    }
    if (challenge->scheme == "bearer") {
        bearer_ = challenge;
        BOXLITE_TRY_VOID(fetch_token(*challenge));
        authenticated_ = true;
        return {};
    }
    if (challenge->scheme != "basic") {
        return fail(ErrorKind::Image,
                    "registry {} wants unsupported authentication scheme '{}' (supported: Bearer, Basic)",
                    reference_.registry, challenge->scheme);
    }
    if (!credentials_) {
        return fail(
            ErrorKind::Image,
            "registry {} requires authentication (HTTP Basic) and no credentials are configured for it; add them "
            "to ~/.docker/config.json auths or pass RegistryOptions::credentials",
            reference_.registry);
    }
    {
        std::lock_guard token_lock(token_mutex_);
        basic_ = true;
    }
    BOXLITE_TRY(auto check, get(url, "", nullptr, 0, options_.max_json_bytes));
    if (check.status == 401) {
        std::lock_guard token_lock(token_mutex_);
        basic_ = false;
        return fail(ErrorKind::Image,
                    "authentication to registry {} failed for user '{}': the registry answered HTTP 401 Unauthorized "
                    "(check the credentials)",
                    reference_.registry, credentials_->username);
    }
    if (check.status != 200) return fail(http_error(check, fmt::format("registry API check {}", url)));
    authenticated_ = true;
    return {};
}

BoxliteResult<RegistryClient::Response> RegistryClient::get_authorized(const std::string& url,
                                                                       const std::string& accept, Sink* sink,
                                                                       std::uint64_t resume_from) {
    BOXLITE_TRY_VOID(authenticate());
    BOXLITE_TRY(auto response, get(url, accept, sink, resume_from, options_.max_json_bytes));
    if (response.status == 401 && bearer_) {
        // Tokens expire (Docker Hub's after 5 minutes): renew once and retry.
        {
            std::lock_guard lock(auth_mutex_);
            BOXLITE_TRY_VOID(fetch_token(*bearer_));
        }
        BOXLITE_TRY(response, get(url, accept, sink, resume_from, options_.max_json_bytes));
    }
    return response;
}

BoxliteResult<FetchedManifest> RegistryClient::fetch_manifest(std::string_view tag_or_digest, bool* not_found) {
    if (not_found != nullptr) *not_found = false;
    const std::string url = fmt::format("{}://{}/v2/{}/manifests/{}", scheme_, host_, reference_.repository,
                                        tag_or_digest);
    const std::string what = fmt::format("manifest {}:{}", reference_.name(), tag_or_digest);
    FetchedManifest out;
    Sink sink;
    bool too_large = false;
    sink.write = [&](const char* data, std::size_t size) {
        if (out.body.size() + size > options_.max_manifest_bytes) {
            too_large = true;
            return false;
        }
        out.body.append(data, size);
        return true;
    };
    Response response;
    auto backoff = options_.initial_backoff;
    for (unsigned attempt = 1;; ++attempt) {
        out.body.clear();
        BOXLITE_TRY(response, get_authorized(url, std::string(media_type::kManifestAccept), &sink, 0));
        const bool retry = !too_large && (transient(response.curl) || response.status >= 500 || response.status == 429);
        if (!retry || attempt >= std::max(1u, options_.max_attempts)) break;
        std::this_thread::sleep_for(backoff);
        backoff *= 2;
    }
    if (too_large) {
        return fail(ErrorKind::Image, "{} is larger than {} bytes (refused)", what, options_.max_manifest_bytes);
    }
    if (response.curl != CURLE_OK && !response.body_too_large) {
        return fail(ErrorKind::Image, "fetching {} from {}: {}", what, url, response.curl_error);
    }
    if (response.status == 404) {
        if (not_found != nullptr) *not_found = true;
        return fail(ErrorKind::Image, "image '{}:{}' not found: registry {} has no such manifest{}", reference_.name(),
                    tag_or_digest, reference_.registry, [&] {
                        const auto e = http_error(response, "");
                        const auto open = e.message().find(" (");
                        return open == std::string::npos ? std::string() : e.message().substr(open);
                    }());
    }
    if (response.status == 401 || response.status == 403) {
        if (not_found != nullptr) *not_found = true;
        return fail(ErrorKind::Image,
                    "pull access denied for {}: the repository does not exist or requires credentials (registry "
                    "answered HTTP {})",
                    reference_.name(), response.status);
    }
    if (response.status != 200) return fail(http_error(response, "fetching " + what));
    out.content_type = response.headers.count("content-type") ? response.headers["content-type"] : "";
    out.digest = sha256_digest(out.body);
    if (tag_or_digest.starts_with("sha256:") && out.digest != tag_or_digest) {
        return fail(ErrorKind::Image, "digest mismatch for {}: expected {}, the registry sent content with digest {}",
                    what, tag_or_digest, out.digest);
    }
    if (const auto h = response.headers.find("docker-content-digest");
        h != response.headers.end() && h->second.starts_with("sha256:") && h->second != out.digest) {
        return fail(ErrorKind::Image,
                    "digest mismatch for {}: the registry announced {} (Docker-Content-Digest) but sent content with "
                    "digest {}",
                    what, h->second, out.digest);
    }
    return out;
}

BoxliteResult<std::string> RegistryClient::fetch_blob(const Descriptor& descriptor, std::uint64_t max_bytes) {
    if (descriptor.size > max_bytes) {
        return fail(ErrorKind::Image, "blob {} declares {} bytes (at most {} allowed here)", descriptor.digest,
                    descriptor.size, max_bytes);
    }
    const std::string url = fmt::format("{}://{}/v2/{}/blobs/{}", scheme_, host_, reference_.repository,
                                        descriptor.digest);
    std::string body;
    bool too_large = false;
    Sink sink;
    sink.write = [&](const char* data, std::size_t size) {
        if (body.size() + size > descriptor.size) {
            too_large = true;
            return false;
        }
        body.append(data, size);
        return true;
    };
    Response response;
    auto backoff = options_.initial_backoff;
    for (unsigned attempt = 1;; ++attempt) {
        body.clear();
        BOXLITE_TRY(response, get_authorized(url, "", &sink, 0));
        const bool retry = !too_large && (transient(response.curl) || response.status >= 500 || response.status == 429);
        if (!retry || attempt >= std::max(1u, options_.max_attempts)) break;
        std::this_thread::sleep_for(backoff);
        backoff *= 2;
    }
    if (too_large) {
        return fail(ErrorKind::Image, "blob {} is larger than its descriptor's {} bytes (refused)", descriptor.digest,
                    descriptor.size);
    }
    if (response.curl != CURLE_OK && !response.body_too_large) {
        return fail(ErrorKind::Image, "fetching blob {} from {}: {}", descriptor.digest, url, response.curl_error);
    }
    if (response.status != 200) return fail(http_error(response, "fetching blob " + descriptor.digest));
    const auto digest = sha256_digest(body);
    if (digest != descriptor.digest) {
        return fail(ErrorKind::Image,
                    "digest mismatch for blob of {}: expected {}, the registry sent content with digest {}",
                    reference_.name(), descriptor.digest, digest);
    }
    return body;
}

BoxliteResult<void> RegistryClient::download_blob(const Descriptor& descriptor, const std::filesystem::path& partial,
                                                  const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
    if (descriptor.size > options_.max_layer_bytes) {
        return fail(ErrorKind::Image, "layer {} declares {} bytes (at most {} allowed)", descriptor.digest,
                    descriptor.size, options_.max_layer_bytes);
    }
    const std::string url = fmt::format("{}://{}/v2/{}/blobs/{}", scheme_, host_, reference_.repository,
                                        descriptor.digest);
    const int fd = ::open(partial.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", partial.string()), errno);
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};

    Sha256 hash;
    std::uint64_t have = 0;
    // Hashes what an earlier, interrupted download left, so the transfer resumes after it.
    auto rehash_existing = [&]() -> BoxliteResult<void> {
        hash.reset();
        have = 0;
        struct stat st {};
        if (::fstat(fd, &st) != 0) return fail_errno(ErrorKind::Storage, "fstat", errno);
        auto size = static_cast<std::uint64_t>(st.st_size);
        if (size > descriptor.size) {
            if (::ftruncate(fd, 0) != 0) return fail_errno(ErrorKind::Storage, "truncate", errno);
            size = 0;
        }
        std::vector<char> buffer(1 << 16);
        while (have < size) {
            const auto n = ::pread(fd, buffer.data(), std::min<std::uint64_t>(buffer.size(), size - have),
                                   static_cast<off_t>(have));
            if (n <= 0) return fail_errno(ErrorKind::Storage, fmt::format("reading {}", partial.string()), errno);
            hash.update(buffer.data(), static_cast<std::size_t>(n));
            have += static_cast<std::uint64_t>(n);
        }
        return {};
    };

    std::uint64_t last_report = 0;
    bool too_large = false;
    bool write_failed = false;
    Sink sink;
    sink.begin = [&](long status, const std::map<std::string, std::string>& headers) {
        if (status == 206) {
            // Content-Range: bytes <start>-<end>/<total>; it must continue exactly where we are.
            const auto it = headers.find("content-range");
            const std::string expected = fmt::format("bytes {}-", have);
            if (it != headers.end() && it->second.starts_with(expected)) return true;
        }
        // A full body (the server ignored Range): start over.
        hash.reset();
        have = 0;
        last_report = 0;
        if (::ftruncate(fd, 0) != 0) {
            write_failed = true;
            return false;
        }
        return status == 200;
    };
    sink.write = [&](const char* data, std::size_t size) {
        if (have + size > descriptor.size) {
            too_large = true;
            return false;
        }
        std::size_t done = 0;
        while (done < size) {
            const auto n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(have + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                write_failed = true;
                return false;
            }
            done += static_cast<std::size_t>(n);
        }
        hash.update(data, size);
        have += size;
        if (progress && (have - last_report >= (512u << 10) || have == descriptor.size)) {
            last_report = have;
            progress(have, descriptor.size);
        }
        return true;
    };

    auto backoff = options_.initial_backoff;
    std::string last_error;
    for (unsigned attempt = 1; attempt <= std::max(1u, options_.max_attempts); ++attempt) {
        BOXLITE_TRY_VOID(rehash_existing());
        if (progress) progress(have, descriptor.size);
        if (have < descriptor.size) {
            BOXLITE_TRY(auto response, get_authorized(url, "", &sink, have));
            if (too_large) {
                (void)::ftruncate(fd, 0);
                return fail(ErrorKind::Image, "layer {} is larger than its descriptor's {} bytes (refused)",
                            descriptor.digest, descriptor.size);
            }
            if (write_failed) return fail_errno(ErrorKind::Storage, fmt::format("writing {}", partial.string()), errno);
            if (response.sink_refused) {
                // The server resumed at another offset than asked; the partial file was emptied.
                last_error = "the server resumed at the wrong offset";
                continue;
            }
            if (response.status == 416) {
                // Our partial file disagrees with the server: throw it away and start over.
                if (::ftruncate(fd, 0) != 0) return fail_errno(ErrorKind::Storage, "truncate", errno);
                last_error = "HTTP 416 on resume";
                continue;
            }
            const bool retry = transient(response.curl) || response.status >= 500 || response.status == 429 ||
                               (response.curl == CURLE_OK && (response.status == 200 || response.status == 206) &&
                                have < descriptor.size);
            if (response.curl != CURLE_OK && !retry && !response.sink_refused) {
                return fail(ErrorKind::Image, "downloading layer {} from {}: {}", descriptor.digest, url,
                            response.curl_error);
            }
            if (!retry && response.status != 200 && response.status != 206) {
                return fail(http_error(response, "downloading layer " + descriptor.digest));
            }
            if (retry) {
                last_error = response.curl != CURLE_OK ? response.curl_error : fmt::format("HTTP {}", response.status);
                std::this_thread::sleep_for(backoff);
                backoff *= 2;
                continue;
            }
        }
        const auto digest = hash.finish();
        if (digest != descriptor.digest) {
            (void)::ftruncate(fd, 0);
            return fail(ErrorKind::Image,
                        "digest mismatch for layer of {}: expected {}, the registry sent content with digest {}",
                        reference_.name(), descriptor.digest, digest);
        }
        if (::fsync(fd) != 0) return fail_errno(ErrorKind::Storage, fmt::format("fsync {}", partial.string()), errno);
        return {};
    }
    return fail(ErrorKind::Image,
                "downloading layer {} from {} failed after {} attempts (last: {}); the partial download "
                "is kept and resumes on the next pull",
                descriptor.digest, url, options_.max_attempts, last_error);
}

}  // namespace boxlite::image
