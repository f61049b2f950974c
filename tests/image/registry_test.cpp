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

#include "image/oci.hpp"
#include "image/registry_client.hpp"
#include "support/support.hpp"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <grp.h>
#include <link.h>
#include <netdb.h>
#include <nlohmann/json.hpp>
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
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace boxlite::image {
namespace {

namespace fs = std::filesystem;

const std::string kHarness = BOXLITE_IMAGE_HARNESS;

int sh(const std::string& command) {
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string missing_tools() {
    for (const char* tool : {"docker-registry", "skopeo", "umoci", "htpasswd", "mke2fs", "e2fsck", "debugfs", "curl",
                             "openssl", "python3"}) {
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
        : credentials_(std::move(credentials)), auth_(credentials_ ? auth : Auth::None), port_(test::free_port()) {
        start();
    }
    ~Registry() { stop(); }
    void start() {
        std::string cmd = fmt::format("bash {} {} {} {}", kHarness, auth_ == Auth::Token ? "start-token" : "start",
                                      dir_.path().string(), port_);
        if (auth_ == Auth::Token) cmd += fmt::format(" {}", test::free_port());
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
    /// `flags`: "-", "all" (an index with every image), "v2s2" (as Docker v2 schema 2), "all,v2s2".
    bool push(const fs::path& oci, const std::string& tag, const std::string& dest,
              const std::string& flags = "-") const {
        std::string cmd = fmt::format("bash {} push {} {} {} {} {}", kHarness, oci.string(), tag, port_, dest, flags);
        if (credentials_) cmd += fmt::format(" {}:{}", credentials_->first, credentials_->second);
        return sh(cmd) == 0;
    }
    fs::path blob_data(std::string_view digest) const {
        const auto hex = std::string(digest_hex(digest));
        return dir_.path() / "data/docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
    }

private:
    test::TempDir dir_{"boxlite-registry"};
    std::optional<std::pair<std::string, std::string>> credentials_;
    Auth auth_;
    int port_;
    bool running_ = false;
};

std::string capture(const std::string& command) {
    std::string out;
    if (std::FILE* pipe = ::popen(command.c_str(), "r")) {
        char buffer[4096];
        std::size_t n = 0;
        while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
        ::pclose(pipe);
    }
    return out;
}

/// The file the dynamic loader would load for `soname` (empty when it cannot load it).
std::string library_file(const char* soname) {
    void* handle = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return {};
    link_map* map = nullptr;
    std::string path;
    if (::dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr) path = map->l_name;
    ::dlclose(handle);
    return path;
}

// fault_proxy.py in front of a registry (registry_harness.sh start-proxy), misbehaving on blob
// requests as `fault` says; stopped on destruction. requests() is what it saw, in order.
class FaultProxy {
public:
    FaultProxy(int upstream_port, const std::string& fault, int count = 1) : port_(test::free_port()) {
        running_ = sh(fmt::format("bash {} start-proxy {} {} {} {} {}", kHarness, dir_.path().string(), port_,
                                  upstream_port, fault, count)) == 0;
    }
    ~FaultProxy() {
        if (running_) sh(fmt::format("bash {} stop {}", kHarness, dir_.path().string()));
    }
    bool running() const { return running_; }
    std::string host() const { return fmt::format("127.0.0.1:{}", port_); }

    struct Request {
        std::string path, range, token;
        int status = 0;
    };
    std::vector<Request> requests(std::string_view path_suffix = {}) const {
        std::vector<Request> out;
        std::istringstream lines(read_text(dir_.path() / "proxy.log"));
        for (std::string line; std::getline(lines, line);) {
            const auto entry = nlohmann::json::parse(line, nullptr, false);
            if (entry.is_discarded()) continue;
            Request r{entry.value("path", ""), entry.value("range", ""), entry.value("token", ""),
                      entry.value("status", 0)};
            if (std::string_view(r.path).ends_with(path_suffix)) out.push_back(std::move(r));
        }
        return out;
    }

private:
    test::TempDir dir_{"boxlite-proxy"};
    int port_;
    bool running_ = false;
};

// `debugfs -R 'stat PATH'` of an ext4 image: its owner, group and mode (with the type bits).
struct InodeOwnership {
    long uid = -1, gid = -1, mode = -1;
};
InodeOwnership debugfs_stat(const fs::path& disk, const std::string& path) {
    const auto text = capture(fmt::format("debugfs -R 'stat \"{}\"' {} 2>/dev/null", path, disk.string()));
    InodeOwnership out;
    auto number = [&](std::string_view key, int base) -> long {
        const auto at = text.find(key);
        if (at == std::string::npos) return -1;
        return std::strtol(text.c_str() + at + key.size(), nullptr, base);
    };
    out.uid = number("User:", 10);
    out.gid = number("Group:", 10);
    out.mode = number("Mode:", 8);
    return out;
}

class ImageRegistry : public ::testing::Test {
protected:
    // A missing tool is a precondition (skip); with every tool installed, a set-up step that
    // fails is a failure of every test.
    static void SetUpTestSuite() {
        if (const auto tool = missing_tools(); !tool.empty()) {
            skip_reason_ = "precondition: " + tool + " is not installed";
            return;
        }
        images_ = std::make_unique<test::TempDir>("boxlite-oci");
        if (sh(fmt::format("bash {} build {} >{}/build.log 2>&1", kHarness, images_->path().string(),
                           images_->path().string())) != 0) {
            setup_failure_ = "building test images with umoci failed: " + read_text(images_->path() / "build.log");
            return;
        }
        registry_ = std::make_unique<Registry>();
        if (!registry_->running()) {
            setup_failure_ = "docker-registry did not start on 127.0.0.1";
            return;
        }
        const bool pushed = registry_->push(oci(), "single", "test/single:1") &&
                            registry_->push(oci(), "multi", "test/multi:1") &&
                            registry_->push(oci(), "multiarch", "test/multiarch:1", "all") &&
                            registry_->push(oci(), "unique", "test/unique:1") &&
                            registry_->push(oci(), "entry", "test/entry:1");
        if (!pushed) setup_failure_ = "skopeo could not push the test images";
    }
    static void TearDownTestSuite() {
        registry_.reset();
        images_.reset();
    }
    void SetUp() override {
        if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
        ASSERT_EQ(setup_failure_, "") << "the registry fixture's set-up failed";
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

    /// Sets namespace_runtime_: the namespace engine on `home`, searching the test registry.
    /// Skips the test without root (the engine's precondition); as root, an engine that says it
    /// cannot run is a failure. Callers return when IsSkipped() or HasFatalFailure() (gtest's
    /// way out of a helper).
    void open_namespace_runtime(const fs::path& home) {
        if (::geteuid() != 0)
            GTEST_SKIP() << "precondition: not root (the namespace engine needs namespaces, overlayfs)";
        const auto shim = test::built_binary("boxlite-shim");
        const auto agent = test::built_binary("boxlite-agent");
        ASSERT_TRUE(fs::exists(shim) && fs::exists(agent))
            << "boxlite-shim / boxlite-agent are not built (test dependencies)";
        ::setenv("BOXLITE_SHIM", shim.c_str(), 1);
        ::setenv("BOXLITE_AGENT", agent.c_str(), 1);
        BoxliteOptions options;
        options.home_dir = home;
        options.image_registries = {registry_->host()};
        options.engine = EngineKind::Namespace;
        auto runtime = open_runtime(options);
        ASSERT_TRUE(runtime) << runtime.error().to_string();
        auto available = runtime->engine().available();
        ASSERT_TRUE(available) << "the namespace engine calls itself unavailable as root: "
                               << available.error().to_string();
        namespace_runtime_.emplace(std::move(*runtime));
    }

    static inline std::string skip_reason_;
    static inline std::string setup_failure_;
    static inline std::unique_ptr<test::TempDir> images_;
    static inline std::unique_ptr<Registry> registry_;
    test::TempDir home_{"boxlite-home"};
    test::TempDir other_home_{"boxlite-home"};         // for a namespace runtime beside one on home_
    std::optional<BoxliteRuntime> namespace_runtime_;  // after the homes: destroyed before them
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
    EXPECT_NE(read_text(images / "index.json").find(image->manifest_digest), std::string::npos);
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
    EXPECT_EQ(read_text(*rootfs / "etc/os-release"), "NAME=\"BoxLite Test Linux\"\nID=boxlite-test\nVERSION_ID=1\n");
    EXPECT_EQ(read_text(*rootfs / "bin/busybox"), read_text("/bin/busybox"));
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
    EXPECT_EQ(read_text(r / "data/keep/file"), "keep\n");
    EXPECT_FALSE(fs::exists(r / "data/gone"));
    EXPECT_FALSE(fs::exists(r / "opq/old.txt"));
    EXPECT_FALSE(fs::exists(r / "opq/sub"));
    EXPECT_EQ(read_text(r / "opq/new.txt"), "new\n");
    EXPECT_EQ(read_text(r / "etc/motd"), "welcome\n");
    struct stat a {
    }, b{};
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
    EXPECT_EQ(read_text(*amd_root / "etc/arch"), "amd64\n");

    test::TempDir other{"boxlite-home"};
    auto arm_store = open_store(other.path());
    auto arm = arm_store.pull(ref("test/multiarch:1"), {PullPolicy::IfMissing, {}, Platform{"linux", "arm64", "v8"}});
    ASSERT_TRUE(arm) << arm.error().message();
    EXPECT_NE(arm->manifest_digest, amd->manifest_digest);
    EXPECT_EQ(arm->index_digest, amd->index_digest);
    EXPECT_EQ(arm->config.platform.architecture, "arm64");
    auto arm_root = arm_store.rootfs_directory(*arm);
    ASSERT_TRUE(arm_root) << arm_root.error().message();
    EXPECT_EQ(read_text(*arm_root / "etc/arch"), "arm64\n");

    test::TempDir third{"boxlite-home"};
    auto riscv = open_store(third.path())
                     .pull(ref("test/multiarch:1"), {PullPolicy::Always, {}, Platform{"linux", "riscv64", ""}});
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
    EXPECT_EQ(read_text(prepared->path / "etc/os-release").substr(0, 4), "NAME");
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
    test::TempDir scratch{"boxlite-home"};
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
    const auto blob = read_text(home_.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest)));

    // A bogus prefix: only a resumed (Range) download keeps it, and then the digest cannot match.
    test::TempDir bogus_home{"boxlite-home"};
    auto bogus = open_store(bogus_home.path());
    const auto partial = bogus_home.path() / "images/tmp" / fmt::format("{}.partial", digest_hex(layer.digest));
    std::ofstream(partial, std::ios::binary) << std::string(4096, 'X');
    auto refused = bogus.pull(ref("test/single:1"));
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("digest mismatch"), std::string::npos) << refused.error().message();
    EXPECT_EQ(fs::file_size(partial), 0u);  // thrown away: the next pull starts from scratch
    ASSERT_TRUE(bogus.pull(ref("test/single:1")));

    // A true prefix: the download continues after it and the blob verifies.
    test::TempDir resumed_home{"boxlite-home"};
    auto resumed = open_store(resumed_home.path());
    const auto resumed_partial = resumed_home.path() / "images/tmp" /
                                 fmt::format("{}.partial", digest_hex(layer.digest));
    std::ofstream(resumed_partial, std::ios::binary) << blob.substr(0, blob.size() / 2);
    std::vector<LayerProgress> events;
    auto ok = resumed.pull(ref("test/single:1"),
                           {PullPolicy::IfMissing, [&](const LayerProgress& p) { events.push_back(p); }, {}});
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_EQ(read_text(resumed_home.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest))), blob);
    // The first download event already counts the bytes that were on disk.
    auto first_download = std::find_if(events.begin(), events.end(),
                                       [](const auto& e) { return e.phase == LayerPhase::Downloading; });
    ASSERT_NE(first_download, events.end());
    EXPECT_EQ(first_download->current, blob.size() / 2);
}

TEST_F(ImageRegistry, ExplainsAuthenticationFailures) {
    Registry secured(std::pair<std::string, std::string>{"boxlite", "s3cret"});
    ASSERT_TRUE(secured.running());
    ASSERT_TRUE(secured.push(oci(), "single", "test/private:1"));
    const auto name = secured.host() + "/test/private:1";
    test::TempDir no_config;
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
    test::TempDir no_config;
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
    open_namespace_runtime(home_.path());
    if (IsSkipped() || HasFatalFailure()) return;
    BoxOptions box_options;
    box_options.rootfs = RootfsSpec::image("test/multi:1");
    auto box = namespace_runtime_->create(box_options);
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
    EXPECT_FALSE(
        fs::exists(home_.path() / "images/rootfs" / std::string(digest_hex(image->manifest_digest)) / "etc/written"));
    auto metrics = box->metrics();
    ASSERT_TRUE(metrics);
    EXPECT_TRUE(metrics->stage_image_prepare_ms.has_value());
    ASSERT_TRUE(namespace_runtime_->remove(box->id().str(), true));
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
    test::TempDir out;
    ASSERT_EQ(sh(fmt::format("debugfs -R 'dump /etc/os-release {}/os-release' {} >/dev/null 2>&1", out.path().string(),
                             prepared->path.string())),
              0);
    EXPECT_EQ(read_text(out.path() / "os-release").substr(0, 25), "NAME=\"BoxLite Test Linux\"");
    ASSERT_EQ(sh(fmt::format("debugfs -R 'stat /opq/old.txt' {} 2>&1 | grep -q 'File not found'",
                             prepared->path.string())),
              0);

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
            auto image = store->pull(ref("test/multi:1"), {PullPolicy::IfMissing,
                                                           [&](const LayerProgress& p) {
                                                               if (p.phase == LayerPhase::Complete) ++completed;
                                                           },
                                                           {}});
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
    for (const auto& entry : fs::directory_iterator(counts)) total += std::stoi(read_text(entry.path()));
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
    test::TempDir exports;
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
    EXPECT_EQ(read_text(*tree / "opq/new.txt"), "new\n");
    EXPECT_FALSE(fs::exists(*tree / "opq/old.txt"));

    // An OCI archive with an explicit name, then the whole layout directory (names from its tags).
    const auto oci_tar = exports.path() / "single.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:single oci-archive:{} >/dev/null", oci().string(),
                             oci_tar.string())),
              0);
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
    EXPECT_EQ(read_text(home_.path() / "images/index.json").find("sha256:"), std::string::npos);
}

