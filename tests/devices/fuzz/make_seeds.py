#!/usr/bin/env python3
"""Writes the descriptor-chain fuzzer's seed corpus (corpus/*.bin): well-formed requests for each
device, laid out as descriptor_chain_fuzzer.cpp expects, so mutation starts from inputs that get
past the first checks. Run it from this folder after changing the layout; the seeds are committed.
"""
import struct
from pathlib import Path

RAM = 64 * 1024
STRIDE = 8 * 1024
NEXT, WRITE, INDIRECT = 1, 2, 4
BLK, VSOCK, CONSOLE = 0, 1, 2
EVENT_IDX, INDIRECT_FEATURE = 1, 2


class Ram:
    def __init__(self):
        self.bytes = bytearray(RAM)
        self.end = 0

    def put(self, at, data):
        self.bytes[at:at + len(data)] = data
        self.end = max(self.end, at + len(data))

    def queue(self, index, size, chains, avail_flags=0):
        """chains: lists of (address, length, flags) descriptors, laid out one after another."""
        desc = index * STRIDE
        avail = desc + 16 * size
        used = (avail + 6 + 2 * size + 3) & ~3
        slot, heads = 0, []
        for chain in chains:
            heads.append(slot)
            for n, (address, length, flags) in enumerate(chain):
                last = n == len(chain) - 1
                self.put(desc + 16 * slot, struct.pack("<QIHH", address, length,
                                                       flags | (0 if last else NEXT), 0 if last else slot + 1))
                slot += 1
        self.put(avail, struct.pack("<HH", avail_flags, len(heads)) + b"".join(struct.pack("<H", h) for h in heads))
        self.put(used, bytes(4 + 8 * size + 2))

    def seed(self, log2_size, feature_bits, device):
        return bytes([log2_size, feature_bits | (device << 2)]) + bytes(self.bytes[:self.end])


def vsock_header(op, src_port, dst_port, length=0, buf_alloc=65536, fwd_cnt=0, flags=0, src_cid=3, dst_cid=2):
    return struct.pack("<QQIIIHHIII", src_cid, dst_cid, src_port, dst_port, length, 1, op, flags, buf_alloc, fwd_cnt)


def blk_header(kind, sector):
    return struct.pack("<IIQ", kind, 0, sector)


seeds = {}

# virtio-blk: a write, a read, a flush, a discard of one segment.
r = Ram()
r.put(0x1000, blk_header(1, 1)); r.put(0x1100, bytes(range(256)) * 2)
r.put(0x1400, blk_header(0, 1))
r.put(0x1500, blk_header(4, 0))
r.put(0x1600, blk_header(11, 0)); r.put(0x1610, struct.pack("<QII", 8, 8, 0))
r.queue(0, 8, [[(0x1000, 16, 0), (0x1100, 512, 0), (0x1f00, 1, WRITE)],
               [(0x1400, 16, 0), (0x1800, 512, WRITE), (0x1f01, 1, WRITE)],
               [(0x1500, 16, 0), (0x1f02, 1, WRITE)],
               [(0x1600, 16, 0), (0x1610, 16, 0), (0x1f03, 1, WRITE)]])
seeds["blk_requests"] = r.seed(3, EVENT_IDX, BLK)

# virtio-blk through an indirect table.
r = Ram()
r.put(0x1000, blk_header(0, 0))
r.put(0x1200, struct.pack("<QIHH", 0x1000, 16, NEXT, 1) + struct.pack("<QIHH", 0x1400, 512, NEXT | WRITE, 2)
      + struct.pack("<QIHH", 0x1f00, 1, WRITE, 0))
r.queue(0, 4, [[(0x1200, 48, INDIRECT)]])
seeds["blk_indirect"] = r.seed(2, INDIRECT_FEATURE, BLK)

# virtio-vsock: rx buffers on queue 0; on tx (queue 1) a REQUEST, an RW with payload, a
# CREDIT_REQUEST, a SHUTDOWN and an RST, all for ports nobody listens on.
r = Ram()
rx = [[(0x6000 + 256 * i, 256, WRITE)] for i in range(4)]
r.queue(0, 8, rx)
tx = []
for n, (op, payload, flags) in enumerate([(1, b"", 0), (5, b"hello", 0), (7, b"", 0), (4, b"", 3), (3, b"", 0)]):
    at = 0x7000 + 0x80 * n
    r.put(at, vsock_header(op, 1234, 5000, len(payload), flags=flags))
    if payload:
        r.put(at + 0x40, payload)
        tx.append([(at, 44, 0), (at + 0x40, len(payload), 0)])
    else:
        tx.append([(at, 44, 0)])
r.queue(1, 8, tx)
r.queue(2, 8, [[(0x7800, 8, WRITE)]])
seeds["vsock_packets"] = r.seed(3, EVENT_IDX, VSOCK)

# virtio-console: receive buffers on queue 0, "hello console" to transmit on queue 1.
r = Ram()
r.queue(0, 4, [[(0x5000, 64, WRITE)], [(0x5100, 64, WRITE)]])
r.put(0x5200, b"hello console\n")
r.queue(1, 4, [[(0x5200, 14, 0)]])
seeds["console_io"] = r.seed(2, 0, CONSOLE)

for name, data in seeds.items():
    Path("corpus", name + ".bin").write_bytes(data)
    print(f"corpus/{name}.bin: {len(data)} bytes")
