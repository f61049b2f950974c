// Hostile input for the parsers that read what other processes, files and users write:
// stored JSON records, timestamps, ids, sizes and allow_net patterns. Seeds are valid inputs;
// each round mutates one (flip, insert, delete, truncate, splice) and parses it. Nothing may
// crash, hang or throw (ASan/UBSan builds check the rest). Deterministic: fixed seed.
#include <boxlite/boxlite.hpp>

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace boxlite {
namespace {

std::string mutate(std::string text, std::mt19937_64& rng, const std::vector<std::string>& seeds) {
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
        const std::size_t pos = text.empty() ? 0 : rng() % (text.size() + 1);
        switch (rng() % 6) {
            case 0:
                if (!text.empty() && pos < text.size()) text[pos] = static_cast<char>(text[pos] ^ (1 << (rng() % 8)));
                break;
            case 1: text.insert(pos, 1, static_cast<char>(rng() % 256)); break;
            case 2:
                if (pos < text.size()) text.erase(pos, 1 + rng() % 8);
                break;
            case 3: text.resize(pos); break;
            case 4: {
                const auto& other = seeds[rng() % seeds.size()];
                const std::size_t from = other.empty() ? 0 : rng() % other.size();
                text.insert(pos, other.substr(from, 1 + rng() % 16));
                break;
            }
            default: {
                static const char* tokens[] = {
                    "{",       "}",          "[", "]", "\"", ":", ",", "null", "-1", "1e999", "18446744073709551616",
                    "\\u0000", "\"\\ud800\""};
                text.insert(pos, tokens[rng() % std::size(tokens)]);
            }
        }
    }
    return text;
}

template <class F>
void fuzz(const std::vector<std::string>& seeds, int rounds, F&& parse) {
    std::mt19937_64 rng(0xB0C5117E);
    for (const auto& seed : seeds) parse(seed);
    for (int i = 0; i < rounds; ++i) {
        const auto input = mutate(seeds[rng() % seeds.size()], rng, seeds);
        parse(input);
    }
}

TEST(Fuzz, StoredRecordsNeverCrashOrThrow) {
    BoxConfig config;
    config.name = "fuzz";
    config.engine = "mock";
    config.options.env = {{"A", "1"}};
    config.options.ports = {PortSpec{8080, 80, PortProtocol::Tcp, "0.0.0.0"}};
    config.options.volumes = {{"/tmp", "/data", true}};
    config.options.secrets = {Secret{"T", "v", {"a.com"}, ""}};
    BoxState state;
    state.status = BoxStatus::Running;
    state.handle = EngineHandle{1, 2, "unix:/x", {}};
    state.started_at = std::chrono::system_clock::now();
    const std::vector<std::string> seeds = {to_json_text(config), to_json_text(state), "{}", "[]"};
    std::size_t accepted = 0;
    fuzz(seeds, 20000, [&](const std::string& text) {
        EXPECT_NO_THROW({
            if (parse_json_as<BoxConfig>(text, "config")) ++accepted;
            (void)parse_json_as<BoxState>(text, "state");
        });
    });
    EXPECT_GT(accepted, 0U);
}

TEST(Fuzz, SmallParsersNeverCrash) {
    const std::vector<std::string> seeds = {"2026-01-02T03:04:05.123456789Z",
                                            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                                            "512MiB",
                                            "*.example.com",
                                            "10.0.0.0/8",
                                            "fd00::/8",
                                            "30s"};
    fuzz(seeds, 20000, [](const std::string& text) {
        (void)detail::parse_rfc3339(text);
        (void)BoxID::parse(text);
        (void)BoxID::is_valid_prefix(text);
        (void)ContainerID::parse(text);
        (void)Bytes::parse(text);
        (void)Seconds::parse(text);
        (void)validate_allow_net_pattern(text);
        (void)parse_engine_kind(text);
    });
}

}  // namespace
}  // namespace boxlite