// The runtime seam: RootfsSpec::Image goes through the image store (default provider), searching
// BoxliteOptions::image_registries, and the engine gets the tree or disk plus the image's defaults.
TEST_F(ImageRegistry, RuntimeCreatePullsTheImageAndStartLaunchesTheEngineFromIt) {
    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    for (const auto kind : {RootfsKind::Directory, RootfsKind::Ext4Disk}) {
        test::TempDir home{"boxlite-home"};
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
            EXPECT_EQ(read_text(rootfs / "etc/os-release").substr(0, 4), "NAME");
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
    EXPECT_EQ(read_text(engine.launches()[2].rootfs / "etc/os-release").substr(0, 4), "NAME");

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

// A server that ignores Range answers a resumed download with 200 and the whole blob: the partial
// file is thrown away and the download starts over (curl's own resume would fail with
// CURLE_RANGE_ERROR before any byte, and every later pull of that layer with it).
TEST_F(ImageRegistry, StartsOverWhenTheServerIgnoresRange) {
    FaultProxy proxy(registry_->port(), "ignore-range");
    ASSERT_TRUE(proxy.running());
    test::TempDir scratch{"boxlite-home"};
    auto seed = open_store(scratch.path()).pull(ref("test/single:1"));
    ASSERT_TRUE(seed) << seed.error().message();
    const auto layer = seed->layers[0];
    const auto blob = read_text(scratch.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest)));

    const std::vector<std::string> prefixes = {blob.substr(0, blob.size() / 2), std::string(4096, 'X')};
    for (const auto& prefix : prefixes) {
        test::TempDir home{"boxlite-home"};
        auto store = open_store(home.path());
        const auto partial = home.path() / "images/tmp" / fmt::format("{}.partial", digest_hex(layer.digest));
        std::ofstream(partial, std::ios::binary) << prefix;
        auto pulled = store.pull(proxy.host() + "/test/single:1");
        ASSERT_TRUE(pulled) << pulled.error().message();
        EXPECT_EQ(read_text(home.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest))), blob);
        EXPECT_FALSE(fs::exists(partial));
    }
    const auto requests = proxy.requests(layer.digest);
    ASSERT_EQ(requests.size(), 2u);
    for (std::size_t i = 0; i < requests.size(); ++i) {
        EXPECT_EQ(requests[i].range, fmt::format("bytes={}-", prefixes[i].size()));
        EXPECT_EQ(requests[i].status, 200);
    }
}

