// Distribution documents, auth headers and docker's config: strict parsing, and a mutation fuzz
// loop over each parser (hostile input must give an error, never a crash or a hang).
#include "image/oci.hpp"
#include "image/registry_client.hpp"

#include <boxlite/image/image_config.hpp>
#include <boxlite/image/reference.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <unistd.h>

namespace boxlite::image {
namespace {

const std::string kDigestA = "sha256:" + std::string(64, 'a');
const std::string kDigestB = "sha256:" + std::string(64, 'b');
const std::string kDigestC = "sha256:" + std::string(64, 'c');

std::string manifest_json() {
    return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
           R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
           kDigestA +
           R"(","size":100},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
           kDigestB + R"(","size":2000},{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":")" +
           kDigestC + R"(","size":3}]})";
}

std::string index_json() {
    return R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[)"
           R"({"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
           kDigestA +
           R"(","size":1,"platform":{"os":"linux","architecture":"amd64"}},)"
           R"({"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
           kDigestB +
           R"(","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},)"
           R"({"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
           kDigestC + R"(","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]})";
}

TEST(ImageManifest, ParsesOciManifest) {
    auto doc = parse_manifest_document(manifest_json(), "application/vnd.oci.image.manifest.v1+json");
    ASSERT_TRUE(doc) << doc.error().message();
    const auto& m = std::get<Manifest>(*doc);
    EXPECT_EQ(m.config.digest, kDigestA);
    ASSERT_EQ(m.layers.size(), 2u);
    EXPECT_EQ(m.layers[0].size, 2000u);
    EXPECT_EQ(m.layers[1].media_type, media_type::kOciLayerZstd);
}

TEST(ImageManifest, RejectsWhatWeCannotTrust) {
    auto expect_image_error = [](const std::string& body, std::string_view needle, std::string_view type = {}) {
        auto doc = parse_manifest_document(body, type);
        ASSERT_FALSE(doc) << body;
        EXPECT_EQ(doc.error().kind(), ErrorKind::Image);
        EXPECT_NE(doc.error().message().find(needle), std::string::npos) << doc.error().message();
    };
    expect_image_error("not json", "not valid JSON");
    expect_image_error("[]", "JSON object");
    expect_image_error(R"({"schemaVersion":1})", "schemaVersion");
    // Concatenation rather than std::string::replace: GCC 12 at -O3 warns falsely (-Wrestrict) on it.
    auto with = [](std::string_view from, std::string_view to) {
        const std::string m = manifest_json();
        const auto at = m.find(from);
        return m.substr(0, at) + std::string(to) + m.substr(at + from.size());
    };
    expect_image_error(with(kDigestB, "sha256:abc"), "not sha256");
    expect_image_error(with(kDigestB, "md5:" + std::string(32, 'a')), "not sha256");
    expect_image_error(with("2000", "-1"), "size");
    expect_image_error(with("tar+gzip", "exe"), "unsupported media type");
    expect_image_error(manifest_json(), "Content-Type", "application/vnd.oci.image.index.v1+json");
    expect_image_error(R"({"schemaVersion":2,"mediaType":"application/x-evil"})", "unsupported manifest media type");
    std::string many =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":")" +
        kDigestA + R"(","size":1},"layers":[)";
    for (int i = 0; i < 600; ++i) {
        if (i > 0) many += ',';
        many += R"({"digest":")";
        many += kDigestB;
        many += R"(","size":1})";
    }
    expect_image_error(many + "]}", "at most 512");
}

TEST(ImageManifest, SelectsPlatformFromIndex) {
    auto doc = parse_manifest_document(index_json(), "");
    ASSERT_TRUE(doc) << doc.error().message();
    const auto& index = std::get<Index>(*doc);
    ASSERT_EQ(index.manifests.size(), 3u);
    EXPECT_EQ(select_platform(index, {"linux", "amd64", ""}, "x")->digest, kDigestA);
    EXPECT_EQ(select_platform(index, {"linux", "arm64", ""}, "x")->digest, kDigestB);
    EXPECT_EQ(select_platform(index, {"linux", "aarch64", "v8"}, "x")->digest, kDigestB);
    EXPECT_EQ(select_platform(index, {"linux", "arm", "v7"}, "x")->digest, kDigestC);
    auto missing = select_platform(index, {"linux", "riscv64", ""}, "image foo");
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find("linux/amd64, linux/arm64/v8, linux/arm/v7"), std::string::npos)
        << missing.error().message();
    auto wrong_variant = select_platform(index, {"linux", "arm", "v6"}, "x");
    EXPECT_FALSE(wrong_variant);
}

