// The server's routes against docs/openapi.yaml (both ways), and the error envelope's status
// mapping, without a running server (the pytest files drive the real one).
#include "server/rest_api.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>

namespace {

using boxlite::server::RestApi;

/// "METHOD /path" for every operation under `paths:` of the OpenAPI document. The document is
/// written with two-space indents: a path at indent 2, its operations at indent 4.
std::set<std::string> document_routes(const std::string& file) {
    std::ifstream in(file);
    EXPECT_TRUE(in) << file;
    std::set<std::string> routes;
    std::string line;
    bool in_paths = false;
    std::string path;
    static const std::set<std::string> kMethods = {"get", "put", "post", "delete", "head", "patch", "options"};
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        if (line[0] != ' ') {
            in_paths = line == "paths:";
            continue;
        }
        if (!in_paths) continue;
        const auto indent = line.find_first_not_of(' ');
        const auto colon = line.find(':', indent);
        if (colon == std::string::npos) continue;
        const auto key = line.substr(indent, colon - indent);
        if (indent == 2) path = key;
        if (indent == 4 && kMethods.contains(key)) {
            std::string method = key;
            std::transform(method.begin(), method.end(), method.begin(), ::toupper);
            routes.insert(method + " " + path);
        }
    }
    return routes;
}

TEST(ServeRoutes, ServerAndOpenApiDocumentListTheSameRoutes) {
    const auto documented = document_routes(BOXLITE_SOURCE_DIR "/docs/openapi.yaml");
    ASSERT_FALSE(documented.empty());
    const auto list = RestApi::routes();
    const std::set<std::string> served(list.begin(), list.end());
    EXPECT_EQ(served.size(), list.size()) << "a route is listed twice";
    for (const auto& route : served) EXPECT_TRUE(documented.contains(route)) << route << " is not in docs/openapi.yaml";
    for (const auto& route : documented)
        EXPECT_TRUE(served.contains(route)) << route << " is documented but not served";
}

TEST(ServeErrors, EnvelopeAndStatusMappingFollowUpstream) {
    using boxlite::BoxliteError;
    using boxlite::ErrorKind;
    struct Case {
        ErrorKind kind;
        int status;
        const char* type;
        const char* code;
    };
    const Case cases[] = {
        {ErrorKind::InvalidArgument, 400, "InvalidArgumentError", "invalid_argument"},
        {ErrorKind::Unsupported, 400, "UnsupportedError", "unsupported"},
        {ErrorKind::UnsupportedEngine, 400, "UnsupportedError", "unsupported"},
        {ErrorKind::NotFound, 404, "NotFoundError", "not_found"},
        {ErrorKind::AlreadyExists, 409, "AlreadyExistsError", "already_exists"},
        {ErrorKind::InvalidState, 409, "InvalidStateError", "invalid_state"},
        {ErrorKind::Stopped, 409, "StoppedError", "stopped"},
        {ErrorKind::Image, 422, "ImageError", "image_pull_failed"},
        {ErrorKind::Execution, 422, "ExecutionError", "execution_failed"},
        {ErrorKind::Network, 503, "NetworkError", "network_unavailable"},
        {ErrorKind::Portal, 503, "UpstreamUnavailableError", "upstream_unavailable"},
        {ErrorKind::Rpc, 503, "UpstreamUnavailableError", "upstream_unavailable"},
        {ErrorKind::RpcTransport, 503, "UpstreamUnavailableError", "upstream_unavailable"},
        {ErrorKind::Engine, 503, "EngineError", "engine_unavailable"},
        {ErrorKind::Storage, 500, "StorageError", "storage_error"},
        {ErrorKind::Database, 500, "DatabaseError", "database_error"},
        {ErrorKind::MetadataError, 500, "MetadataError", "metadata_error"},
        {ErrorKind::Internal, 500, "InternalError", "internal"},
    };
    for (const auto& c : cases) {
        const auto response = boxlite::server::error_response(BoxliteError(c.kind, "what went wrong"), "rid-1");
        EXPECT_EQ(response.status, c.status) << c.type;
        EXPECT_EQ(response.content_type, "application/json");
        const auto body = nlohmann::json::parse(response.body);
        EXPECT_EQ(body["error"]["type"], c.type);
        EXPECT_EQ(body["error"]["code"], c.code);
        EXPECT_EQ(body["error"]["request_id"], "rid-1");
        EXPECT_NE(body["error"]["message"].get<std::string>().find("what went wrong"), std::string::npos);
    }
}

TEST(ServeErrors, SignalWhitelistIsUpstreams) {
    for (int signo = 0; signo <= 64; ++signo) {
        const bool expected = signo == 1 || signo == 2 || signo == 3 || signo == 6 || signo == 10 || signo == 12 ||
                              signo == 15 || signo == 28;
        EXPECT_EQ(boxlite::server::is_allowed_signal(signo), expected) << signo;
    }
}

TEST(ServeOptions, NonLoopbackBindNeedsAKey) {
    using boxlite::server::ServeOptions;
    ServeOptions options;
    EXPECT_TRUE(boxlite::server::validate(options));
    for (const char* host : {"0.0.0.0", "::", "10.0.0.1"}) {
        options.host = host;
        options.api_key.reset();
        const auto refused = boxlite::server::validate(options);
        ASSERT_FALSE(refused) << host;
        EXPECT_NE(refused.error().message().find("API key"), std::string::npos);
        options.api_key = "k";
        EXPECT_TRUE(boxlite::server::validate(options)) << host;
    }
    for (const char* host : {"127.0.0.1", "127.1.2.3", "::1", "localhost"}) {
        EXPECT_TRUE(boxlite::server::is_loopback_host(host)) << host;
    }
    options.host = "not an address";
    EXPECT_FALSE(boxlite::server::validate(options));
}

}  // namespace