TEST_F(ImageRegistry, RetriesServerErrorsWithBackoff) {
    FaultProxy flaky(registry_->port(), "status-503", 2);
    ASSERT_TRUE(flaky.running());
    auto pulled = open_store(home_.path()).pull(flaky.host() + "/test/single:1");
    ASSERT_TRUE(pulled) << pulled.error().message();
    for (const auto& digest : {pulled->config_digest, pulled->layers[0].digest}) {
        const auto requests = flaky.requests(digest);
        ASSERT_EQ(requests.size(), 3u) << digest;
        EXPECT_EQ(requests[0].status, 503);
        EXPECT_EQ(requests[1].status, 503);
        EXPECT_EQ(requests[2].status, 200);
    }
    EXPECT_EQ(
        sha256_file(home_.path() / "images/blobs/sha256" / std::string(digest_hex(pulled->layers[0].digest))).value(),
        pulled->layers[0].digest);

    // A registry that keeps failing: max_attempts requests, then an error that says what it answered.
    FaultProxy down(registry_->port(), "status-503", 100);
    ASSERT_TRUE(down.running());
    RegistryOptions few;
    few.max_attempts = 2;
    test::TempDir other{"boxlite-home"};
    auto failed = open_store(other.path(), few).pull(down.host() + "/test/single:1");
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().kind(), ErrorKind::Image);
    EXPECT_NE(failed.error().message().find("HTTP 503"), std::string::npos) << failed.error().message();
    EXPECT_EQ(down.requests(pulled->config_digest).size(), 2u);
}