// Entries without `platform` (a single-image index from some tools) match any request, as in
// containerd; an entry that names a matching platform still wins over them.
TEST(ImageManifest, IndexEntriesWithoutAPlatformMatchAnyPlatform) {
    const std::string single = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",)"
                               R"("manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                               kDigestA + R"(","size":10}]})";
    auto doc = parse_manifest_document(single, "");
    ASSERT_TRUE(doc) << doc.error().message();
    const auto& index = std::get<Index>(*doc);
    ASSERT_EQ(index.manifests.size(), 1u);
    EXPECT_FALSE(index.manifests[0].platform.has_value());
    for (const Platform& p : {Platform{"linux", "amd64", ""}, Platform{"linux", "arm64", "v8"}}) {
        auto chosen = select_platform(index, p, "x");
        ASSERT_TRUE(chosen) << chosen.error().message();
        EXPECT_EQ(chosen->digest, kDigestA);
    }

    Index mixed = index;
    mixed.manifests.push_back(
        {std::string(media_type::kOciManifest), kDigestB, 10, Platform{"linux", "arm64", "v8"}, {}});
    EXPECT_EQ(select_platform(mixed, {"linux", "arm64", ""}, "x")->digest, kDigestB);
    EXPECT_EQ(select_platform(mixed, {"linux", "amd64", ""}, "x")->digest, kDigestA);
}

TEST(ImageConfigParse, ReadsRuntimeDefaults) {
    auto config = parse_image_config(
        R"({"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/bin","A=b"],)"
        R"("Entrypoint":null,"Cmd":["/bin/sh"],"WorkingDir":"/w","User":"1000","Labels":{"k":"v"}},)"
        R"("rootfs":{"type":"layers","diff_ids":[")" +
        kDigestA + R"("]}})");
    ASSERT_TRUE(config) << config.error().message();
    EXPECT_EQ(config->platform.architecture, "amd64");
    EXPECT_EQ(config->env.size(), 2u);
    EXPECT_FALSE(config->entrypoint.has_value());
    EXPECT_EQ(config->cmd, (std::vector<std::string>{"/bin/sh"}));
    EXPECT_EQ(config->working_dir, "/w");
    EXPECT_EQ(config->user, "1000");
    EXPECT_EQ(config->labels.at("k"), "v");
    EXPECT_EQ(config->diff_ids.size(), 1u);
    EXPECT_FALSE(parse_image_config(R"({"config":{"Env":"PATH=/bin"}})"));
    EXPECT_FALSE(parse_image_config(R"({"config":{"Cmd":[1]}})"));
    EXPECT_FALSE(parse_image_config("{"));
}

TEST(ImageAuth, ParsesWwwAuthenticate) {
    auto bearer = parse_www_authenticate(
        R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull")");
    ASSERT_TRUE(bearer);
    EXPECT_EQ(bearer->scheme, "bearer");
    EXPECT_EQ(bearer->params.at("realm"), "https://auth.docker.io/token");
    EXPECT_EQ(bearer->params.at("service"), "registry.docker.io");
    EXPECT_EQ(bearer->params.at("scope"), "repository:library/alpine:pull");
    auto basic = parse_www_authenticate(R"(Basic realm="boxlite test")");
    ASSERT_TRUE(basic);
    EXPECT_EQ(basic->scheme, "basic");
    EXPECT_EQ(basic->params.at("realm"), "boxlite test");
    auto escaped = parse_www_authenticate(R"(Bearer realm="a\"b", error=insufficient_scope)");
    ASSERT_TRUE(escaped);
    EXPECT_EQ(escaped->params.at("realm"), "a\"b");
    EXPECT_EQ(escaped->params.at("error"), "insufficient_scope");
    EXPECT_FALSE(parse_www_authenticate(""));
    EXPECT_FALSE(parse_www_authenticate(R"(Bearer realm="unterminated)"));
}

class DockerConfig : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/boxlite-dockercfg-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        dir_ = pattern;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::filesystem::path write(const std::string& text) {
        auto path = dir_ / "config.json";
        std::ofstream(path) << text;
        return path;
    }
    std::filesystem::path dir_;
};

