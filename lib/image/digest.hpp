// SHA-256 over OpenSSL's EVP interface: every blob that reaches the store is verified with it.
#pragma once

#include <boxlite/error.hpp>

#include <openssl/evp.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace boxlite::image {

class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) { reset(); }
    void reset() { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
    void update(const void* data, std::size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
    void update(std::string_view data) { update(data.data(), data.size()); }
    /// "sha256:<64 hex>"; the hasher must be reset() before reuse.
    [[nodiscard]] std::string finish() {
        unsigned char out[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        EVP_DigestFinal_ex(ctx_.get(), out, &length);
        static constexpr char kHex[] = "0123456789abcdef";
        std::string text = "sha256:";
        for (unsigned int i = 0; i < length; ++i) {
            text += kHex[out[i] >> 4];
            text += kHex[out[i] & 0xf];
        }
        return text;
    }

private:
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
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
