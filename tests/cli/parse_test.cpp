// Flag value parsers of the boxlite CLI (cli/parse.hpp).
#include "cli/parse.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace boxlite::cli {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string& key) -> std::optional<std::string> {
        auto it = vars.find(key);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

TEST(ParseEnv, KeyValueAndValueWithEquals) {
    auto lookup = env_of({});
    auto kv = parse_env("A=1", lookup);
    ASSERT_TRUE(kv);
    EXPECT_EQ(**kv, std::make_pair(std::string("A"), std::string("1")));
    auto eq = parse_env("URL=a=b=c", lookup);
    ASSERT_TRUE(eq);
    EXPECT_EQ((*eq)->second, "a=b=c");
    auto empty_value = parse_env("EMPTY=", lookup);
    ASSERT_TRUE(empty_value);
    EXPECT_EQ((*empty_value)->second, "");
}

TEST(ParseEnv, BareKeyTakesCallersValueOrIsDropped) {
    auto lookup = env_of({{"HOME_DIR", "/home/x"}});
    auto present = parse_env("HOME_DIR", lookup);
    ASSERT_TRUE(present);
    ASSERT_TRUE(present->has_value());
    EXPECT_EQ((*present)->second, "/home/x");
    auto absent = parse_env("NOT_SET", lookup);
    ASSERT_TRUE(absent);
    EXPECT_FALSE(absent->has_value());
}

TEST(ParseEnv, RejectsEmptyKeyAndNul) {
    auto lookup = env_of({});
    auto empty = parse_env("=x", lookup);
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(empty.error().message().find("name is empty"), std::string::npos);
    EXPECT_FALSE(parse_env(std::string_view("A=\0b", 4), lookup));
}

TEST(ParsePort, AllForms) {
    auto bare = parse_port("80");
    ASSERT_TRUE(bare);
    EXPECT_EQ(bare->guest_port, 80);
    EXPECT_FALSE(bare->host_port);
    EXPECT_EQ(bare->protocol, PortProtocol::Tcp);

    auto mapped = parse_port("8080:80/udp");
    ASSERT_TRUE(mapped);
    EXPECT_EQ(mapped->host_port, 8080);
    EXPECT_EQ(mapped->guest_port, 80);
    EXPECT_EQ(mapped->protocol, PortProtocol::Udp);

    auto with_ip = parse_port("127.0.0.1:9000:90/TCP");
    ASSERT_TRUE(with_ip);
    EXPECT_EQ(with_ip->host_ip, "127.0.0.1");
    EXPECT_EQ(with_ip->host_port, 9000);
    EXPECT_EQ(with_ip->guest_port, 90);

    auto ip_any_port = parse_port("127.0.0.1::90");
    ASSERT_TRUE(ip_any_port);
    EXPECT_FALSE(ip_any_port->host_port);
    EXPECT_EQ(ip_any_port->host_ip, "127.0.0.1");

    auto v6 = parse_port("[::1]:8443:443");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host_ip, "::1");
    EXPECT_EQ(v6->host_port, 8443);
    EXPECT_EQ(v6->guest_port, 443);

    auto zero_host = parse_port("0:80");
    ASSERT_TRUE(zero_host);
    EXPECT_FALSE(zero_host->host_port);
}

TEST(ParsePort, RejectsBadInput) {
    for (const char* bad : {"", "0", "65536", "80/sctp", "abc", "-1", ":80", "8080:", "1:2:3:4", "[::1]80", "[]:1:2",
                            "80:99999", "+80", " 80", "80/", "1.2.3.4:80:"}) {
        auto parsed = parse_port(bad);
        EXPECT_FALSE(parsed) << "accepted '" << bad << "'";
        if (!parsed) {
            EXPECT_EQ(parsed.error().kind(), ErrorKind::InvalidArgument);
        }
    }
    auto out_of_range = parse_port("70000");
    ASSERT_FALSE(out_of_range);
    EXPECT_NE(out_of_range.error().message().find("1..65535"), std::string::npos);
}

class ParseVolume : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / ("boxlite-cli-volume-" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_ / "data");
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::filesystem::path dir_;
};

TEST_F(ParseVolume, AbsoluteRelativeAndHome) {
    auto absolute = parse_volume((dir_ / "data").string() + ":/data", "/", std::nullopt);
    ASSERT_TRUE(absolute) << absolute.error().to_string();
    EXPECT_EQ(absolute->host_path, (dir_ / "data").string());
    EXPECT_EQ(absolute->guest_path, "/data");
    EXPECT_FALSE(absolute->read_only);

    auto relative = parse_volume("./data:/work:ro", dir_, std::nullopt);
    ASSERT_TRUE(relative) << relative.error().to_string();
    EXPECT_EQ(relative->host_path, (dir_ / "data").string());
    EXPECT_TRUE(relative->read_only);

    auto home = parse_volume("~/data:/h:rw", "/", dir_.string());
    ASSERT_TRUE(home) << home.error().to_string();
    EXPECT_EQ(home->host_path, (dir_ / "data").string());
}