TEST_F(DockerConfig, ReadsAuthsByHost) {
    // "dXNlcjpwYTpzcw==" is base64("user:pa:ss"): only the first ':' separates.
    const auto path = write(R"({"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},)"
                            R"("localhost:5000":{"auth":"dXNlcjpwYTpzcw=="},)"
                            R"("https://ghcr.io":{"username":"octo","password":"tok"}},"credsStore":"desktop"})");
    auto hub = docker_config_credentials(path, "docker.io");
    ASSERT_TRUE(hub && *hub);
    EXPECT_EQ((*hub)->username, "hub");
    EXPECT_EQ((*hub)->password, "secret");
    auto local = docker_config_credentials(path, "localhost:5000");
    ASSERT_TRUE(local && *local);
    EXPECT_EQ((*local)->password, "pa:ss");
    auto ghcr = docker_config_credentials(path, "ghcr.io");
    ASSERT_TRUE(ghcr && *ghcr);
    EXPECT_EQ((*ghcr)->username, "octo");
    auto none = docker_config_credentials(path, "quay.io");
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->has_value());
    auto absent = docker_config_credentials(dir_ / "nope.json", "docker.io");
    ASSERT_TRUE(absent);
    EXPECT_FALSE(absent->has_value());
}

TEST_F(DockerConfig, MalformedIsAConfigError) {
    auto bad_json = docker_config_credentials(write("{"), "docker.io");
    ASSERT_FALSE(bad_json);
    EXPECT_EQ(bad_json.error().kind(), ErrorKind::Config);
    auto bad_auth = docker_config_credentials(write(R"({"auths":{"docker.io":{"auth":"!!!!"}}})"), "docker.io");
    ASSERT_FALSE(bad_auth);
    EXPECT_NE(bad_auth.error().message().find("base64"), std::string::npos);
    // Padding only at the end, at most two; lengths not a multiple of four.
    for (const char* auth : {"aHVi=npz", "aHViOnNlY3JldA=a", "aHViOnNlY3JldA===", "aHViOnNlY3JldA", "=AAA"}) {
        auto bad = docker_config_credentials(write(fmt::format(R"({{"auths":{{"docker.io":{{"auth":"{}"}}}}}})", auth)),
                                             "docker.io");
        EXPECT_FALSE(bad) << auth;
    }
}

TEST_F(DockerConfig, DecodesBase64WithAndWithoutPadding) {
    // One padding byte, two, none, and a line break inside (ignored, as base64 -w wraps).
    for (const auto& [auth, user, password] :
         {std::tuple{"Ym94bGl0ZTpzM2NyZXQ=", "boxlite", "s3cret"}, std::tuple{"YTpiYw==", "a", "bc"},
          std::tuple{"YWI6Y2Rl", "ab", "cde"}, std::tuple{"Ym94\\nbGl0ZTpzM2NyZXQ=", "boxlite", "s3cret"}}) {
        auto found = docker_config_credentials(write(
                                                   fmt::format(R"({{"auths":{{"docker.io":{{"auth":"{}"}}}}}})", auth)),
                                               "docker.io");
        ASSERT_TRUE(found && *found) << auth;
        EXPECT_EQ((*found)->username, user) << auth;
        EXPECT_EQ((*found)->password, password) << auth;
    }
}

