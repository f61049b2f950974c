// The image store against a real registry: Debian's docker-registry on 127.0.0.1, images built
// from busybox-static with umoci and pushed with skopeo (registry_harness.sh).
#include "image/digest.hpp"

#include <boxlite/boxlite.hpp>
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/image/image_store.hpp>
#include <boxlite/image/reference.hpp>
#include <boxlite/runtime.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/transport/pipe_transport.hpp>

#include "support/support.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace boxlite::image {
namespace {

namespace fs = std::filesystem;

const std::string kHarness = BOXLITE_IMAGE_HARNESS;

class TempDir {
public:
    explicit TempDir(const char* prefix = "boxlite-image") {
        std::string pattern = fmt::format("/tmp/{}-XXXXXX", prefix);
        if (::mkdtemp(pattern.data()) == nullptr) std::abort();
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

int sh(const std::string& command) {
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

std::string missing_tools() {
    for (const char* tool :
         {"docker-registry", "skopeo", "umoci", "htpasswd", "mke2fs", "e2fsck", "debugfs", "curl", "openssl", "python3"}) {
        if (sh(fmt::format("command -v {} >/dev/null 2>&1", tool)) != 0) return tool;
    }
    if (!fs::exists("/bin/busybox")) return "busybox-static";
    return {};
}

// One docker-registry process with its own storage; stopped and removed on destruction.
class Registry {
public:
    enum class Auth { None, Basic, Token };
    explicit Registry(std::optional<std::pair<std::string, std::string>> credentials = std::nullopt,
                      Auth auth = Auth::Basic)
        : credentials_(std::move(credentials)), auth_(credentials_ ? auth : Auth::None), port_(free_port()) {
        start();
    }
    ~Registry() { stop(); }
    void start() {
        std::string cmd = fmt::format("bash {} {} {} {}", kHarness, auth_ == Auth::Token ? "start-token" : "start",
                                      dir_.path().string(), port_);
        if (auth_ == Auth::Token) cmd += fmt::format(" {}", free_port());
        if (credentials_) cmd += fmt::format(" {} {}", credentials_->first, credentials_->second);
        running_ = sh(cmd) == 0;
    }
    void stop() {
        if (running_) sh(fmt::format("bash {} stop {}", kHarness, dir_.path().string()));
        running_ = false;
    }
    bool running() const { return running_; }
    std::string host() const { return fmt::format("127.0.0.1:{}", port_); }
    int port() const { return port_; }
    bool push(const fs::path& oci, const std::string& tag, const std::string& dest, bool all = false) const {
        std::string cmd = fmt::format("bash {} push {} {} {} {} {}", kHarness, oci.string(), tag, port_, dest,
                                      all ? "all" : "-");
        if (credentials_) cmd += fmt::format(" {}:{}", credentials_->first, credentials_->second);
        return sh(cmd) == 0;
    }
    fs::path blob_data(std::string_view digest) const {
        const auto hex = std::string(digest_hex(digest));
        return dir_.path() / "data/docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
    }

private:
    TempDir dir_{"boxlite-registry"};
    std::optional<std::pair<std::string, std::string>> credentials_;
    Auth auth_;
    int port_;
    bool running_ = false;
};

class ImageRegistry : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        skip_reason_ = missing_tools();
        if (!skip_reason_.empty()) {
            skip_reason_ = "missing tool: " + skip_reason_;
            return;
        }
        images_ = std::make_unique<TempDir>("boxlite-oci");
        if (sh(fmt::format("bash {} build {} >{}/build.log 2>&1", kHarness, images_->path().string(),
                           images_->path().string())) != 0) {
            skip_reason_ = "building test images with umoci failed: " + read(images_->path() / "build.log");
            return;
        }
        registry_ = std::make_unique<Registry>();
        if (!registry_->running()) {
            skip_reason_ = "docker-registry did not start on 127.0.0.1";
            return;
        }
        const bool pushed = registry_->push(oci(), "single", "test/single:1") &&
                            registry_->push(oci(), "multi", "test/multi:1") &&
                            registry_->push(oci(), "multiarch", "test/multiarch:1", true) &&
                            registry_->push(oci(), "unique", "test/unique:1");
        if (!pushed) skip_reason_ = "skopeo could not push the test images";
    }
    static void TearDownTestSuite() {
        registry_.reset();
        images_.reset();
    }
    void SetUp() override {
        if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    }

    static fs::path oci() { return images_->path() / "oci"; }
    static std::string ref(std::string_view repo_tag) { return fmt::format("{}/{}", registry_->host(), repo_tag); }

    ImageStore open_store(const fs::path& home, RegistryOptions registry = {}) {
        registry.search_registries = {};
        registry.initial_backoff = std::chrono::milliseconds(20);
        auto store = ImageStore::open({home, registry, {}});
        EXPECT_TRUE(store) << store.error().message();
        return std::move(*store);
    }

    static inline std::string skip_reason_;
    static inline std::unique_ptr<TempDir> images_;
    static inline std::unique_ptr<Registry> registry_;
    TempDir home_{"boxlite-home"};
};

TEST_F(ImageRegistry, PullsASingleLayerImageAndReusesIt) {
    auto store = open_store(home_.path());
    std::vector<LayerProgress> events;
    PullOptions options;
    options.progress = [&](const LayerProgress& p) { events.push_back(p); };
    auto image = store.pull(ref("test/single:1"), options);
    ASSERT_TRUE(image) << image.error().message();

    EXPECT_EQ(image->reference, registry_->host() + "/test/single:1");
    ASSERT_EQ(image->layers.size(), 1u);
    EXPECT_TRUE(is_valid_sha256_digest(image->manifest_digest));
    EXPECT_EQ(image->config.cmd, (std::vector<std::string>{"/bin/sh", "-c", "cat /etc/os-release"}));
    EXPECT_EQ(image->config.working_dir, "/data");
    EXPECT_NE(std::find(image->config.env.begin(), image->config.env.end(), "FOO=bar"), image->config.env.end());
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().phase, LayerPhase::Complete);
    EXPECT_EQ(events.back().current, image->layers[0].size);
    EXPECT_EQ(events.back().total, image->layers[0].size);