TEST_F(ParseVolume, RejectsNamedMissingRelativeGuestAndBadMode) {
    auto named = parse_volume("data:/data", dir_, std::nullopt);
    ASSERT_FALSE(named);
    EXPECT_NE(named.error().message().find("named volumes are not supported"), std::string::npos);
    auto missing = parse_volume((dir_ / "nope").string() + ":/data", "/", std::nullopt);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find("does not exist"), std::string::npos);
    EXPECT_FALSE(parse_volume((dir_ / "data").string() + ":data", "/", std::nullopt));
    EXPECT_FALSE(parse_volume((dir_ / "data").string() + ":/data:rx", "/", std::nullopt));
    EXPECT_FALSE(parse_volume(":/data", "/", std::nullopt));
    EXPECT_FALSE(parse_volume("~/data:/x", "/", std::nullopt));  // no HOME
    EXPECT_FALSE(parse_volume("data", "/", std::nullopt));       // neither a host path nor an absolute box path
}

TEST_F(ParseVolume, AnonymousIsOneAbsoluteBoxPath) {
    auto rw = parse_volume("/scratch", "/", std::nullopt);
    ASSERT_TRUE(rw) << rw.error().to_string();
    EXPECT_EQ(*rw, (VolumeSpec{"", "/scratch", false}));
    EXPECT_TRUE(rw->anonymous());
    auto ro = parse_volume("/cache/x:ro", "/", std::nullopt);
    ASSERT_TRUE(ro) << ro.error().to_string();
    EXPECT_EQ(*ro, (VolumeSpec{"", "/cache/x", true}));
    auto explicit_rw = parse_volume("/w:rw", "/", std::nullopt);
    ASSERT_TRUE(explicit_rw) << explicit_rw.error().to_string();
    EXPECT_FALSE(explicit_rw->read_only);
}

// The CLI's -v goes through the API's checks: the same Config errors, each naming the flag.
TEST_F(ParseVolume, TheApisChecksWithTheirMessages) {
    const auto data = (dir_ / "data").string();
    const std::vector<std::pair<std::string, std::string>> cases = {
        {data + ":/proc", "is on /proc, which the box's kernel interfaces own"},
        {data + ":/sys/fs/x:ro", "is on /sys"},
        {data + ":/dev", "is on /dev"},
        {"/dev/shm", "is on /dev"},
        {data + ":/a/../etc", "must not contain '..'"},
        {data + ":/", "must not be '/'"},
        {(dir_ / "nope").string() + ":/data", "does not exist; create it first"},
    };
    for (const auto& [spec, expected] : cases) {
        auto parsed = parse_volume(spec, "/", std::nullopt);
        ASSERT_FALSE(parsed) << spec;
        EXPECT_EQ(parsed.error().kind(), ErrorKind::Config) << spec;
        EXPECT_NE(parsed.error().message().find(expected), std::string::npos)
            << spec << ": " << parsed.error().message();
        EXPECT_NE(parsed.error().message().find("--volume '" + spec + "'"), std::string::npos)
            << parsed.error().message();
    }
}

TEST(ParseSizes, Memory) {
    EXPECT_EQ(parse_memory_mib("512").value(), 512U);
    EXPECT_EQ(parse_memory_mib("512m").value(), 512U);
    EXPECT_EQ(parse_memory_mib("512MiB").value(), 512U);
    EXPECT_EQ(parse_memory_mib("2g").value(), 2048U);
    EXPECT_EQ(parse_memory_mib("2GB").value(), 2048U);
    EXPECT_EQ(parse_memory_mib("1048576k").value(), 1024U);
    EXPECT_EQ(parse_memory_mib("268435456b").value(), 256U);
    for (const char* bad : {"", "m", "1.5g", "-1", "12q", "100k", "1x", "99999999999999999999999g", "1 g"}) {
        EXPECT_FALSE(parse_memory_mib(bad)) << bad;
    }
}

TEST(ParseSizes, DiskAndCpus) {
    EXPECT_EQ(parse_disk_size_gb("10").value(), 10U);
    EXPECT_EQ(parse_disk_size_gb("10g").value(), 10U);
    EXPECT_EQ(parse_disk_size_gb("1t").value(), 1024U);
    EXPECT_EQ(parse_disk_size_gb("2048m").value(), 2U);
    EXPECT_FALSE(parse_disk_size_gb("1500m"));
    EXPECT_FALSE(parse_disk_size_gb("ten"));
    EXPECT_EQ(parse_cpus("4").value(), 4U);
    for (const char* bad : {"0", "-1", "1.5", "256", "", "two"}) EXPECT_FALSE(parse_cpus(bad)) << bad;
}

