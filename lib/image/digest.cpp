// SHA-256 (see digest.hpp).
#include "digest.hpp"

#include "dynamic_libs.hpp"

#include <cstring>

namespace boxlite::image {

namespace {

constexpr std::array<std::uint32_t, 64> kRoundConstants = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

std::string hex_digest(const unsigned char* bytes, std::size_t length) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string text = "sha256:";
    for (std::size_t i = 0; i < length; ++i) {
        text += kHex[bytes[i] >> 4];
        text += kHex[bytes[i] & 0xf];
    }
    return text;
}

}  // namespace

void PortableSha256::reset() {
    state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    used_ = 0;
    length_ = 0;
}

void PortableSha256::compress(const unsigned char* block) {
    std::array<std::uint32_t, 64> w{};
    for (std::size_t i = 0; i < 16; ++i) {
        w[i] = static_cast<std::uint32_t>(block[4 * i]) << 24 | static_cast<std::uint32_t>(block[4 * i + 1]) << 16 |
               static_cast<std::uint32_t>(block[4 * i + 2]) << 8 | static_cast<std::uint32_t>(block[4 * i + 3]);
    }
    for (std::size_t i = 16; i < 64; ++i) {
        const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = state_;
    for (std::size_t i = 0; i < 64; ++i) {
        const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                                 kRoundConstants[i] + w[i];
        const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    const std::array<std::uint32_t, 8> add = {a, b, c, d, e, f, g, h};
    for (std::size_t i = 0; i < 8; ++i) state_[i] += add[i];
}

void PortableSha256::update(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    length_ += size;
    if (used_ > 0) {
        const std::size_t take = std::min(size, block_.size() - used_);
        std::memcpy(block_.data() + used_, bytes, take);
        used_ += take;
        bytes += take;
        size -= take;
        if (used_ < block_.size()) return;
        compress(block_.data());
        used_ = 0;
    }
    for (; size >= block_.size(); bytes += block_.size(), size -= block_.size()) compress(bytes);
    if (size > 0) {
        std::memcpy(block_.data(), bytes, size);
        used_ = size;
    }
}

std::array<unsigned char, 32> PortableSha256::finish() {
    const std::uint64_t bits = length_ * 8;
    // 0x80, zeros up to 56 bytes into a block, then the length in bits, big-endian.
    std::array<unsigned char, 72> padding{};
    padding[0] = 0x80;
    const std::size_t pad = (used_ < 56 ? 56 : 120) - used_;
    for (std::size_t i = 0; i < 8; ++i) padding[pad + i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(padding.data(), pad + 8);
    std::array<unsigned char, 32> out{};
    for (std::size_t i = 0; i < 8; ++i) {
        out[4 * i] = static_cast<unsigned char>(state_[i] >> 24);
        out[4 * i + 1] = static_cast<unsigned char>(state_[i] >> 16);
        out[4 * i + 2] = static_cast<unsigned char>(state_[i] >> 8);
        out[4 * i + 3] = static_cast<unsigned char>(state_[i]);
    }
    return out;
}

Sha256::Sha256(Backend backend) {
    if (backend == Backend::Best) {
        if (auto api = dynamic::libcrypto(); api) {
            api_ = *api;
            ctx_ = api_->EVP_MD_CTX_new();
        }
    }
    reset();
}

Sha256::~Sha256() {
    if (ctx_ != nullptr) api_->EVP_MD_CTX_free(ctx_);
}

void Sha256::reset() {
    if (ctx_ != nullptr) {
        api_->EVP_DigestInit_ex(ctx_, api_->EVP_sha256(), nullptr);
    } else {
        portable_.reset();
    }
}

void Sha256::update(const void* data, std::size_t size) {
    if (ctx_ != nullptr) {
        api_->EVP_DigestUpdate(ctx_, data, size);
    } else {
        portable_.update(data, size);
    }
}

std::string Sha256::finish() {
    if (ctx_ != nullptr) {
        unsigned char out[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        api_->EVP_DigestFinal_ex(ctx_, out, &length);
        return hex_digest(out, length);
    }
    const auto out = portable_.finish();
    return hex_digest(out.data(), out.size());
}

}  // namespace boxlite::image