TEST_F(ImageRegistry, ResumesAfterTheConnectionDropsMidTransfer) {
    FaultProxy proxy(registry_->port(), "drop", 1);
    ASSERT_TRUE(proxy.running());
    std::vector<LayerProgress> events;
    auto pulled = open_store(home_.path())
                      .pull(proxy.host() + "/test/single:1",
                            {PullPolicy::IfMissing, [&](const LayerProgress& p) { events.push_back(p); }, {}});
    ASSERT_TRUE(pulled) << pulled.error().message();
    const auto& layer = pulled->layers[0];
    EXPECT_EQ(sha256_file(home_.path() / "images/blobs/sha256" / std::string(digest_hex(layer.digest))).value(),
              layer.digest);
    const auto requests = proxy.requests(layer.digest);
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[0].range, "");
    // The second request continues after the half that arrived.
    EXPECT_EQ(requests[1].range, fmt::format("bytes={}-", layer.size / 2));
    EXPECT_EQ(requests[1].status, 206);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().phase, LayerPhase::Complete);
}

// Tokens expire (Docker Hub's after 5 minutes): a 401 in the middle of a pull gets a new token
// from the realm and the request is repeated with it.
TEST_F(ImageRegistry, RenewsAnExpiredBearerTokenMidPull) {
    Registry registry(std::pair<std::string, std::string>{"boxlite", "s3cret"}, Registry::Auth::Token);
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "multi", "public/renew:1"));
    FaultProxy proxy(registry.port(), "revoke-token");
    ASSERT_TRUE(proxy.running());
    test::TempDir no_config;
    RegistryOptions anonymous;
    anonymous.docker_config = no_config.path() / "config.json";
    auto pulled = open_store(home_.path(), anonymous).pull(proxy.host() + "/public/renew:1");
    ASSERT_TRUE(pulled) << pulled.error().message();
    EXPECT_EQ(pulled->layers.size(), 3u);

    const auto requests = proxy.requests();
    const auto revoked = std::find_if(requests.begin(), requests.end(), [](const auto& r) {
        return r.status == 401 && r.path.find("/blobs/") != std::string::npos;
    });
    ASSERT_NE(revoked, requests.end());
    EXPECT_FALSE(revoked->token.empty());
    const auto retried = std::find_if(revoked + 1, requests.end(),
                                      [&](const auto& r) { return r.path == revoked->path; });
    ASSERT_NE(retried, requests.end());
    EXPECT_EQ(retried->status, 200);
    EXPECT_NE(retried->token, revoked->token);
    EXPECT_EQ(std::count_if(requests.begin(), requests.end(),
                            [](const auto& r) { return r.status == 401 && !r.token.empty(); }),
              1);
}

