// References, platforms and the image-config merge: pure functions, checked against Docker's rules.
#include <boxlite/image/image_config.hpp>
#include <boxlite/image/platform.hpp>
#include <boxlite/image/reference.hpp>

#include <gtest/gtest.h>

namespace boxlite::image {
namespace {

std::string canonical(std::string_view text) {
    auto ref = parse_reference(text);
    return ref ? ref->to_string() : "error: " + ref.error().message();
}

TEST(ImageReference, DockerHubNormalization) {
    EXPECT_EQ(canonical("alpine"), "docker.io/library/alpine:latest");
    EXPECT_EQ(canonical("alpine:3.20"), "docker.io/library/alpine:3.20");
    EXPECT_EQ(canonical("library/alpine"), "docker.io/library/alpine:latest");
    EXPECT_EQ(canonical("docker.io/alpine"), "docker.io/library/alpine:latest");
    EXPECT_EQ(canonical("index.docker.io/foo/bar:1"), "docker.io/foo/bar:1");
    EXPECT_EQ(canonical("team/app"), "docker.io/team/app:latest");
    EXPECT_EQ(canonical("a/b/c/d"), "docker.io/a/b/c/d:latest");
}

TEST(ImageReference, RegistryDetection) {
    EXPECT_EQ(canonical("localhost/app"), "localhost/app:latest");
    EXPECT_EQ(canonical("localhost:5000/app:v1"), "localhost:5000/app:v1");
    EXPECT_EQ(canonical("127.0.0.1:5000/team/app"), "127.0.0.1:5000/team/app:latest");
    EXPECT_EQ(canonical("ghcr.io/org/app:1.2.3"), "ghcr.io/org/app:1.2.3");
    EXPECT_EQ(canonical("[::1]:5000/app"), "[::1]:5000/app:latest");
    // A first component without '.' or ':' is a namespace on Docker Hub, not a host.
    EXPECT_EQ(canonical("myhost/app"), "docker.io/myhost/app:latest");
    auto ref = parse_reference("localhost:5000/app:v1");
    ASSERT_TRUE(ref);
    EXPECT_TRUE(ref->registry_explicit);
    EXPECT_EQ(ref->registry, "localhost:5000");
    EXPECT_EQ(ref->repository, "app");
    EXPECT_EQ(ref->tag, "v1");
}

TEST(ImageReference, Digests) {
    const std::string digest = "sha256:" + std::string(64, 'a');
    auto pinned = parse_reference("alpine@" + digest);
    ASSERT_TRUE(pinned);
    EXPECT_FALSE(pinned->tag.has_value());
    EXPECT_EQ(pinned->digest, digest);
    EXPECT_EQ(pinned->manifest_reference(), digest);
    EXPECT_EQ(pinned->to_string(), "docker.io/library/alpine@" + digest);
    auto both = parse_reference("alpine:3@" + digest);
    ASSERT_TRUE(both);
    EXPECT_EQ(both->tag, "3");
    EXPECT_EQ(both->manifest_reference(), digest);

    EXPECT_FALSE(parse_reference("alpine@sha256:abc"));
    EXPECT_FALSE(parse_reference("alpine@sha512:" + std::string(128, 'a')));
    EXPECT_FALSE(parse_reference("alpine@sha256:" + std::string(64, 'A')));
}

TEST(ImageReference, RejectsMalformed) {
    for (const char* bad :
         {"", "Alpine", "docker.io/Library/alpine", "alpine:", "alpine:-x", "alpine:.x", "a//b", "/alpine", "alpine/",
          "al pine", "alpine:tag:extra", "a__-b", "-a", "a-", "ghcr.io:/x", "localhost:99999999/x", "exa mple.com/x"}) {
        auto ref = parse_reference(bad);
        EXPECT_FALSE(ref) << bad << " parsed as " << (ref ? ref->to_string() : "");
        if (!ref) {
            EXPECT_EQ(ref.error().kind(), ErrorKind::InvalidArgument) << bad;
        }
    }
    EXPECT_FALSE(parse_reference("alpine:" + std::string(129, 'a')));
    EXPECT_TRUE(parse_reference("alpine:" + std::string(128, 'a')));
    EXPECT_FALSE(parse_reference("example.com/" + std::string(250, 'a')));
    auto upper = parse_reference("docker.io/Foo/bar");
    ASSERT_FALSE(upper);
    EXPECT_NE(upper.error().message().find("must be lowercase"), std::string::npos) << upper.error().message();
    // Separators: '.', '_', '__' and runs of '-' are allowed between alphanumerics.
    EXPECT_TRUE(parse_reference("team/a.b_c__d---e"));
    EXPECT_FALSE(parse_reference("a___b"));
    EXPECT_FALSE(parse_reference("a..b"));
}

TEST(ImageReference, SearchOrderForUnqualifiedNames) {
    const std::vector<std::string> registries = {"ghcr.io", "localhost:5000"};
    auto candidates = candidate_references("team/app:1", registries);
    ASSERT_TRUE(candidates);
    ASSERT_EQ(candidates->size(), 3u);
    EXPECT_EQ((*candidates)[0].to_string(), "ghcr.io/team/app:1");
    EXPECT_EQ((*candidates)[1].to_string(), "localhost:5000/team/app:1");
    EXPECT_EQ((*candidates)[2].to_string(), "docker.io/team/app:1");
    // Hub's library/ prefix only applies to Docker Hub.
    auto single = candidate_references("alpine", registries);
    ASSERT_TRUE(single);
    EXPECT_EQ((*single)[0].to_string(), "ghcr.io/alpine:latest");
    EXPECT_EQ((*single)[2].to_string(), "docker.io/library/alpine:latest");
    // docker.io listed explicitly is not tried twice; a qualified name is not searched.
    const std::vector<std::string> with_hub = {"docker.io", "quay.io"};
    auto hub = candidate_references("alpine", with_hub);
    ASSERT_TRUE(hub);
    ASSERT_EQ(hub->size(), 2u);
    EXPECT_EQ((*hub)[0].registry, "docker.io");
    auto qualified = candidate_references("quay.io/x/y", registries);
    ASSERT_TRUE(qualified);
    EXPECT_EQ(qualified->size(), 1u);
    const std::vector<std::string> bad = {"not a host"};
    EXPECT_FALSE(candidate_references("alpine", bad));
}

TEST(ImageReference, LoopbackRegistries) {
    EXPECT_TRUE(is_loopback_registry("localhost"));
    EXPECT_TRUE(is_loopback_registry("localhost:5000"));
    EXPECT_TRUE(is_loopback_registry("127.0.0.1:5000"));
    EXPECT_TRUE(is_loopback_registry("127.1.2.3"));
    EXPECT_TRUE(is_loopback_registry("[::1]:5000"));
    EXPECT_FALSE(is_loopback_registry("docker.io"));
    EXPECT_FALSE(is_loopback_registry("127.0.0.1.evil.com"));
    EXPECT_FALSE(is_loopback_registry("10.0.0.1:5000"));
}

TEST(ImagePlatform, ParseAndMatch) {
    auto p = parse_platform("linux/arm64/v8");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->architecture, "arm64");
    EXPECT_EQ(p->variant, "v8");
    EXPECT_FALSE(parse_platform("linux"));
    EXPECT_FALSE(parse_platform("linux//v8"));
    EXPECT_FALSE(parse_platform("a/b/c/d"));
    EXPECT_TRUE(platform_matches({"linux", "arm64", ""}, {"linux", "arm64", "v8"}));
    EXPECT_TRUE(platform_matches({"linux", "arm64", "v8"}, {"linux", "aarch64", ""}));
    EXPECT_TRUE(platform_matches({"linux", "amd64", ""}, {"linux", "x86_64", ""}));
    EXPECT_TRUE(platform_matches({"linux", "amd64", ""}, {"linux", "amd64", "v3"}));
    EXPECT_FALSE(platform_matches({"linux", "amd64", ""}, {"linux", "arm64", ""}));
    EXPECT_FALSE(platform_matches({"linux", "arm", "v7"}, {"linux", "arm", "v6"}));
    EXPECT_TRUE(platform_matches({"linux", "arm", ""}, {"linux", "armhf", ""}));
    EXPECT_FALSE(platform_matches({"linux", "amd64", ""}, {"windows", "amd64", ""}));
#if defined(__x86_64__)
    EXPECT_EQ(host_platform().to_string(), "linux/amd64");
#endif
}

TEST(ImageConfigMerge, BoxOptionsOverrideTheImage) {
    ImageConfig image;
    image.entrypoint = std::vector<std::string>{"/entry"};
    image.cmd = std::vector<std::string>{"serve", "--port=80"};
    image.env = {"PATH=/usr/bin:/bin", "LANG=C", "EMPTY"};
    image.working_dir = "/app";
    image.user = "nobody";

    BoxOptions defaults;
    auto merged = merge_process_defaults(image, defaults);
    EXPECT_EQ(merged.argv, (std::vector<std::string>{"/entry", "serve", "--port=80"}));
    EXPECT_EQ(merged.working_dir, "/app");
    EXPECT_EQ(merged.user, "nobody");
    ASSERT_EQ(merged.env.size(), 3u);
    EXPECT_EQ(merged.env[2], (std::pair<std::string, std::string>{"EMPTY", ""}));

    BoxOptions cmd_only;
    cmd_only.cmd = std::vector<std::string>{"debug"};
    EXPECT_EQ(merge_process_defaults(image, cmd_only).argv, (std::vector<std::string>{"/entry", "debug"}));

    // A new entrypoint drops the image's Cmd, as `docker run --entrypoint` does.
    BoxOptions entry_only;
    entry_only.entrypoint = std::vector<std::string>{"/bin/sh"};
    EXPECT_EQ(merge_process_defaults(image, entry_only).argv, (std::vector<std::string>{"/bin/sh"}));

    BoxOptions everything;
    everything.entrypoint = std::vector<std::string>{"/bin/sh", "-c"};
    everything.cmd = std::vector<std::string>{"true"};
    everything.env = {{"LANG", "C.UTF-8"}, {"NEW", "1"}};
    everything.working_dir = "/tmp";
    everything.user = "1000:1000";
    auto all = merge_process_defaults(image, everything);
    EXPECT_EQ(all.argv, (std::vector<std::string>{"/bin/sh", "-c", "true"}));
    EXPECT_EQ(all.env[1], (std::pair<std::string, std::string>{"LANG", "C.UTF-8"}));
    EXPECT_EQ(all.env.back(), (std::pair<std::string, std::string>{"NEW", "1"}));
    EXPECT_EQ(all.working_dir, "/tmp");
    EXPECT_EQ(all.user, "1000:1000");

    ImageConfig bare;
    auto nothing = merge_process_defaults(bare, defaults);
    EXPECT_TRUE(nothing.argv.empty());
    EXPECT_EQ(nothing.working_dir, "/");
    EXPECT_EQ(nothing.user, "");
}

// The image API's merge and the runtime's (what EngineLaunch gets) are one rule: an explicitly
// empty working_dir counts as unset in both (the image's WorkingDir, else "/").
TEST(ImageConfigMerge, TheImageApiAndTheRuntimeMergeAlike) {
    ImageConfig image;
    image.entrypoint = std::vector<std::string>{"/entry"};
    image.cmd = std::vector<std::string>{"run"};
    image.env = {"A=1", "B", "A=2"};
    image.working_dir = "/app";
    image.user = "daemon";
    ImageConfig bare;

    std::vector<BoxOptions> variants(7);
    variants[1].working_dir = "";
    variants[2].working_dir = "/elsewhere";
    variants[3].entrypoint = std::vector<std::string>{"/bin/sh"};
    variants[4].cmd = std::vector<std::string>{"other"};
    variants[5].env = {{"A", "box"}, {"C", "3"}};
    variants[6].user = "";
    for (const auto* config : {&image, &bare}) {
        for (const auto& options : variants) {
            const auto merged = merge_process_defaults(*config, options);
            EngineLaunch launch;
            merge_launch_defaults(options, image_defaults(*config), launch);
            EXPECT_EQ(merged.argv, launch.init_command);
            EXPECT_EQ(merged.env, launch.env);
            EXPECT_EQ(merged.working_dir, launch.working_dir);
            EXPECT_EQ(merged.user, launch.user);
        }
    }
    EXPECT_EQ(merge_process_defaults(image, variants[1]).working_dir, "/app");
    EXPECT_EQ(merge_process_defaults(bare, variants[1]).working_dir, "/");
    EngineLaunch launch;
    merge_launch_defaults(variants[1], ImageDefaults{}, launch);
    EXPECT_EQ(launch.working_dir, "/");
    // Env: "B" alone is an empty value, a repeated name keeps its first place with the last value.
    EXPECT_EQ(image_defaults(image).env, (std::vector<std::pair<std::string, std::string>>{{"A", "2"}, {"B", ""}}));
    EXPECT_EQ(merge_process_defaults(image, variants[5]).env,
              (std::vector<std::pair<std::string, std::string>>{{"A", "box"}, {"B", ""}, {"C", "3"}}));
    // An explicitly empty user means root, not the image's user.
    EXPECT_EQ(merge_process_defaults(image, variants[6]).user, "");
}

}  // namespace
}  // namespace boxlite::image