    // The store is an OCI layout: blobs by digest, index.json naming the image.
    const auto images = home_.path() / "images";
    EXPECT_TRUE(fs::exists(images / "oci-layout"));
    EXPECT_TRUE(fs::exists(images / "blobs/sha256" / std::string(digest_hex(image->layers[0].digest))));
    EXPECT_NE(read(images / "index.json").find(image->manifest_digest), std::string::npos);
    EXPECT_TRUE(fs::exists(home_.path() / "db/images.db"));
    EXPECT_EQ(sha256_file(images / "blobs/sha256" / std::string(digest_hex(image->layers[0].digest))).value(),
              image->layers[0].digest);

    // Again: served from the store, no download events at all.
    events.clear();
    auto again = store.pull(ref("test/single:1"), options);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->manifest_digest, image->manifest_digest);
    EXPECT_TRUE(events.empty());
    auto listed = store.list();
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    auto by_id = store.inspect(image->config_digest.substr(7, 12));
    ASSERT_TRUE(by_id) << by_id.error().message();
    EXPECT_EQ(by_id->reference, image->reference);

    // The unpacked tree.
    auto rootfs = store.rootfs_directory(*image);
    ASSERT_TRUE(rootfs) << rootfs.error().message();
    EXPECT_EQ(*rootfs, images / "rootfs" / std::string(digest_hex(image->manifest_digest)));
    EXPECT_EQ(read(*rootfs / "etc/os-release"), "NAME=\"BoxLite Test Linux\"\nID=boxlite-test\nVERSION_ID=1\n");
    EXPECT_EQ(read(*rootfs / "bin/busybox"), read("/bin/busybox"));
    EXPECT_EQ(fs::read_symlink(*rootfs / "bin/sh"), "busybox");
    struct stat st {};
    ASSERT_EQ(::stat((*rootfs / "data/keep/file").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    if (::geteuid() == 0) {
        EXPECT_EQ(st.st_uid, 1000u);
    }
    ASSERT_EQ(::stat((*rootfs / "tmp").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 01777u);
    EXPECT_EQ(sh(fmt::format("{}/bin/busybox true", rootfs->string())), 0);
}

TEST_F(ImageRegistry, AppliesWhiteoutsOpaqueDirectoriesAndLinksAcrossLayers) {
    auto store = open_store(home_.path());
    auto image = store.pull(ref("test/multi:1"));
    ASSERT_TRUE(image) << image.error().message();
    ASSERT_EQ(image->layers.size(), 3u);
    auto rootfs = store.rootfs_directory(*image);
    ASSERT_TRUE(rootfs) << rootfs.error().message();
    const auto& r = *rootfs;
    EXPECT_EQ(read(r / "data/keep/file"), "keep\n");
    EXPECT_FALSE(fs::exists(r / "data/gone"));
    EXPECT_FALSE(fs::exists(r / "opq/old.txt"));
    EXPECT_FALSE(fs::exists(r / "opq/sub"));
    EXPECT_EQ(read(r / "opq/new.txt"), "new\n");
    EXPECT_EQ(read(r / "etc/motd"), "welcome\n");
    struct stat a {}, b {};
    ASSERT_EQ(::stat((r / "data/added.txt").c_str(), &a), 0);
    ASSERT_EQ(::stat((r / "data/hardlink.txt").c_str(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_EQ(fs::read_symlink(r / "data/os-release-link"), "../etc/os-release");
    for (const auto& entry : fs::recursive_directory_iterator(r)) {
        EXPECT_FALSE(entry.path().filename().string().starts_with(".wh.")) << entry.path();
    }
}

TEST_F(ImageRegistry, SelectsThePlatformOfAMultiArchIndex) {
    auto store = open_store(home_.path());
    auto amd = store.pull(ref("test/multiarch:1"), {PullPolicy::IfMissing, {}, Platform{"linux", "amd64", ""}});
    ASSERT_TRUE(amd) << amd.error().message();
    EXPECT_FALSE(amd->index_digest.empty());
    auto amd_root = store.rootfs_directory(*amd);
    ASSERT_TRUE(amd_root) << amd_root.error().message();
    EXPECT_EQ(read(*amd_root / "etc/arch"), "amd64\n");

    TempDir other{"boxlite-home"};
    auto arm_store = open_store(other.path());
    auto arm = arm_store.pull(ref("test/multiarch:1"), {PullPolicy::IfMissing, {}, Platform{"linux", "arm64", "v8"}});
    ASSERT_TRUE(arm) << arm.error().message();
    EXPECT_NE(arm->manifest_digest, amd->manifest_digest);
    EXPECT_EQ(arm->index_digest, amd->index_digest);
    EXPECT_EQ(arm->config.platform.architecture, "arm64");
    auto arm_root = arm_store.rootfs_directory(*arm);
    ASSERT_TRUE(arm_root) << arm_root.error().message();
    EXPECT_EQ(read(*arm_root / "etc/arch"), "arm64\n");

    TempDir third{"boxlite-home"};
    auto riscv = open_store(third.path()).pull(ref("test/multiarch:1"), {PullPolicy::Always, {}, Platform{"linux", "riscv64", ""}});
    ASSERT_FALSE(riscv);
    EXPECT_EQ(riscv.error().kind(), ErrorKind::Image);
    EXPECT_NE(riscv.error().message().find("no image for platform linux/riscv64"), std::string::npos)
        << riscv.error().message();
    EXPECT_NE(riscv.error().message().find("linux/amd64, linux/arm64/v8"), std::string::npos);
}

TEST_F(ImageRegistry, FollowsAMovedTagAndCollectsTheOldImage) {
    Registry registry;
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "single", "test/moved:v"));
    auto store = open_store(home_.path());
    const auto name = registry.host() + "/test/moved:v";
    auto first = store.pull(name);
    ASSERT_TRUE(first) << first.error().message();
    ASSERT_TRUE(store.rootfs_directory(*first));

    ASSERT_TRUE(registry.push(oci(), "multi", "test/moved:v"));
    auto cached = store.pull(name);  // IfMissing: the store's answer, no registry round trip
    ASSERT_TRUE(cached);
    EXPECT_EQ(cached->manifest_digest, first->manifest_digest);

    std::vector<LayerProgress> events;
    auto moved = store.pull(name, {PullPolicy::Always, [&](const LayerProgress& p) { events.push_back(p); }, {}});
    ASSERT_TRUE(moved) << moved.error().message();
    EXPECT_NE(moved->manifest_digest, first->manifest_digest);
    ASSERT_EQ(moved->layers.size(), 3u);
    // The base layer is shared with the first image: not downloaded again.
    EXPECT_EQ(moved->layers[0].digest, first->layers[0].digest);
    bool base_reused = false;
    for (const auto& e : events) {
        if (e.index == 0) {
            EXPECT_EQ(e.phase, LayerPhase::AlreadyExists);
            base_reused = true;
        }
    }
    EXPECT_TRUE(base_reused);
    auto listed = store.list();
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ(listed->front().manifest_digest, moved->manifest_digest);

    auto gc = store.gc();
    ASSERT_TRUE(gc) << gc.error().message();
    EXPECT_EQ(gc->blobs_removed, 2u);  // the old manifest and config; its layer is shared
    EXPECT_EQ(gc->rootfs_removed, 1u);
    EXPECT_FALSE(fs::exists(home_.path() / "images/blobs/sha256" / std::string(digest_hex(first->manifest_digest))));
    EXPECT_TRUE(fs::exists(home_.path() / "images/blobs/sha256" / std::string(digest_hex(first->layers[0].digest))));
    auto still = store.inspect(name);
    ASSERT_TRUE(still) << still.error().message();
    EXPECT_TRUE(store.rootfs_directory(*still));
}

TEST_F(ImageRegistry, RepullsFromTheCacheWithoutNetwork) {
    Registry registry;
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "single", "test/offline:1"));
    const auto name = registry.host() + "/test/offline:1";
    {
        auto store = open_store(home_.path());
        ASSERT_TRUE(store.pull(name));
    }
    registry.stop();
    RegistryOptions no_retry;
    no_retry.max_attempts = 1;
    auto store = open_store(home_.path(), no_retry);
    auto cached = store.pull(name);
    ASSERT_TRUE(cached) << cached.error().message();
    auto prepared = store.prepare(name, RootfsKind::Directory);
    ASSERT_TRUE(prepared) << prepared.error().message();
    EXPECT_FALSE(prepared->pulled);
    EXPECT_EQ(read(prepared->path / "etc/os-release").substr(0, 4), "NAME");
    // Asking the registry now fails, and says which registry could not be reached.
    auto online = store.pull(name, {PullPolicy::Always, {}, {}});
    ASSERT_FALSE(online);
    EXPECT_EQ(online.error().kind(), ErrorKind::Image);
    EXPECT_NE(online.error().message().find("cannot reach registry " + registry.host()), std::string::npos)
        << online.error().message();
    auto never = store.pull(registry.host() + "/test/other:1", {PullPolicy::Never, {}, {}});
    ASSERT_FALSE(never);
    EXPECT_NE(never.error().message().find("not in the local store"), std::string::npos);
}

TEST_F(ImageRegistry, RefusesALayerWhoseDigestDoesNotMatch) {
    Registry registry;
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "unique", "test/tampered:1"));
    // Find the unique layer (the last one) through a first, clean pull.
    TempDir scratch{"boxlite-home"};
    auto clean = open_store(scratch.path()).pull(registry.host() + "/test/tampered:1");
    ASSERT_TRUE(clean) << clean.error().message();
    const auto layer = clean->layers.back().digest;
    const auto data = registry.blob_data(layer);
    ASSERT_TRUE(fs::exists(data)) << data;
    {
        std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(fs::file_size(data) / 2));
        f.put('\x42').put('\x43').put('\x44');
    }
    auto store = open_store(home_.path());
    auto pulled = store.pull(registry.host() + "/test/tampered:1");
    ASSERT_FALSE(pulled);
    EXPECT_EQ(pulled.error().kind(), ErrorKind::Image);
    const auto& message = pulled.error().message();
    EXPECT_NE(message.find("digest mismatch"), std::string::npos) << message;
    EXPECT_NE(message.find("expected " + layer), std::string::npos) << message;
    EXPECT_NE(message.find("sent content with digest sha256:"), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(home_.path() / "images/blobs/sha256" / std::string(digest_hex(layer))));
    EXPECT_FALSE(store.inspect(registry.host() + "/test/tampered:1"));
}

