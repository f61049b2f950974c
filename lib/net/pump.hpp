// The frame pump: moves Ethernet frames between a box's network device and passt, through the
// egress firewall.
//
//   box side    a descriptor that carries one frame per read() and write(): a tap device in the
//               box's network namespace (namespace engine), or a datagram socket (tests; a VM
//               engine's device model can hand its frames over the same way). A tap opened with
//               IFF_VNET_HDR (BoxFraming::VnetHeader) puts a 10-byte virtio_net_hdr before each
//               frame both ways: the pump hands the box's TCP segments over as partial checksums
//               (passt computed them, and they crossed no wire), so the box's stack does not sum
//               every byte again; frames from the box with any offload flag set are dropped (the
//               tap offers the box no offloads, so the kernel never makes one).
//   passt side  passt's UNIX stream socket, frames with a 4-byte length prefix (stream_framing.hpp).
//
// Buffers are bounded: at most kMaxPending bytes wait for passt; while that is full the pump
// stops reading the box (the tap's own queue then drops, like a NIC). A frame for the box that
// the device cannot take at once is dropped, as a NIC would. A length prefix out of range from
// passt ends the pump (the stream cannot be resynchronised).
//
// Towards passt every write() holds whole frames only, at most kMaxAtomicWrite bytes (or one
// larger frame alone, whose rest is written before anything else): a UNIX stream socket queues
// such a write as one buffer, whole or not at all, so passt never finds a frame cut. Debian 12's
// passt (2023-03) loses the stream's framing when a read ends inside a frame (a length prefix
// cut: its bytes are discarded; a frame whose rest is not yet queued: the frame is dropped and
// its rest read as the next length), which stalled or reset the box's connections
// (docs/networking.md, "The stream to passt").
#pragma once

#include "net/firewall.hpp"
#include "net/stream_framing.hpp"

#include <boxlite/error.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace boxlite::net {

struct PumpStats {
    std::uint64_t frames_to_passt = 0;
    std::uint64_t frames_to_box = 0;
    std::uint64_t frames_dropped_to_box = 0;
    std::uint64_t rejections_sent = 0;
};

/// What the box descriptor carries per read()/write(): a bare Ethernet frame, or a 10-byte
/// virtio_net_hdr and the frame (a tap opened with IFF_VNET_HDR).
enum class BoxFraming : std::uint8_t { Plain, VnetHeader };

class FramePump {
public:
    static constexpr std::size_t kMaxPending = 1024 * 1024;
    /// Bytes read from one side per wake-up, at most (then the other side has its turn).
    static constexpr std::size_t kBatchBytes = 256 * 1024;
    /// The most one write() to passt carries (whole frames): one frame of the namespace engine's
    /// MTU 32768 with its Ethernet header and length prefix. A UNIX stream socket's buffers hold
    /// 32 KiB of pages plus a head of about 3.5 KiB, so such a write is one buffer.
    static constexpr std::size_t kMaxAtomicWrite = 4 + 14 + 32768;

    /// Neither descriptor is owned; both are made non-blocking.
    FramePump(int box_fd, int passt_fd, EgressFirewall& firewall, BoxFraming box_framing = BoxFraming::Plain);

    /// Pumps until `stop_fd` (an eventfd or pipe, or -1) becomes readable — Ok — or passt closes
    /// its socket — Ok — or a descriptor fails — an Internal error naming it.
    [[nodiscard]] BoxliteResult<void> run(int stop_fd);

    [[nodiscard]] const PumpStats& stats() const noexcept { return stats_; }

    /// Queues a frame for passt as if the box had sent it, bypassing the firewall (the shim's own
    /// frames: an ARP request that teaches passt the box's MAC before anything comes in).
    void queue_to_passt(std::span<const std::uint8_t> frame) { append_stream_frame(pending_, frame); }

private:
    BoxliteResult<bool> read_box();
    BoxliteResult<bool> read_passt();
    BoxliteResult<void> write_passt();
    void send_to_box(std::span<std::uint8_t> frame);

    int box_fd_;
    int passt_fd_;
    EgressFirewall& firewall_;
    BoxFraming box_framing_;
    std::vector<std::uint8_t> pending_;  // encoded frames waiting for passt
    std::size_t pending_sent_ = 0;
    // The end of the last write a short write cut (a frame larger than kMaxAtomicWrite): the
    // next write finishes it alone. 0 when none is cut.
    std::size_t pending_cut_end_ = 0;
    std::vector<std::uint8_t> frame_;  // one frame read from the box
    std::vector<std::uint8_t> reply_;
    // Bytes read from passt, kBatchBytes at a time; frames are checked and written to the box
    // where they lie (no copy). [0, passt_kept_) is the start of a frame the last read cut, moved
    // to the front: less than one frame, so the buffer holds it and a whole batch.
    std::vector<std::uint8_t> scratch_;
    std::size_t passt_kept_ = 0;
    PumpStats stats_;
};

}  // namespace boxlite::net