TEST_F(ImageRegistry, PullsDockerV2Schema2ImagesAndManifestLists) {
    Registry registry;
    ASSERT_TRUE(registry.running());
    ASSERT_TRUE(registry.push(oci(), "single", "test/docker:1", "v2s2"));
    ASSERT_TRUE(registry.push(oci(), "multiarch", "test/docker-list:1", "all,v2s2"));
    auto store = open_store(home_.path());

    auto image = store.pull(registry.host() + "/test/docker:1");
    ASSERT_TRUE(image) << image.error().message();
    EXPECT_EQ(image->media_type, media_type::kDockerManifest);
    ASSERT_EQ(image->layers.size(), 1u);
    EXPECT_EQ(image->layers[0].media_type, media_type::kDockerLayerGzip);
    EXPECT_EQ(image->config.cmd, (std::vector<std::string>{"/bin/sh", "-c", "cat /etc/os-release"}));
    EXPECT_EQ(image->config.working_dir, "/data");
    auto tree = store.rootfs_directory(*image);
    ASSERT_TRUE(tree) << tree.error().message();
    EXPECT_EQ(read_text(*tree / "etc/os-release").substr(0, 25), "NAME=\"BoxLite Test Linux\"");

    for (const auto& [platform, arch] : {std::pair{Platform{"linux", "amd64", ""}, "amd64\n"},
                                         std::pair{Platform{"linux", "arm64", "v8"}, "arm64\n"}}) {
        test::TempDir home{"boxlite-home"};
        auto arch_store = open_store(home.path());
        auto chosen = arch_store.pull(registry.host() + "/test/docker-list:1", {PullPolicy::IfMissing, {}, platform});
        ASSERT_TRUE(chosen) << chosen.error().message();
        EXPECT_EQ(chosen->media_type, media_type::kDockerManifest);
        ASSERT_FALSE(chosen->index_digest.empty());
        const auto list = read_text(home.path() / "images/blobs/sha256" /
                                    std::string(digest_hex(chosen->index_digest)));
        EXPECT_NE(list.find(media_type::kDockerManifestList), std::string::npos) << list;
        auto root = arch_store.rootfs_directory(*chosen);
        ASSERT_TRUE(root) << root.error().message();
        EXPECT_EQ(read_text(*root / "etc/arch"), arch);
    }
}

// `load(archive, "mine:1")` and a docker save RepoTag "mine:2" both normalize as Docker does
// (docker.io/library/…), and the same short names find them again — locally, before any
// registry of the search list is asked (here one that cannot be reached at all).
TEST_F(ImageRegistry, LoadedShortNamesAreFoundByTheSameNamesWithoutANetwork) {
    test::TempDir exports;
    const auto oci_tar = exports.path() / "single.tar";
    const auto docker_tar = exports.path() / "saved.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:single oci-archive:{} >/dev/null", oci().string(),
                             oci_tar.string())),
              0);
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:multi docker-archive:{}:mine:2 >/dev/null", oci().string(),
                             docker_tar.string())),
              0);
    RegistryOptions unreachable;
    unreachable.search_registries = {"127.0.0.1:1"};
    unreachable.max_attempts = 1;
    auto opened = ImageStore::open({home_.path(), unreachable, {}});
    ASSERT_TRUE(opened) << opened.error().message();
    auto& store = *opened;
    auto named = store.load(oci_tar, "mine:1");
    ASSERT_TRUE(named) << named.error().message();
    ASSERT_EQ(named->size(), 1u);
    EXPECT_EQ(named->front().reference, "docker.io/library/mine:1");
    auto saved = store.load(docker_tar);
    ASSERT_TRUE(saved) << saved.error().message();
    ASSERT_EQ(saved->size(), 1u);
    EXPECT_EQ(saved->front().reference, "docker.io/library/mine:2");

    for (const std::string name : {"mine:1", "mine:2", "library/mine:1", "docker.io/mine:2"}) {
        auto inspected = store.inspect(name);
        ASSERT_TRUE(inspected) << name << ": " << inspected.error().message();
        auto pulled = store.pull(name);
        ASSERT_TRUE(pulled) << name << ": " << pulled.error().message();
        EXPECT_EQ(pulled->manifest_digest, inspected->manifest_digest);
    }

    // The runtime: RootfsSpec::image("mine:1") with that unreachable registry searched first.
    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    MockEngine engine(MockEngine::Options{RootfsKind::Directory, "pipe"});
    RuntimeSettings settings;
    settings.host_cpus = 2;
    Runtime runtime(BoxliteOptions{home_.path(), {"127.0.0.1:1"}, EngineKind::Mock}, engine, PipeTransport{},
                    MemoryStorage{}, settings);
    BoxOptions options;
    options.rootfs = RootfsSpec::image("mine:1");
    options.auto_remove = false;
    auto box = runtime.create(options);
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start());
    ASSERT_EQ(engine.launches().size(), 1u);
    EXPECT_EQ(engine.launches()[0].rootfs.filename().string(), std::string(digest_hex(named->front().manifest_digest)));
    ASSERT_TRUE(runtime.remove(box->id().str(), true));

    ASSERT_TRUE(store.remove("mine:2"));
    EXPECT_FALSE(store.inspect("mine:2"));
    ASSERT_TRUE(store.remove("mine:1"));
    EXPECT_FALSE(store.inspect("docker.io/library/mine:1"));
}