TEST_F(ImageRegistry, ResumesAPartialDownloadWithRange) {
    auto seed = open_store(home_.path()).pull(ref("test/single:1"));
    ASSERT_TRUE(seed) << seed.error().message();
    const auto layer = seed->layers[0];
    const auto blob = read(home_.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest)));

    // A bogus prefix: only a resumed (Range) download keeps it, and then the digest cannot match.
    TempDir bogus_home{"boxlite-home"};
    auto bogus = open_store(bogus_home.path());
    const auto partial = bogus_home.path() / "images/tmp" / fmt::format("{}.partial", digest_hex(layer.digest));
    std::ofstream(partial, std::ios::binary) << std::string(4096, 'X');
    auto refused = bogus.pull(ref("test/single:1"));
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("digest mismatch"), std::string::npos) << refused.error().message();
    EXPECT_EQ(fs::file_size(partial), 0u);  // thrown away: the next pull starts from scratch
    ASSERT_TRUE(bogus.pull(ref("test/single:1")));

    // A true prefix: the download continues after it and the blob verifies.
    TempDir resumed_home{"boxlite-home"};
    auto resumed = open_store(resumed_home.path());
    const auto resumed_partial = resumed_home.path() / "images/tmp" / fmt::format("{}.partial", digest_hex(layer.digest));
    std::ofstream(resumed_partial, std::ios::binary) << blob.substr(0, blob.size() / 2);
    std::vector<LayerProgress> events;
    auto ok = resumed.pull(ref("test/single:1"), {PullPolicy::IfMissing, [&](const LayerProgress& p) { events.push_back(p); }, {}});
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_EQ(read(resumed_home.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest))), blob);
    // The first download event already counts the bytes that were on disk.
    auto first_download = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.phase == LayerPhase::Downloading; });
    ASSERT_NE(first_download, events.end());
    EXPECT_EQ(first_download->current, blob.size() / 2);
}

