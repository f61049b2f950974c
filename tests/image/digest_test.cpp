// SHA-256 (lib/image/digest.hpp): OpenSSL's, loaded on first use, and the portable fallback give
// the standard's digests and the same digest for any input split into any updates.
#include "image/digest.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace boxlite::image {
namespace {

std::string digest_of(Sha256::Backend backend, std::string_view data) {
    Sha256 hash(backend);
    hash.update(data);
    return hash.finish();
}

TEST(Sha256, GivesTheStandardsDigestsWithEitherBackend) {
    const std::string million_a(1'000'000, 'a');
    const std::pair<std::string_view, std::string_view> vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {million_a, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
    };
    for (const auto backend : {Sha256::Backend::Best, Sha256::Backend::Portable}) {
        for (const auto& [input, hex] : vectors) {
            EXPECT_EQ(digest_of(backend, input), "sha256:" + std::string(hex)) << input.size() << " bytes";
        }
    }
}

TEST(Sha256, UsesOpenSslWhereLibcryptoLoadsAndNotWhenAskedForThePortableOne) {
    EXPECT_TRUE(Sha256().uses_openssl()) << "libcrypto.so.3 is installed here (openssl is a dependency)";
    EXPECT_FALSE(Sha256(Sha256::Backend::Portable).uses_openssl());
}

TEST(Sha256, BothBackendsAgreeOnEveryLengthAndEverySplit) {
    std::mt19937 random(20261206);
    std::string data(600, '\0');
    for (auto& c : data) c = static_cast<char>(random());
    // Every length across the padding's edges (55, 56, 63, 64, 119, 120 …), one update each.
    for (std::size_t length = 0; length <= data.size(); ++length) {
        const std::string_view part(data.data(), length);
        ASSERT_EQ(digest_of(Sha256::Backend::Portable, part), digest_of(Sha256::Backend::Best, part)) << length;
    }
    // The same bytes in updates of random sizes, and a hasher reused after reset().
    Sha256 portable(Sha256::Backend::Portable);
    for (int round = 0; round < 50; ++round) {
        portable.reset();
        std::size_t at = 0;
        while (at < data.size()) {
            const std::size_t take = std::min<std::size_t>(data.size() - at, random() % 150);
            portable.update(data.data() + at, take);
            at += take;
        }
        ASSERT_EQ(portable.finish(), digest_of(Sha256::Backend::Best, data)) << "round " << round;
    }
}

}  // namespace
}  // namespace boxlite::image