// The host name of this machine resolves to loopback but is not one of the names Docker treats
// as loopback, so it gets HTTPS unless BoxliteOptions::insecure_registries lists it.
TEST_F(ImageRegistry, ANonLoopbackNameIsReachedOverHttpOnlyWhenListedAsInsecure) {
    char hostname[256] = {0};
    ASSERT_EQ(::gethostname(hostname, sizeof hostname - 1), 0);
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* found = nullptr;
    if (::getaddrinfo(hostname, nullptr, &hints, &found) != 0 || found == nullptr) {
        GTEST_SKIP() << "precondition: the host name '" << hostname << "' does not resolve";
    }
    const auto address = ntohl(reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr.s_addr);
    ::freeaddrinfo(found);
    if ((address >> 24) != 127)
        GTEST_SKIP() << "precondition: the host name '" << hostname << "' does not resolve to loopback";
    const std::string host = fmt::format("{}:{}", hostname, registry_->port());
    ASSERT_FALSE(is_loopback_registry(host));
    const auto name = host + "/test/single:1";

    RegistryOptions strict;
    strict.max_attempts = 1;
    auto refused = open_store(home_.path(), strict).pull(name);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("https://" + host + "/v2/"), std::string::npos)
        << refused.error().message();

    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    MockEngine engine(MockEngine::Options{RootfsKind::Directory, "pipe"});
    RuntimeSettings settings;
    settings.host_cpus = 2;
    BoxliteOptions runtime_options{home_.path(), {}, EngineKind::Mock};
    runtime_options.insecure_registries = {host};
    Runtime runtime(runtime_options, engine, PipeTransport{}, MemoryStorage{}, settings);
    BoxOptions options;
    options.rootfs = RootfsSpec::image(name);
    options.auto_remove = false;
    auto box = runtime.create(options);
    ASSERT_TRUE(box) << box.error().to_string();
    auto local = ImageStore::open(store_options_for(runtime_options))->inspect(name);
    ASSERT_TRUE(local) << local.error().message();
    EXPECT_EQ(local->reference, name);

    // An entry that is not host[:port] is refused when the store opens.
    BoxliteOptions bad_options{home_.path(), {}, EngineKind::Mock};
    bad_options.insecure_registries = {"http://" + host};
    Runtime bad_runtime(bad_options, engine, PipeTransport{}, MemoryStorage{}, settings);
    auto bad = bad_runtime.create(options);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().kind(), ErrorKind::Config);
    EXPECT_NE(bad.error().message().find("insecure registry 'http://" + host + "'"), std::string::npos)
        << bad.error().message();
}

// VM engines need only /dev/kvm, so an unprivileged user may build a base disk: its tree then has
// that user as every owner, yet the ext4 must hold what the layers declare (setuid root binaries
// included).
TEST_F(ImageRegistry, AnExt4DiskBuiltByANonRootUserHoldsTheOwnersAndModesOfTheLayers) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (switching to an unprivileged user)";
    constexpr uid_t kNobody = 65534;
    ASSERT_EQ(::chown(home_.path().c_str(), kNobody, kNobody), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0 || ::geteuid() == 0) {
            ::_exit(5);
        }
        RegistryOptions options;
        options.search_registries = {};
        auto store = ImageStore::open({home_.path(), options, {}});
        if (!store) ::_exit(2);
        auto prepared = store->prepare(ref("test/single:1"), RootfsKind::Ext4Disk);
        if (!prepared) {
            std::fprintf(stderr, "unprivileged build failed: %s\n", prepared.error().message().c_str());
            ::_exit(3);
        }
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child exit status " << status;

    auto image = open_store(home_.path()).inspect(ref("test/single:1"));
    ASSERT_TRUE(image) << image.error().message();
    const auto hex = std::string(digest_hex(image->manifest_digest));
    struct stat tree {};
    ASSERT_EQ(::stat((home_.path() / "images/rootfs" / hex / "bin/busybox").c_str(), &tree), 0);
    EXPECT_EQ(tree.st_uid, kNobody);  // the tree really was unpacked without privileges
    const auto disk = home_.path() / "images/disk-images" / (hex + ".ext4");
    ASSERT_TRUE(fs::exists(disk));
    EXPECT_EQ(sh(fmt::format("e2fsck -fn {} >/dev/null 2>&1", disk.string())), 0);

    struct Expected {
        const char* path;
        long uid, gid, mode;
    };
    for (const auto& e : {Expected{"/", 0, 0, 040755}, Expected{"/bin/busybox", 0, 0, 0100755},
                          Expected{"/bin/suid-tool", 0, 0, 0104755}, Expected{"/data/keep/file", 1000, 1000, 0100640},
                          Expected{"/srv/private", 1000, 1000, 040550}, Expected{"/srv/data-link", 1000, 1000, 0120777},
                          Expected{"/tmp", 0, 0, 041777}, Expected{"/etc/os-release", 0, 0, 0100644}}) {
        const auto got = debugfs_stat(disk, e.path);
        EXPECT_EQ(got.uid, e.uid) << e.path;
        EXPECT_EQ(got.gid, e.gid) << e.path;
        EXPECT_EQ(got.mode, e.mode & 07777) << e.path;  // debugfs prints the permission bits
    }
}