TEST_F(ImageRegistry, ExplainsAuthenticationFailures) {
    Registry secured(std::pair<std::string, std::string>{"boxlite", "s3cret"});
    ASSERT_TRUE(secured.running());
    ASSERT_TRUE(secured.push(oci(), "single", "test/private:1"));
    const auto name = secured.host() + "/test/private:1";
    TempDir no_config;
    RegistryOptions anonymous;
    anonymous.docker_config = no_config.path() / "config.json";
    auto denied = open_store(home_.path(), anonymous).pull(name);
    ASSERT_FALSE(denied);
    EXPECT_EQ(denied.error().kind(), ErrorKind::Image);
    EXPECT_NE(denied.error().message().find("requires authentication"), std::string::npos) << denied.error().message();

    RegistryOptions wrong = anonymous;
    wrong.credentials[secured.host()] = {"boxlite", "wrong"};
    auto rejected = open_store(home_.path(), wrong).pull(name);
    ASSERT_FALSE(rejected);
    EXPECT_NE(rejected.error().message().find(
                  fmt::format("authentication to registry {} failed for user 'boxlite'", secured.host())),
              std::string::npos)
        << rejected.error().message();

    // The right credentials, from a docker config's auths (base64 "user:password").
    std::ofstream(no_config.path() / "config.json")
        << fmt::format(R"({{"auths":{{"http://{}":{{"auth":"Ym94bGl0ZTpzM2NyZXQ="}}}}}})", secured.host());
    auto granted = open_store(home_.path(), anonymous).pull(name);
    ASSERT_TRUE(granted) << granted.error().message();
    EXPECT_EQ(granted->layers.size(), 1u);
}

TEST_F(ImageRegistry, GetsBearerTokensAnonymouslyAndWithCredentials) {
    Registry registry(std::pair<std::string, std::string>{"boxlite", "s3cret"}, Registry::Auth::Token);
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "single", "public/open:1"));
    ASSERT_TRUE(registry.push(oci(), "multi", "test/private:1"));
    TempDir no_config;
    RegistryOptions anonymous;
    anonymous.docker_config = no_config.path() / "config.json";

    // The token server grants anonymous pulls under public/.
    auto open = open_store(home_.path(), anonymous).pull(registry.host() + "/public/open:1");
    ASSERT_TRUE(open) << open.error().message();
    EXPECT_EQ(open->layers.size(), 1u);

    auto denied = open_store(home_.path(), anonymous).pull(registry.host() + "/test/private:1");
    ASSERT_FALSE(denied);
    EXPECT_EQ(denied.error().kind(), ErrorKind::Image);
    EXPECT_NE(denied.error().message().find("pull access denied for " + registry.host() + "/test/private"),
              std::string::npos)
        << denied.error().message();

    RegistryOptions wrong = anonymous;
    wrong.credentials[registry.host()] = {"boxlite", "wrong"};
    auto rejected = open_store(home_.path(), wrong).pull(registry.host() + "/test/private:1");
    ASSERT_FALSE(rejected);
    EXPECT_NE(rejected.error().message().find(fmt::format(
                  "authentication to registry {} failed for user 'boxlite': the token server answered HTTP 401",
                  registry.host())),
              std::string::npos)
        << rejected.error().message();

    RegistryOptions right = anonymous;
    right.credentials[registry.host()] = {"boxlite", "s3cret"};
    auto granted = open_store(home_.path(), right).pull(registry.host() + "/test/private:1");
    ASSERT_TRUE(granted) << granted.error().message();
    EXPECT_EQ(granted->layers.size(), 3u);
}

