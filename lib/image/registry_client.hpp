// The distribution-API client: one RegistryClient per (registry, repository) pull session.
//
//   ping          GET /v2/ unauthenticated; a 401 tells which scheme the registry wants
//   Bearer        token from the WWW-Authenticate realm (anonymous, or Basic-authenticated with
//                 the user's credentials), scope repository:<name>:pull; renewed on a later 401
//   Basic         Authorization: Basic on every request
//   manifests     GET /v2/<name>/manifests/<ref>, body bounded, sha256 checked against the digest
//                 asked for and against Docker-Content-Digest
//   blobs         GET /v2/<name>/blobs/<digest>, streamed to a partial file with a running sha256,
//                 resumed with Range after an interruption, retried with exponential backoff
//
// HTTPS by default; plain HTTP for loopback registries and those listed as insecure.
// Credentials are never sent to another host: a redirect (blob storage on a CDN) drops them.
#pragma once

#include "oci.hpp"

#include <boxlite/error.hpp>
#include <boxlite/image/image_store.hpp>
#include <boxlite/image/reference.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace boxlite::image {

/// One challenge of a WWW-Authenticate header: `Bearer realm="…",service="…",scope="…"`.
struct AuthChallenge {
    std::string scheme;                         ///< lower case: "bearer", "basic"
    std::map<std::string, std::string> params;  ///< keys lower case
};

/// Parses the first challenge; nullopt when the header is malformed.
[[nodiscard]] std::optional<AuthChallenge> parse_www_authenticate(std::string_view header);

/// Looks `registry` up in a Docker client config (`auths`: base64 "user:password" in `auth`, or
/// `username` + `password`). Keys may be URLs ("https://index.docker.io/v1/"). Nullopt when absent;
/// an error when the file exists but is malformed.
[[nodiscard]] BoxliteResult<std::optional<RegistryCredentials>> docker_config_credentials(
    const std::filesystem::path& config, std::string_view registry);

/// $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json.
[[nodiscard]] std::filesystem::path default_docker_config_path();

struct FetchedManifest {
    std::string body;
    std::string content_type;
    std::string digest;  ///< sha256 of body
};

class RegistryClient {
public:
    RegistryClient(const RegistryOptions& options, ImageReference reference);
    ~RegistryClient();
    RegistryClient(const RegistryClient&) = delete;
    RegistryClient& operator=(const RegistryClient&) = delete;

    /// Fetches a manifest or index by tag or digest. `not_found` is set when the registry says
    /// the repository or the manifest does not exist (so the caller can try the next registry).
    [[nodiscard]] BoxliteResult<FetchedManifest> fetch_manifest(std::string_view tag_or_digest,
                                                                bool* not_found = nullptr);

    /// A small blob (config) into memory, verified.
    [[nodiscard]] BoxliteResult<std::string> fetch_blob(const Descriptor& descriptor, std::uint64_t max_bytes);

    /// A layer blob into `partial` (resumed if it already holds a prefix), verified; on success
    /// the file holds exactly the blob. `progress(current, total)` is called as bytes arrive.
    [[nodiscard]] BoxliteResult<void> download_blob(const Descriptor& descriptor, const std::filesystem::path& partial,
                                                    const std::function<void(std::uint64_t, std::uint64_t)>& progress);

    /// "http" or "https", as chosen for this registry.
    [[nodiscard]] const std::string& scheme() const noexcept { return scheme_; }

    // Internal to the client's transfer loop (public only so its callbacks can name them).
    struct Response;
    struct Sink;

private:
    [[nodiscard]] BoxliteResult<void> authenticate();
    [[nodiscard]] BoxliteResult<Response> get(const std::string& url, const std::string& accept, Sink* sink,
                                              std::uint64_t resume_from, std::uint64_t max_error_body);
    [[nodiscard]] BoxliteResult<Response> get_authorized(const std::string& url, const std::string& accept, Sink* sink,
                                                         std::uint64_t resume_from);
    [[nodiscard]] BoxliteResult<void> fetch_token(const AuthChallenge& challenge);
    [[nodiscard]] std::string authorization_header();
    [[nodiscard]] BoxliteError http_error(const Response& response, std::string_view what) const;

    const RegistryOptions& options_;
    ImageReference reference_;
    std::string scheme_;
    std::string host_;  ///< where the API lives ("registry-1.docker.io" for docker.io)
    std::optional<RegistryCredentials> credentials_;
    bool credentials_loaded_ = false;

    std::mutex auth_mutex_;   ///< serializes ping + token fetches
    std::mutex token_mutex_;  ///< guards token_ and basic_, read by every download thread
    bool authenticated_ = false;
    std::optional<AuthChallenge> bearer_;  ///< set when the registry uses tokens
    std::string token_;
    bool basic_ = false;
};

}  // namespace boxlite::image