// docker save archives name their layers only by diff_id (the digest of the uncompressed tar):
// each layer is checked against it, compressed or not, before anything is stored.
TEST_F(ImageRegistry, VerifiesDockerSaveLayersAgainstTheirDiffIds) {
    test::TempDir exports;
    const auto tar = exports.path() / "saved.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:multi docker-archive:{}:team/checked:1 >/dev/null", oci().string(),
                             tar.string())),
              0);
    auto unpack_to = [&](const std::string& name) {
        const auto dir = exports.path() / name;
        fs::create_directories(dir);
        EXPECT_EQ(sh(fmt::format("tar -C {} -xf {}", dir.string(), tar.string())), 0);
        const auto manifest = nlohmann::json::parse(read_text(dir / "manifest.json"));
        std::vector<fs::path> layers;
        for (const auto& layer : manifest.at(0).at("Layers")) layers.push_back(dir / layer.get<std::string>());
        return std::pair{dir, layers};
    };
    auto replace_in = [](const fs::path& file, std::string_view from, std::string_view to) {
        auto text = read_text(file);
        const auto at = text.find(from);
        ASSERT_NE(at, std::string::npos) << file;
        text = text.substr(0, at) + std::string(to) + text.substr(at + from.size());
        std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
    };
    auto gzip_in_place = [](const fs::path& file) {
        ASSERT_EQ(sh(fmt::format("gzip -n -c {0} > {0}.gz && mv {0}.gz {0}", file.string())), 0);
    };

    // A gzip-compressed layer verifies against the digest of what it decompresses to.
    auto [good, good_layers] = unpack_to("good");
    ASSERT_EQ(good_layers.size(), 3u);
    gzip_in_place(good_layers[1]);
    {
        test::TempDir home{"boxlite-home"};
        auto store = open_store(home.path());
        auto loaded = store.load(good);
        ASSERT_TRUE(loaded) << loaded.error().message();
        ASSERT_EQ(loaded->size(), 1u);
        EXPECT_EQ(loaded->front().layers[1].media_type, media_type::kOciLayerGzip);
        auto tree = store.rootfs_directory(loaded->front());
        ASSERT_TRUE(tree) << tree.error().message();
        EXPECT_EQ(read_text(*tree / "data/added.txt"), "added\n");
    }

    auto expect_refused = [&](const fs::path& archive, std::size_t index) {
        test::TempDir home{"boxlite-home"};
        auto store = open_store(home.path());
        auto loaded = store.load(archive);
        ASSERT_FALSE(loaded);
        EXPECT_EQ(loaded.error().kind(), ErrorKind::Image);
        const auto& message = loaded.error().message();
        EXPECT_NE(message.find("digest mismatch for layer"), std::string::npos) << message;
        const auto config = nlohmann::json::parse(read_text(
            archive /
            nlohmann::json::parse(read_text(archive / "manifest.json")).at(0).at("Config").get<std::string>()));
        EXPECT_NE(message.find(config.at("rootfs").at("diff_ids").at(index).get<std::string>()), std::string::npos)
            << message;
        EXPECT_FALSE(store.inspect("team/checked:1"));
        // Layers before the bad one may already be stored; nothing names them and gc frees them.
        auto gc = store.gc();
        ASSERT_TRUE(gc);
        EXPECT_TRUE(fs::is_empty(home.path() / "images/blobs/sha256"));
    };
    // One byte changed in an uncompressed layer, and in a compressed one.
    auto [plain, plain_layers] = unpack_to("tampered-plain");
    replace_in(plain_layers[2], "welcome", "welcomE");
    expect_refused(plain, 2);
    auto [packed, packed_layers] = unpack_to("tampered-gzip");
    replace_in(packed_layers[1], "added", "addeD");
    gzip_in_place(packed_layers[1]);
    expect_refused(packed, 1);
}

// index.json names each image by its full reference, so skopeo and umoci can address any of them
// in the store, even two that share a tag.
TEST_F(ImageRegistry, IndexJsonNamesEachImageByItsFullReference) {
    auto store = open_store(home_.path());
    for (const auto* name : {"test/single:1", "test/multi:1"}) {
        auto image = store.pull(ref(name));
        ASSERT_TRUE(image) << image.error().message();
        const auto raw = capture(
            fmt::format("skopeo inspect --raw oci:{}/images:{} 2>&1", home_.path().string(), image->reference));
        EXPECT_EQ(sha256_digest(raw), image->manifest_digest) << raw;
    }
}