// The whole path on a real engine: the namespace engine runs a box whose root is the pulled image.
TEST_F(ImageRegistry, BoxRunsThePulledImageOnTheNamespaceEngine) {
    if (::geteuid() != 0) GTEST_SKIP() << "the namespace engine needs root (namespaces, overlayfs)";
    const auto shim = test::built_binary("boxlite-shim");
    const auto agent = test::built_binary("boxlite-agent");
    if (!fs::exists(shim) || !fs::exists(agent)) GTEST_SKIP() << "boxlite-shim / boxlite-agent are not built";
    ::setenv("BOXLITE_SHIM", shim.c_str(), 1);
    ::setenv("BOXLITE_AGENT", agent.c_str(), 1);
    BoxliteOptions options;
    options.home_dir = home_.path();
    options.image_registries = {registry_->host()};
    options.engine = EngineKind::Namespace;
    auto runtime = open_runtime(options);
    ASSERT_TRUE(runtime) << runtime.error().to_string();
    if (auto available = runtime->engine().available(); !available) {
        GTEST_SKIP() << "namespace engine unavailable here: " << available.error().to_string();
    }
    BoxOptions box_options;
    box_options.rootfs = RootfsSpec::image("test/multi:1");
    auto box = runtime->create(box_options);
    ASSERT_TRUE(box) << box.error().to_string();

    auto os_release = box->run(BoxCommand("cat").arg("/etc/os-release"));
    ASSERT_TRUE(os_release) << os_release.error().to_string();
    EXPECT_EQ(os_release->exit_code, 0) << os_release->stderr_text;
    EXPECT_EQ(os_release->stdout_text, "NAME=\"BoxLite Test Linux\"\nID=boxlite-test\nVERSION_ID=1\n");
    // The image config's Env and WorkingDir are the box's defaults; the layers' whiteouts hold.
    auto defaults = box->run(BoxCommand("sh").args({"-c", "echo $FOO; pwd; cat /etc/motd; ls /opq; ls /data"}));
    ASSERT_TRUE(defaults) << defaults.error().to_string();
    EXPECT_EQ(defaults->stdout_text, "bar\n/data\nwelcome\nnew.txt\nadded.txt\nhardlink.txt\nkeep\nos-release-link\n")
        << defaults->stderr_text;
    // Writes land in the box, never in the shared image tree.
    auto write = box->run(BoxCommand("sh").args({"-c", "echo mine > /etc/written && cat /etc/written"}));
    ASSERT_TRUE(write) << write.error().to_string();
    EXPECT_EQ(write->stdout_text, "mine\n");
    auto image = image::ImageStore::open({home_.path(), {}, {}})->inspect(registry_->host() + "/test/multi:1");
    ASSERT_TRUE(image) << image.error().message();
    EXPECT_FALSE(fs::exists(home_.path() / "images/rootfs" / std::string(digest_hex(image->manifest_digest)) / "etc/written"));
    auto metrics = box->metrics();
    ASSERT_TRUE(metrics);
    EXPECT_TRUE(metrics->stage_image_prepare_ms.has_value());
    ASSERT_TRUE(runtime->remove(box->id().str(), true));
}

TEST_F(ImageRegistry, ExplainsUnknownImages) {
    auto store = open_store(home_.path());
    auto missing_repo = store.pull(ref("test/does-not-exist:1"));
    ASSERT_FALSE(missing_repo);
    EXPECT_EQ(missing_repo.error().kind(), ErrorKind::Image);
    EXPECT_NE(missing_repo.error().message().find("not found"), std::string::npos) << missing_repo.error().message();
    EXPECT_NE(missing_repo.error().message().find("UNKNOWN"), std::string::npos) << missing_repo.error().message();
    auto missing_tag = store.pull(ref("test/single:no-such-tag"));
    ASSERT_FALSE(missing_tag);
    EXPECT_NE(missing_tag.error().message().find("image '" + registry_->host() + "/test/single:no-such-tag' not found"),
              std::string::npos)
        << missing_tag.error().message();
    auto not_local = store.inspect("nothing:here");
    ASSERT_FALSE(not_local);
    EXPECT_NE(not_local.error().message().find("not in the local store"), std::string::npos);
}

TEST_F(ImageRegistry, SearchesConfiguredRegistriesForUnqualifiedNames) {
    RegistryOptions options;
    auto store_result = ImageStore::open({home_.path(), options, {}});
    ASSERT_TRUE(store_result);
    RegistryOptions search;
    search.search_registries = {registry_->host()};
    auto store = ImageStore::open({home_.path(), search, {}});
    ASSERT_TRUE(store);
    auto image = store->pull("test/single:1");
    ASSERT_TRUE(image) << image.error().message();
    EXPECT_EQ(image->reference, registry_->host() + "/test/single:1");
    auto local = store->inspect("test/single:1");
    ASSERT_TRUE(local);
    EXPECT_EQ(local->manifest_digest, image->manifest_digest);
}