TEST(ParseEnums, NetworkAndEngine) {
    EXPECT_EQ(parse_network_mode("enabled").value(), NetworkMode::Enabled);
    EXPECT_EQ(parse_network_mode("disabled").value(), NetworkMode::Disabled);
    EXPECT_FALSE(parse_network_mode("none"));
    for (auto name : {"auto", "kvm", "qemu", "namespace"}) {
        auto engine = parse_engine(name);
        ASSERT_TRUE(engine);
        EXPECT_EQ(to_string(*engine), name);
    }
    auto bad = parse_engine("docker");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find("auto, kvm, qemu or namespace"), std::string::npos);
}

TEST(ParseCopy, ExactlyOneSideIsABox) {
    auto in = parse_copy("./file.txt", "box1:/tmp/file.txt");
    ASSERT_TRUE(in);
    EXPECT_TRUE(in->into_box);
    EXPECT_EQ(in->box, "box1");
    EXPECT_EQ(in->box_path, "/tmp/file.txt");
    EXPECT_EQ(in->host_path, "./file.txt");

    auto out = parse_copy("01JJNH8ABC:/etc/hosts", "/tmp/out");
    ASSERT_TRUE(out);
    EXPECT_FALSE(out->into_box);
    EXPECT_EQ(out->box, "01JJNH8ABC");

    // A colon after a slash, or a path starting with '.' or '/', is a host path.
    EXPECT_EQ(parse_copy_operand("dir/a:b"), (CopyOperand{std::nullopt, "dir/a:b"}));
    EXPECT_EQ(parse_copy_operand("./a:b"), (CopyOperand{std::nullopt, "./a:b"}));
    EXPECT_EQ(parse_copy_operand("/a:b"), (CopyOperand{std::nullopt, "/a:b"}));

    auto both = parse_copy("a:/x", "b:/y");
    ASSERT_FALSE(both);
    EXPECT_NE(both.error().message().find("exactly one"), std::string::npos);
    EXPECT_FALSE(parse_copy("/a", "/b"));
    EXPECT_FALSE(parse_copy(":/x", "/b"));
    EXPECT_FALSE(parse_copy("box:relative", "/b"));
    EXPECT_FALSE(parse_copy("box:/x", ""));
}

TEST(ExitStatus, BoxExitAndSignals) {
    EXPECT_EQ(exit_status_for(0), 0);
    EXPECT_EQ(exit_status_for(3), 3);
    EXPECT_EQ(exit_status_for(255), 255);
    EXPECT_EQ(exit_status_for(300), 255);
    EXPECT_EQ(exit_status_for(-9), 137);
    EXPECT_EQ(exit_status_for(-15), 143);
    EXPECT_EQ(exit_status_for(-2), 130);
}

}  // namespace
}  // namespace boxlite::cli

namespace boxlite::cli {
namespace {

// Random strings over the characters these grammars care about: nothing crashes, and whatever
// is accepted is within the documented ranges.
TEST(ParseFuzz, RandomInputIsAcceptedOnlyWhenValid) {
    std::mt19937 rng(12345);
    const std::string alphabet = "0123456789:/[].-_abcdgkmtuprocwxyzAB=~ \t";
    auto random_text = [&] {
        std::string text(rng() % 24, ' ');
        for (char& c : text) c = alphabet[rng() % alphabet.size()];
        return text;
    };
    const auto lookup = [](const std::string&) -> std::optional<std::string> { return "v"; };
    for (int i = 0; i < 20000; ++i) {
        const auto text = random_text();
        if (auto port = parse_port(text)) {
            EXPECT_GE(port->guest_port, 1) << text;
            EXPECT_TRUE(!port->host_port || *port->host_port >= 1) << text;
        }
        if (auto mib = parse_memory_mib(text)) {
            EXPECT_FALSE(text.empty());
        }
        (void)parse_disk_size_gb(text);
        (void)parse_cpus(text);
        (void)parse_volume(text, "/", std::string("/root"));
        if (auto env = parse_env(text, lookup); env && *env) {
            EXPECT_FALSE((*env)->first.empty()) << text;
        }
        const auto operand = parse_copy_operand(text);
        if (operand.box) {
            EXPECT_EQ(*operand.box + ":" + operand.path, text);
        }
    }
}

}  // namespace
}  // namespace boxlite::cli