TEST_F(ImageRegistry, TheImagesUserAndEntrypointBecomeTheBoxDefaults) {
    using Runtime = BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
    MockEngine engine(MockEngine::Options{RootfsKind::Directory, "pipe"});
    RuntimeSettings settings;
    settings.host_cpus = 2;
    Runtime runtime(BoxliteOptions{home_.path(), {}, EngineKind::Mock}, engine, PipeTransport{}, MemoryStorage{},
                    settings);
    auto launch_of = [&](BoxOptions options) {
        options.rootfs = RootfsSpec::image(ref("test/entry:1"));
        options.auto_remove = false;
        auto box = runtime.create(options);
        EXPECT_TRUE(box) << box.error().to_string();
        if (!box) return std::vector<std::string>{};
        EXPECT_TRUE(box->start());
        return engine.launches().back().init_command;
    };
    EXPECT_EQ(launch_of({}), (std::vector<std::string>{"/bin/echo", "entry", "from-image"}));
    BoxOptions cmd;
    cmd.cmd = std::vector<std::string>{"given"};
    EXPECT_EQ(launch_of(cmd), (std::vector<std::string>{"/bin/echo", "entry", "given"}));
    BoxOptions entrypoint;
    entrypoint.entrypoint = std::vector<std::string>{"/bin/sh"};
    EXPECT_EQ(launch_of(entrypoint), (std::vector<std::string>{"/bin/sh"}));  // the image's Cmd is dropped

    // What the provider hands the runtime, merged as the runtime merges it into EngineLaunch.
    auto prepared = default_image_rootfs_provider().prepare(RootfsSpec::Image{ref("test/entry:1")},
                                                            RootfsKind::Directory,
                                                            BoxliteOptions{home_.path(), {}, EngineKind::Mock},
                                                            BoxID::generate());
    ASSERT_TRUE(prepared) << prepared.error().to_string();
    EXPECT_EQ(prepared->defaults.user, "1000:1000");
    EngineLaunch launch;
    merge_launch_defaults(BoxOptions{}, prepared->defaults, launch);
    EXPECT_EQ(launch.user, "1000:1000");
    EXPECT_EQ(launch.working_dir, "/data");
    EXPECT_NE(std::find(launch.env.begin(), launch.env.end(), std::pair<std::string, std::string>{"FOO", "bar"}),
              launch.env.end());
    BoxOptions as_root;
    as_root.user = "0";
    merge_launch_defaults(as_root, prepared->defaults, launch);
    EXPECT_EQ(launch.user, "0");

    // On a real engine, commands run as the image's user.
    open_namespace_runtime(other_home_.path());
    if (IsSkipped() || HasFatalFailure()) return;
    BoxOptions box_options;
    box_options.rootfs = RootfsSpec::image("test/entry:1");
    auto box = namespace_runtime_->create(box_options);
    ASSERT_TRUE(box) << box.error().to_string();
    auto id = box->run(BoxCommand("sh").args({"-c", "id -u; id -g; pwd"}));
    ASSERT_TRUE(id) << id.error().to_string();
    EXPECT_EQ(id->stdout_text, "1000\n1000\n/data\n") << id->stderr_text;
    ASSERT_TRUE(namespace_runtime_->remove(box->id().str(), true));
}

// libcurl and libarchive are dlopen()ed: a program that lacks them hears which package to install.
// They are made unloadable for one run of a program that uses only the image store by
// bind-mounting /dev/null over them in a private mount namespace.
TEST_F(ImageRegistry, SaysWhichPackageToInstallWhenLibcurlOrLibarchiveIsMissing) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (a private mount namespace)";
    if (sh("command -v unshare >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "precondition: unshare (util-linux) is not installed";
    const auto curl = library_file("libcurl.so.4");
    const auto archive = library_file("libarchive.so.13");
    ASSERT_FALSE(curl.empty());
    ASSERT_FALSE(archive.empty());
    test::TempDir exports;
    const auto oci_tar = exports.path() / "single.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:single oci-archive:{} >/dev/null", oci().string(),
                             oci_tar.string())),
              0);
    auto probe = [&](const std::string& hidden, const std::string& args) {
        test::TempDir home{"boxlite-home"};
        const std::string run = fmt::format("{} {}", BOXLITE_IMAGE_PROBE,
                                            fmt::format(fmt::runtime(args), home.path().string()));
        if (hidden.empty()) return capture(run + " 2>&1");
        return capture(fmt::format("unshare -m --propagation private sh -c 'mount --bind /dev/null {} && exec {}' 2>&1",
                                   hidden, run));
    };
    const auto pull = fmt::format("pull {{}} {}", ref("test/single:1"));
    const auto load = fmt::format("load {{}} {}", oci_tar.string());
    EXPECT_EQ(probe("", pull), "ok\n");
    EXPECT_EQ(probe("", load), "ok\n");
    const auto no_curl = probe(curl, pull);
    EXPECT_NE(no_curl.find("cannot load libcurl.so.4"), std::string::npos) << no_curl;
    EXPECT_NE(no_curl.find("libcurl4 (bookworm) or libcurl4t64 (trixie)"), std::string::npos) << no_curl;
    const auto no_archive = probe(archive, load);
    EXPECT_NE(no_archive.find("cannot load libarchive.so.13"), std::string::npos) << no_archive;
    EXPECT_NE(no_archive.find("libarchive13 (bookworm) or libarchive13t64 (trixie)"), std::string::npos) << no_archive;
}

// libcrypto (SHA-256) is dlopen()ed too, when something first hashes: a program that opens the
// store and hashes nothing never maps it, and one that cannot load it still verifies every blob,
// with the portable SHA-256 (a load checks each blob against the digest skopeo wrote).
TEST_F(ImageRegistry, LibcryptoIsLoadedOnlyToHashAndWithoutItHashingStillWorks) {
    if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (a private mount namespace)";
    if (sh("command -v unshare >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "precondition: unshare (util-linux) is not installed";
    const auto crypto = library_file("libcrypto.so.3");
    ASSERT_FALSE(crypto.empty());
    test::TempDir exports;
    const auto oci_tar = exports.path() / "single.tar";
    ASSERT_EQ(sh(fmt::format("skopeo copy -q oci:{}:single oci-archive:{} >/dev/null", oci().string(),
                             oci_tar.string())),
              0);
    test::TempDir home{"boxlite-home"};
    EXPECT_EQ(capture(fmt::format("{} libs {} - 2>&1", BOXLITE_IMAGE_PROBE, home.path().string())),
              "libcrypto not mapped\n");
    const auto loaded = capture(
        fmt::format("unshare -m --propagation private sh -c 'mount --bind /dev/null {} && exec {} load {} {}' 2>&1",
                    crypto, BOXLITE_IMAGE_PROBE, home.path().string(), oci_tar.string()));
    EXPECT_EQ(loaded, "ok\n");
}

}  // namespace
}  // namespace boxlite::image