TEST_F(ImageRegistry, BuildsAnExt4DiskThatPassesFsck) {
    auto store = open_store(home_.path());
    auto prepared = store.prepare(ref("test/multi:1"), RootfsKind::Ext4Disk);
    ASSERT_TRUE(prepared) << prepared.error().message();
    EXPECT_TRUE(prepared->pulled);
    EXPECT_GT(prepared->build_time.count(), 0);
    EXPECT_EQ(prepared->path.extension(), ".ext4");
    EXPECT_EQ(prepared->path.parent_path(), home_.path() / "images/disk-images");
    EXPECT_EQ(sh(fmt::format("e2fsck -fn {} >/dev/null 2>&1", prepared->path.string())), 0);
    TempDir out;
    ASSERT_EQ(sh(fmt::format("debugfs -R 'dump /etc/os-release {}/os-release' {} >/dev/null 2>&1", out.path().string(),
                             prepared->path.string())),
              0);
    EXPECT_EQ(read(out.path() / "os-release").substr(0, 25), "NAME=\"BoxLite Test Linux\"");
    ASSERT_EQ(sh(fmt::format("debugfs -R 'stat /opq/old.txt' {} 2>&1 | grep -q 'File not found'", prepared->path.string())), 0);

    const auto built_at = fs::last_write_time(prepared->path);
    auto again = store.prepare(ref("test/multi:1"), RootfsKind::Ext4Disk);
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->pulled);
    EXPECT_EQ(again->build_time.count(), 0);
    EXPECT_EQ(fs::last_write_time(again->path), built_at);
}

TEST_F(ImageRegistry, TwoProcessesPullingTheSameImageDoTheWorkOnce) {
    const auto counts = home_.path() / "counts";
    fs::create_directories(counts);
    std::vector<pid_t> children;
    for (int i = 0; i < 2; ++i) {
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            int completed = 0;
            RegistryOptions options;
            options.search_registries = {};
            auto store = ImageStore::open({home_.path(), options, {}});
            if (!store) {
                std::fprintf(stderr, "child open failed: %s\n", store.error().message().c_str());
                ::_exit(2);
            }
            auto image = store->pull(ref("test/multi:1"), {PullPolicy::IfMissing, [&](const LayerProgress& p) {
                                                                if (p.phase == LayerPhase::Complete) ++completed;
                                                            }, {}});
            if (!image) {
                std::fprintf(stderr, "child pull failed: %s\n", image.error().message().c_str());
                ::_exit(3);
            }
            if (!store->rootfs_directory(*image)) ::_exit(4);
            std::ofstream(counts / std::to_string(::getpid())) << completed;
            ::_exit(0);
        }
        children.push_back(pid);
    }
    for (pid_t pid : children) {
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child exit status " << status;
    }
    int total = 0;
    for (const auto& entry : fs::directory_iterator(counts)) total += std::stoi(read(entry.path()));
    EXPECT_EQ(total, 3);  // three layers, each downloaded by exactly one of the two processes
    auto store = open_store(home_.path());
    auto listed = store.list();
    ASSERT_TRUE(listed);
    EXPECT_EQ(listed->size(), 1u);
    std::size_t trees = 0;
    for (const auto& entry : fs::directory_iterator(home_.path() / "images/rootfs")) {
        EXPECT_FALSE(entry.path().filename().string().starts_with(".tmp-"));
        ++trees;
    }
    EXPECT_EQ(trees, 1u);
}

TEST_F(ImageRegistry, LoadsDockerSaveArchivesAndOciLayouts) {
    auto store = open_store(home_.path());
    TempDir exports;
    const auto docker_tar = exports.path() / "saved.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:multi docker-archive:{}:team/loaded:2 >/dev/null", oci().string(),
                             docker_tar.string())),
              0);
    auto loaded = store.load(docker_tar);
    ASSERT_TRUE(loaded) << loaded.error().message();
    ASSERT_EQ(loaded->size(), 1u);
    EXPECT_EQ(loaded->front().reference, "docker.io/team/loaded:2");
    EXPECT_EQ(loaded->front().layers.size(), 3u);
    auto tree = store.rootfs_directory(loaded->front());
    ASSERT_TRUE(tree) << tree.error().message();
    EXPECT_EQ(read(*tree / "opq/new.txt"), "new\n");
    EXPECT_FALSE(fs::exists(*tree / "opq/old.txt"));

    // An OCI archive with an explicit name, then the whole layout directory (names from its tags).
    const auto oci_tar = exports.path() / "single.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:single oci-archive:{} >/dev/null", oci().string(), oci_tar.string())), 0);
    auto named = store.load(oci_tar, "mine:1");
    ASSERT_TRUE(named) << named.error().message();
    ASSERT_EQ(named->size(), 1u);
    EXPECT_EQ(named->front().reference, "docker.io/library/mine:1");
    auto layout = store.load(oci());
    ASSERT_TRUE(layout) << layout.error().message();
    std::vector<std::string> names;
    for (const auto& image : *layout) names.push_back(image.reference);
    EXPECT_NE(std::find(names.begin(), names.end(), "localhost/oci:single"), names.end());
    EXPECT_NE(std::find(names.begin(), names.end(), "localhost/oci:multiarch"), names.end());
    auto multiarch = store.inspect("localhost/oci:multiarch");
    ASSERT_TRUE(multiarch);
    EXPECT_FALSE(multiarch->index_digest.empty());
    EXPECT_EQ(multiarch->config.platform.architecture, "amd64");
    // Offline: none of these ever touched a registry, yet they run.
    auto prepared = store.prepare("mine:1", RootfsKind::Directory, {PullPolicy::Never, {}, {}});
    ASSERT_TRUE(prepared) << prepared.error().message();

    auto not_an_image = store.load(exports.path());
    ASSERT_FALSE(not_an_image);
    EXPECT_NE(not_an_image.error().message().find("neither an OCI image layout"), std::string::npos);
}