// Mutation fuzzing: flip, insert, delete and duplicate bytes of valid inputs. Every parser must
// return (an error or a value), never crash; run under ASan+UBSan in CI.
std::string mutate(std::string input, std::mt19937& rng) {
    const int edits = 1 + static_cast<int>(rng() % 8);
    static const char kInteresting[] = {'"', '{', '}', '[', ']', ':', ',', '\\', '\0', '/', '@', '.', '-', '9'};
    for (int e = 0; e < edits && !input.empty(); ++e) {
        const std::size_t pos = rng() % input.size();
        switch (rng() % 5) {
            case 0: input[pos] = static_cast<char>(rng() & 0xff); break;
            case 1: input.insert(pos, 1, kInteresting[rng() % sizeof kInteresting]); break;
            case 2: input.erase(pos, 1 + rng() % 8); break;
            case 3: input.insert(pos, input.substr(pos, rng() % 32)); break;
            default: input[pos] = kInteresting[rng() % sizeof kInteresting]; break;
        }
    }
    return input;
}

TEST(ImageFuzz, ParsersSurviveMutatedInput) {
    std::mt19937 rng(20241122);
    const std::vector<std::string> manifests = {manifest_json(), index_json()};
    const std::string config =
        R"({"os":"linux","config":{"Env":["A=b"],"Cmd":["x"],"Labels":{"a":"b"}},"rootfs":{"diff_ids":[]}})";
    const std::vector<std::string> references = {"ghcr.io/org/app:1.0@" + kDigestA, "localhost:5000/a/b",
                                                 "[::1]:80/x:y"};
    const std::string header = R"(Bearer realm="https://a/token",service="s",scope="repository:x:pull")";
    int accepted = 0;
    for (int i = 0; i < 4000; ++i) {
        if (parse_manifest_document(mutate(manifests[i % 2], rng), "")) ++accepted;
        if (parse_image_config(mutate(config, rng))) ++accepted;
        const auto ref_text = mutate(references[i % 3], rng);
        if (auto ref = parse_reference(ref_text)) {
            ++accepted;
            // Whatever parses must round-trip through its canonical form.
            auto again = parse_reference(ref->to_string());
            ASSERT_TRUE(again) << ref_text << " -> " << ref->to_string();
            EXPECT_EQ(again->to_string(), ref->to_string());
        }
        (void)parse_www_authenticate(mutate(header, rng));
        (void)parse_platform(mutate("linux/arm64/v8", rng));
    }
    EXPECT_GT(accepted, 0);
}

// HTTPS unless the registry is loopback (as Docker) or listed in insecure_registries (host[:port]
// as the reference names it, any case); the store refuses entries that are not host[:port].
TEST(ImageRegistryClient, UsesPlainHttpOnlyForLoopbackAndInsecureRegistries) {
    auto scheme = [](const RegistryOptions& options, std::string_view reference) {
        return RegistryClient(options, parse_reference(reference).value()).scheme();
    };
    RegistryOptions options;
    EXPECT_EQ(scheme(options, "registry.example:5000/team/app:1"), "https");
    EXPECT_EQ(scheme(options, "ghcr.io/org/app"), "https");
    EXPECT_EQ(scheme(options, "alpine"), "https");
    EXPECT_EQ(scheme(options, "127.0.0.1:5000/app"), "http");
    EXPECT_EQ(scheme(options, "localhost/app"), "http");
    EXPECT_EQ(scheme(options, "[::1]:5000/app"), "http");
    options.insecure_registries = {"Registry.Example:5000"};
    EXPECT_EQ(scheme(options, "registry.example:5000/team/app:1"), "http");
    EXPECT_EQ(scheme(options, "registry.example/team/app:1"), "https");  // another port, another registry
    EXPECT_EQ(scheme(options, "registry.example:5001/team/app:1"), "https");

    char dir[] = "/tmp/boxlite-insecure-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    for (const char* bad : {"http://registry.example:5000", "registry.example/v2", "", "registry example"}) {
        RegistryOptions invalid;
        invalid.insecure_registries = {bad};
        auto store = ImageStore::open({dir, invalid, {}});
        ASSERT_FALSE(store) << bad;
        EXPECT_EQ(store.error().kind(), ErrorKind::Config);
        EXPECT_NE(store.error().message().find(fmt::format("insecure registry '{}'", bad)), std::string::npos)
            << store.error().message();
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace boxlite::image
