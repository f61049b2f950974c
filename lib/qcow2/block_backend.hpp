// BlockBackend: what a block device (virtio-blk, served by our VMM or over vhost-user) reads and
// writes. Implementations: RawFile (a plain file or block device) and Qcow2Image (lib/qcow2).
//
// Offsets and lengths are in bytes; callers (the virtio-blk device) pass 512-byte aligned
// requests, but implementations accept any offset and length. Every call is synchronous.
// `submit` is the async-friendly entry point: it completes the request — possibly later, on
// another thread — and calls `done` exactly once; the default runs it inline.
//
// Thread safety (required of every implementation; RawFile and Qcow2Image meet it): any method
// may be called from any thread, concurrently with any other method on the same backend — a
// device worker thread and vCPU threads may share one. Each call behaves as if it ran alone (Qcow2Image serializes calls with an internal mutex;
// RawFile needs none, its requests are single positional syscalls). Requests in flight together
// complete in an unspecified order, so overlapping writes land in some order and a flush covers
// every write that completed before it was called. The iovecs must stay valid until the call
// returns (for submit: until `done` runs). Destruction must not race with any call.
#pragma once

#include <boxlite/error.hpp>

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>
#include <utility>

namespace boxlite::block {

enum class RequestType : std::uint8_t { Read, Write, Flush, Discard, WriteZeroes };

struct Request {
    RequestType type = RequestType::Read;
    std::uint64_t offset = 0;
    /// Read/Write: the guest buffers. Discard/WriteZeroes: unused (see `length`).
    std::span<const iovec> buffers;
    /// Discard/WriteZeroes: the byte count. Read/Write: ignored (the iovecs' total).
    std::uint64_t length = 0;
};

class BlockBackend {
public:
    virtual ~BlockBackend() = default;
    BlockBackend() = default;
    BlockBackend(const BlockBackend&) = delete;
    BlockBackend& operator=(const BlockBackend&) = delete;

    /// Virtual size in bytes.
    [[nodiscard]] virtual std::uint64_t size() const noexcept = 0;
    [[nodiscard]] virtual bool read_only() const noexcept = 0;

    /// Fills the iovecs from `offset`; reading past size() is an InvalidArgument error.
    virtual BoxliteResult<void> read(std::uint64_t offset, std::span<const iovec> buffers) = 0;
    virtual BoxliteResult<void> write(std::uint64_t offset, std::span<const iovec> buffers) = 0;
    /// Makes every completed write durable (data and metadata).
    virtual BoxliteResult<void> flush() = 0;
    /// The range may read back as zeroes afterwards and its space may be freed.
    virtual BoxliteResult<void> discard(std::uint64_t offset, std::uint64_t length) = 0;
    /// The range reads back as zeroes afterwards.
    virtual BoxliteResult<void> write_zeroes(std::uint64_t offset, std::uint64_t length) = 0;

    /// Async-friendly entry point. The default runs the request synchronously.
    virtual void submit(const Request& request, std::function<void(BoxliteResult<void>)> done) {
        done(execute(request));
    }

protected:
    BoxliteResult<void> execute(const Request& request) {
        switch (request.type) {
            case RequestType::Read: return read(request.offset, request.buffers);
            case RequestType::Write: return write(request.offset, request.buffers);
            case RequestType::Flush: return flush();
            case RequestType::Discard: return discard(request.offset, request.length);
            case RequestType::WriteZeroes: return write_zeroes(request.offset, request.length);
        }
        return fail(ErrorKind::InvalidArgument, "unknown block request type");
    }
};

}  // namespace boxlite::block