TEST_F(ImageRegistry, RemoveThenGcFreesEverything) {
    auto store = open_store(home_.path());
    auto image = store.pull(ref("test/single:1"));
    ASSERT_TRUE(image);
    ASSERT_TRUE(store.rootfs_directory(*image));
    ASSERT_TRUE(store.disk_image(*image));
    ASSERT_TRUE(store.remove(ref("test/single:1")));
    EXPECT_FALSE(store.inspect(ref("test/single:1")));
    auto removed_twice = store.remove(ref("test/single:1"));
    EXPECT_FALSE(removed_twice);
    auto gc = store.gc();
    ASSERT_TRUE(gc) << gc.error().message();
    EXPECT_EQ(gc->blobs_removed, 3u);  // manifest, config, layer
    EXPECT_EQ(gc->rootfs_removed, 1u);
    EXPECT_EQ(gc->disk_images_removed, 1u);
    EXPECT_GT(gc->bytes_freed, 0u);
    EXPECT_TRUE(fs::is_empty(home_.path() / "images/blobs/sha256"));
    EXPECT_TRUE(fs::is_empty(home_.path() / "images/rootfs"));
    EXPECT_TRUE(fs::is_empty(home_.path() / "images/disk-images"));
    EXPECT_EQ(read(home_.path() / "images/index.json").find("sha256:"), std::string::npos);
}

// The runtime seam: RootfsSpec::Image goes through the image store (default provider), searching
// BoxliteOptions::image_registries, and the engine gets the tree or disk plus the image's defaults.
TEST_F(ImageRegistry, RuntimeCreatePullsTheImageAndStartLaunchesTheEngineFromIt) {
    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    for (const auto kind : {RootfsKind::Directory, RootfsKind::Ext4Disk}) {
        TempDir home{"boxlite-home"};
        MockEngine engine(MockEngine::Options{kind, "pipe"});
        RuntimeSettings settings;
        settings.host_cpus = 2;
        Runtime runtime(BoxliteOptions{home.path(), {registry_->host()}, EngineKind::Mock}, engine, PipeTransport{},
                        MemoryStorage{}, settings);
        BoxOptions options;
        options.rootfs = RootfsSpec::image("test/single:1");
        options.auto_remove = false;
        auto box = runtime.create(options);
        ASSERT_TRUE(box) << box.error().to_string();
        {
            // create pulled the image (stage timed) and pinned it to the box; nothing started.
            auto store = open_store(home.path());
            auto local = store.inspect(registry_->host() + "/test/single:1");
            ASSERT_TRUE(local) << local.error().message();
            auto leases = store.leases();
            ASSERT_TRUE(leases);
            ASSERT_EQ(leases->size(), 1u);
            EXPECT_EQ(leases->front().holder, box->id().str());
            EXPECT_EQ(leases->front().manifest_digest, local->manifest_digest);
            EXPECT_TRUE(box->metrics()->stage_image_prepare_ms.has_value());
            EXPECT_TRUE(engine.launches().empty());
        }
        auto started = box->start();
        ASSERT_TRUE(started) << started.error().to_string();
        const auto launches = engine.launches();
        ASSERT_EQ(launches.size(), 1u);
        const auto& rootfs = launches[0].rootfs;
        if (kind == RootfsKind::Directory) {
            EXPECT_EQ(rootfs.parent_path(), home.path() / "images/rootfs");
            EXPECT_EQ(read(rootfs / "etc/os-release").substr(0, 4), "NAME");
        } else {
            EXPECT_EQ(rootfs.parent_path(), home.path() / "images/disk-images");
            EXPECT_EQ(rootfs.extension(), ".ext4");
        }
        EXPECT_EQ(launches[0].init_command, (std::vector<std::string>{"/bin/sh", "-c", "cat /etc/os-release"}));
        auto metrics = box->metrics();
        ASSERT_TRUE(metrics) << metrics.error().to_string();
        EXPECT_TRUE(metrics->stage_image_prepare_ms.has_value());

        // A second box of the same image reuses the store: same tree or disk.
        BoxOptions again = options;
        again.cmd = std::vector<std::string>{"true"};
        auto second = runtime.create(again);
        ASSERT_TRUE(second);
        ASSERT_TRUE(second->start());
        ASSERT_EQ(engine.launches().size(), 2u);
        EXPECT_EQ(engine.launches()[1].rootfs, rootfs);
        // The image has Cmd and no Entrypoint: a new cmd replaces the whole command line.
        EXPECT_EQ(engine.launches()[1].init_command, (std::vector<std::string>{"true"}));
    }
}

TEST_F(ImageRegistry, RuntimeCreateReportsAnImageThatCannotBePulledAndRecordsNothing) {
    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    MockEngine engine(MockEngine::Options{RootfsKind::Directory, "pipe"});
    RuntimeSettings settings;
    settings.host_cpus = 2;
    Runtime runtime(BoxliteOptions{home_.path(), {}, EngineKind::Mock}, engine, PipeTransport{}, MemoryStorage{},
                    settings);
    BoxOptions options;
    options.rootfs = RootfsSpec::image(ref("test/missing:1"));
    options.auto_remove = false;
    auto box = runtime.create(options, "missing");
    ASSERT_FALSE(box);
    EXPECT_EQ(box.error().kind(), ErrorKind::Image);
    EXPECT_NE(box.error().message().find("test/missing:1"), std::string::npos) << box.error().message();
    EXPECT_TRUE(runtime.list_info()->empty());
    EXPECT_FALSE(runtime.get("missing"));
    EXPECT_TRUE(engine.launches().empty());
    EXPECT_TRUE(open_store(home_.path()).leases()->empty());
}

