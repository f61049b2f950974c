// A BlockBackend over a std::vector: the in-test disk for device tests that need no file.
#pragma once

#include "qcow2/block_backend.hpp"

#include <cstring>
#include <vector>

namespace boxlite::devices::testing {

class MemoryBackend final : public block::BlockBackend {
public:
    explicit MemoryBackend(std::uint64_t size, bool read_only = false) : data_(size), read_only_(read_only) {}
    std::uint64_t size() const noexcept override { return data_.size(); }
    bool read_only() const noexcept override { return read_only_; }
    BoxliteResult<void> read(std::uint64_t offset, std::span<const iovec> buffers) override {
        for (const auto& iov : buffers) {
            if (offset > data_.size() || iov.iov_len > data_.size() - offset)
                return fail(ErrorKind::InvalidArgument, "read past the end");
            std::memcpy(iov.iov_base, data_.data() + offset, iov.iov_len);
            offset += iov.iov_len;
        }
        return {};
    }
    BoxliteResult<void> write(std::uint64_t offset, std::span<const iovec> buffers) override {
        for (const auto& iov : buffers) {
            if (offset > data_.size() || iov.iov_len > data_.size() - offset)
                return fail(ErrorKind::InvalidArgument, "write past the end");
            std::memcpy(data_.data() + offset, iov.iov_base, iov.iov_len);
            offset += iov.iov_len;
        }
        return {};
    }
    BoxliteResult<void> flush() override {
        ++flushes;
        return {};
    }
    BoxliteResult<void> discard(std::uint64_t offset, std::uint64_t length) override {
        return write_zeroes(offset, length);
    }
    BoxliteResult<void> write_zeroes(std::uint64_t offset, std::uint64_t length) override {
        if (offset > data_.size() || length > data_.size() - offset)
            return fail(ErrorKind::InvalidArgument, "zeroes past the end");
        std::memset(data_.data() + offset, 0, length);
        return {};
    }
    std::vector<unsigned char>& data() { return data_; }
    int flushes = 0;

private:
    std::vector<unsigned char> data_;
    bool read_only_;
};

}  // namespace boxlite::devices::testing
