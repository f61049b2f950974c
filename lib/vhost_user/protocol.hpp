// The vhost-user protocol (QEMU's docs/interop/vhost-user.rst), the parts a device back end needs.
//
// ---- Primer --------------------------------------------------------------------------------
// A frontend (QEMU) owns the virtual machine; a back end (us) owns a virtio device's data path.
// They talk over a Unix stream socket in messages: a 12-byte header (request, flags, payload
// size), then the payload; file descriptors travel beside a message as SCM_RIGHTS.
//
//   set-up    GET_FEATURES / SET_FEATURES negotiate the virtio feature bits (bit 30 says that
//             protocol features exist); GET/SET_PROTOCOL_FEATURES negotiate the protocol's own
//             options (REPLY_ACK, CONFIG, ...); SET_OWNER opens the session.
//   memory    SET_MEM_TABLE sends guest RAM as up to 8 regions, each with a memfd: guest physical
//             address, size, the frontend's own virtual address of it, and the offset in the fd.
//   rings     per queue: SET_VRING_NUM (size), SET_VRING_ADDR (the descriptor table and both
//             rings, as the FRONTEND's virtual addresses: we translate them through the memory
//             table), SET_VRING_BASE (the next available index), SET_VRING_KICK (an eventfd the
//             guest's notifications arrive on: the ring is now started), SET_VRING_CALL (an
//             eventfd we write to interrupt the guest), SET_VRING_ERR. With protocol features
//             a started ring still waits for SET_VRING_ENABLE 1.
//   stop      GET_VRING_BASE stops a ring and asks where it stopped (the next available index),
//             so a later start resumes there.
//   config    GET_CONFIG/SET_CONFIG read and write the device's config space.
//   reset     RESET_OWNER / RESET_DEVICE forget the session's rings and features.
//
// Replies carry flag 0x4. A message with NEED_REPLY (0x8), once REPLY_ACK is negotiated, gets a
// u64 status (0 = success) unless it already has a reply of its own.
//
// Everything a frontend sends is bounded here before use: payload sizes, fd counts, ring
// indices, ring sizes, region counts and geometry. QEMU runs guest-facing emulation (TCG), so
// we treat it as the guest's ally, not ours.
#pragma once

#include <cstdint>
#include <string_view>

namespace boxlite::vhost_user {

enum class Request : std::uint32_t {
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    GetConfig = 24,
    SetConfig = 25,
    ResetDevice = 34,
};

/// A request's name as the specification spells it ("SET_MEM_TABLE"), or "unknown".
[[nodiscard]] constexpr std::string_view request_name(Request request) noexcept {
    switch (request) {
        case Request::GetFeatures: return "GET_FEATURES";
        case Request::SetFeatures: return "SET_FEATURES";
        case Request::SetOwner: return "SET_OWNER";
        case Request::ResetOwner: return "RESET_OWNER";
        case Request::SetMemTable: return "SET_MEM_TABLE";
        case Request::SetLogBase: return "SET_LOG_BASE";
        case Request::SetLogFd: return "SET_LOG_FD";
        case Request::SetVringNum: return "SET_VRING_NUM";
        case Request::SetVringAddr: return "SET_VRING_ADDR";
        case Request::SetVringBase: return "SET_VRING_BASE";
        case Request::GetVringBase: return "GET_VRING_BASE";
        case Request::SetVringKick: return "SET_VRING_KICK";
        case Request::SetVringCall: return "SET_VRING_CALL";
        case Request::SetVringErr: return "SET_VRING_ERR";
        case Request::GetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
        case Request::SetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
        case Request::GetQueueNum: return "GET_QUEUE_NUM";
        case Request::SetVringEnable: return "SET_VRING_ENABLE";
        case Request::GetConfig: return "GET_CONFIG";
        case Request::SetConfig: return "SET_CONFIG";
        case Request::ResetDevice: return "RESET_DEVICE";
    }
    return "unknown";
}
[[nodiscard]] constexpr std::string_view request_name(std::uint32_t request) noexcept {
    return request_name(static_cast<Request>(request));
}

inline constexpr std::uint32_t kVersion = 0x1;
inline constexpr std::uint32_t kVersionMask = 0x3;
inline constexpr std::uint32_t kFlagReply = 0x4;
inline constexpr std::uint32_t kFlagNeedReply = 0x8;

/// Virtio feature bit 30 in GET_FEATURES: the back end speaks protocol features.
inline constexpr std::uint64_t kFeatureProtocolFeatures = 1ULL << 30;

// Protocol feature bits.
inline constexpr std::uint64_t kProtocolMq = 1ULL << 0;
inline constexpr std::uint64_t kProtocolReplyAck = 1ULL << 3;
inline constexpr std::uint64_t kProtocolConfig = 1ULL << 9;
inline constexpr std::uint64_t kProtocolResetDevice = 1ULL << 13;

/// The size of the header.
inline constexpr std::uint32_t kHeaderSize = 12;
/// The largest payload we accept: a config message (12 + 256) and the memory table
/// (8 + 8 × 32) fit with room to spare.
inline constexpr std::uint32_t kMaxPayload = 512;
/// Memory regions in one table (QEMU's VHOST_MEMORY_BASELINE_NREGIONS).
inline constexpr std::uint32_t kMaxRegions = 8;
/// File descriptors beside one message (at most one per region).
inline constexpr std::uint32_t kMaxFds = kMaxRegions;
/// Largest config space a GET_CONFIG may read (virtio-mmio's device config window is 256 bytes).
inline constexpr std::uint32_t kMaxConfigSize = 256;

/// SET_VRING_KICK/CALL/ERR: the low byte is the ring; this bit says "no fd" (polling mode).
inline constexpr std::uint64_t kVringIndexMask = 0xff;
inline constexpr std::uint64_t kVringNoFd = 0x100;

struct Header {
    std::uint32_t request;
    std::uint32_t flags;
    std::uint32_t size;
};
static_assert(sizeof(Header) == kHeaderSize);

struct VringState {
    std::uint32_t index;
    std::uint32_t num;
};
static_assert(sizeof(VringState) == 8);

struct VringAddr {
    std::uint32_t index;
    std::uint32_t flags;
    std::uint64_t desc_user_addr;
    std::uint64_t used_user_addr;
    std::uint64_t avail_user_addr;
    std::uint64_t log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40);

struct MemoryRegionDesc {
    std::uint64_t guest_phys_addr;
    std::uint64_t memory_size;
    std::uint64_t userspace_addr;
    std::uint64_t mmap_offset;
};
static_assert(sizeof(MemoryRegionDesc) == 32);

struct MemoryTableHeader {
    std::uint32_t nregions;
    std::uint32_t padding;
};

struct ConfigHeader {
    std::uint32_t offset;
    std::uint32_t size;
    std::uint32_t flags;
};
static_assert(sizeof(ConfigHeader) == 12);

}  // namespace boxlite::vhost_user