// A box is pinned to the image it was created from: a moved tag, a removed reference and gc all
// leave it alone; removing the box lets gc free the image.
TEST_F(ImageRegistry, ABoxKeepsItsImageThroughAMovedTagRemoveAndGc) {
    Registry registry;
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "single", "test/pinned:v"));
    const auto name = registry.host() + "/test/pinned:v";

    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    MockEngine engine(MockEngine::Options{RootfsKind::Directory, "pipe"});
    RuntimeSettings settings;
    settings.host_cpus = 2;
    Runtime runtime(BoxliteOptions{home_.path(), {}, EngineKind::Mock}, engine, PipeTransport{}, MemoryStorage{},
                    settings);
    BoxOptions options;
    options.rootfs = RootfsSpec::image(name);
    options.auto_remove = false;
    auto box = runtime.create(options);
    ASSERT_TRUE(box) << box.error().to_string();
    auto store = open_store(home_.path());
    auto first = store.inspect(name);
    ASSERT_TRUE(first);

    // The tag moves: a new pull follows it, the box does not.
    ASSERT_TRUE(registry.push(oci(), "multi", "test/pinned:v"));
    auto moved = store.pull(name, {PullPolicy::Always, {}, {}});
    ASSERT_TRUE(moved) << moved.error().message();
    ASSERT_NE(moved->manifest_digest, first->manifest_digest);
    ASSERT_TRUE(box->start());
    ASSERT_EQ(engine.launches().size(), 1u);
    EXPECT_EQ(engine.launches()[0].rootfs.filename().string(), std::string(digest_hex(first->manifest_digest)));
    ASSERT_TRUE(box->stop());

    // The old image has no reference left but the box's lease: gc keeps it.
    auto gc = store.gc();
    ASSERT_TRUE(gc) << gc.error().message();
    EXPECT_EQ(gc->blobs_removed, 0u);
    EXPECT_EQ(gc->rootfs_removed, 0u);

    // The last reference to a leased image: refused, naming the box; forced, the box still runs.
    auto box2 = runtime.create(options);  // pinned to the moved image
    ASSERT_TRUE(box2);
    auto refused = store.remove(name);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::InvalidState);
    EXPECT_NE(refused.error().message().find(box2->id().str()), std::string::npos) << refused.error().message();
    ASSERT_TRUE(store.inspect(name));
    ASSERT_TRUE(store.remove(name, true));
    ASSERT_TRUE(store.gc());
    ASSERT_TRUE(box->start());
    ASSERT_TRUE(box2->start());
    ASSERT_EQ(engine.launches().size(), 3u);
    EXPECT_EQ(engine.launches()[1].rootfs, engine.launches()[0].rootfs);
    EXPECT_EQ(engine.launches()[2].rootfs.filename().string(), std::string(digest_hex(moved->manifest_digest)));
    EXPECT_EQ(read(engine.launches()[2].rootfs / "etc/os-release").substr(0, 4), "NAME");

    // Removing the boxes releases their leases: now gc frees both images entirely.
    ASSERT_TRUE(runtime.remove(box->id().str(), true));
    ASSERT_TRUE(runtime.remove(box2->id().str(), true));
    EXPECT_TRUE(store.leases()->empty());
    gc = store.gc();
    ASSERT_TRUE(gc) << gc.error().message();
    EXPECT_EQ(gc->rootfs_removed, 2u);
    EXPECT_TRUE(fs::is_empty(home_.path() / "images/blobs/sha256"));
    EXPECT_TRUE(fs::is_empty(home_.path() / "images/rootfs"));
}

TEST_F(ImageRegistry, GcDropsStaleLeasesOfBoxesThatNoLongerExist) {
    auto store = open_store(home_.path());
    auto held = store.prepare_for("01VANISHEDBOX", ref("test/single:1"), RootfsKind::Directory);
    ASSERT_TRUE(held) << held.error().message();
    ASSERT_TRUE(store.remove(ref("test/single:1"), true));
    // Within the grace period a lease may belong to a box still being created: kept.
    GcOptions options;
    options.live_holders = std::vector<std::string>{};
    auto gc = store.gc(options);
    ASSERT_TRUE(gc);
    EXPECT_EQ(gc->leases_dropped, 0u);
    EXPECT_EQ(gc->rootfs_removed, 0u);
    // A lease older than the grace period whose box is unknown is stale; a live box's lease stays.
    ASSERT_TRUE(store.prepare_for("01LIVEBOX", ref("test/multi:1"), RootfsKind::Directory));
    options.live_holders = std::vector<std::string>{"01LIVEBOX"};
    options.lease_grace = std::chrono::seconds(-10);
    gc = store.gc(options);
    ASSERT_TRUE(gc) << gc.error().message();
    EXPECT_EQ(gc->leases_dropped, 1u);
    EXPECT_EQ(gc->rootfs_removed, 1u);
    auto leases = store.leases();
    ASSERT_TRUE(leases);
    ASSERT_EQ(leases->size(), 1u);
    EXPECT_EQ(leases->front().holder, "01LIVEBOX");
    // Bad holders are refused before anything is written.
    auto bad = store.prepare_for("", ref("test/single:1"), RootfsKind::Directory);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().kind(), ErrorKind::InvalidArgument);
}

}  // namespace
}  // namespace boxlite::image
