// SHA-256: every blob that reaches the store is verified with it.
//
// OpenSSL's implementation (libcrypto, loaded on first use: dynamic_libs.hpp) wherever libcrypto
// can be loaded, so a process that never hashes (every `boxlite exec`, `ls`, `run` of a rootfs
// directory) does not load it; the portable one below (FIPS 180-4) where it cannot, so hashing
// never fails. Both give the same digests (tests/image/digest_test.cpp).
#pragma once

#include <boxlite/error.hpp>

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace boxlite::image {

namespace dynamic {
struct CryptoApi;
}

/// FIPS 180-4 SHA-256 in plain C++: Sha256's fallback, and the reference its tests compare with.
class PortableSha256 {
public:
    PortableSha256() { reset(); }
    void reset();
    void update(const void* data, std::size_t size);
    /// The 32 bytes of the digest; reset() before reuse.
    [[nodiscard]] std::array<unsigned char, 32> finish();

private:
    void compress(const unsigned char* block);

    std::array<std::uint32_t, 8> state_{};
    std::array<unsigned char, 64> block_{};
    std::size_t used_ = 0;      ///< bytes of block_ filled
    std::uint64_t length_ = 0;  ///< bytes hashed in all
};

class Sha256 {
public:
    enum class Backend { Best, Portable };
    /// Best: OpenSSL's where libcrypto loads, the portable one otherwise. Portable: for tests.
    explicit Sha256(Backend backend = Backend::Best);
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void reset();
    void update(const void* data, std::size_t size);
    void update(std::string_view data) { update(data.data(), data.size()); }
    /// "sha256:<64 hex>"; the hasher must be reset() before reuse.
    [[nodiscard]] std::string finish();
    /// Whether this hasher is OpenSSL's (for tests and diagnostics).
    [[nodiscard]] bool uses_openssl() const noexcept { return ctx_ != nullptr; }

private:
    const dynamic::CryptoApi* api_ = nullptr;
    EVP_MD_CTX* ctx_ = nullptr;  ///< null: portable_ hashes
    PortableSha256 portable_;
};

[[nodiscard]] inline std::string sha256_digest(std::string_view data) {
    Sha256 hash;
    hash.update(data);
    return hash.finish();
}

/// The hex part of a validated "sha256:<hex>" digest.
[[nodiscard]] inline std::string_view digest_hex(std::string_view digest) {
    const auto colon = digest.find(':');
    return colon == std::string_view::npos ? digest : digest.substr(colon + 1);
}

/// Hashes a file; `size` receives its length.
[[nodiscard]] BoxliteResult<std::string> sha256_file(const std::filesystem::path& path, std::uint64_t* size = nullptr);

}  // namespace boxlite::image
