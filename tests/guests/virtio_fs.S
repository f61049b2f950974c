# virtio_fs: a tiny FUSE client over virtio-fs in the first device window, whose queues a real
# virtiofsd runs (through the VMM's vhost-user frontend). It does the modern handshake for
# device id 26 with the request queue (queue 1, 8 entries), then four FUSE requests, each a
# two-descriptor chain (request: device-readable; reply: device-writable) completed by polling
# the used ring:
#   FUSE_INIT 7.31, FUSE_LOOKUP "hello.txt" in the root (node 1), FUSE_OPEN of the node it
#   found (read-only), FUSE_READ of up to 256 bytes at offset 0 with the handle it got.
# Each reply must echo the request's unique id and carry error 0. The READ reply stays at
# READ_OUT (16-byte header, then the file's bytes) for the test to compare with the file, and
# the bytes are echoed to COM1 (so a test through boxlite-shim-kvm finds them in console.log).
# Result port: 0 = success; 1..7 the handshake (virtio_mmio.inc); 8..21 a step below.
    .code32
    .globl _start

    .equ DESC, kTestGuestScratch + 0x1000
    .equ AVAIL, kTestGuestScratch + 0x2000
    .equ USED, kTestGuestScratch + 0x3000
    .equ INIT_IN, kTestGuestScratch + 0x4000
    .equ INIT_OUT, kTestGuestScratch + 0x4400
    .equ LOOKUP_IN, kTestGuestScratch + 0x4800
    .equ LOOKUP_OUT, kTestGuestScratch + 0x4c00
    .equ OPEN_IN, kTestGuestScratch + 0x5000
    .equ OPEN_OUT, kTestGuestScratch + 0x5400
    .equ READ_IN, kTestGuestScratch + 0x5800
    .equ READ_OUT, kTestGuestScratch + 0x6000

    # FUSE opcodes and sizes (linux/fuse.h).
    .equ FUSE_LOOKUP, 1
    .equ FUSE_OPEN, 14
    .equ FUSE_READ, 15
    .equ FUSE_INIT, 26
    .equ IN_HEADER, 40
    .equ OUT_HEADER, 16
    .equ OUT_SIZE, 0x400                # every reply buffer but READ's fits in 1 KiB
    .equ READ_SIZE, 256

    .include "virtio_mmio.inc"

# Writes a fuse_in_header at \at: total length, opcode, unique id, node id (64-bit: low word).
.macro fuse_header at, length, opcode, unique, node
    movl $\length, \at+0
    movl $\opcode, \at+4
    movl $\unique, \at+8
    movl $0, \at+12
    movl \node, \at+16
    movl $0, \at+20
    movl $0, \at+28                     # uid, gid, pid, extlen: 0 (root)
    movl $0, \at+32
    movl $0, \at+36
    movl $0, \at+24
.endm

# Posts request \k (descriptors 2k, 2k+1: \in of \in_len bytes, \out of \out_len writable),
# notifies queue 1, waits for used index \k+1, checks the reply's unique id and error 0.
# Failure codes \code (no completion), \code+1 (unique), \code+2 (FUSE error).
.macro fuse_call k, in, in_len, out, out_len, unique, code
    movl $\in, DESC+32*\k+0
    movl $0, DESC+32*\k+4
    movl $\in_len, DESC+32*\k+8
    movw $1, DESC+32*\k+12              # NEXT
    movw $2*\k+1, DESC+32*\k+14
    movl $\out, DESC+32*\k+16
    movl $0, DESC+32*\k+20
    movl $\out_len, DESC+32*\k+24
    movw $2, DESC+32*\k+28              # WRITE
    movw $0, DESC+32*\k+30
    movw $2*\k, AVAIL+4+2*\k            # ring[k] = head 2k
    movw $\k+1, AVAIL+2                 # idx
    movl $1, MMIO+MMIO_QUEUE_NOTIFY     # QueueNotify(1): the request queue
    wait_used USED, \k+1, \code
    mov \out+8, %eax
    fail_unless_eq $\unique, \code+1
    mov \out+4, %eax
    fail_unless_eq $0, \code+2
.endm

_start:
    virtio_handshake 26, 1, DESC, AVAIL, USED

    # FUSE_INIT: major 7, minor 31, max_readahead 0, flags 0.
    fuse_header INIT_IN, IN_HEADER+16, FUSE_INIT, 1, $0
    movl $7, INIT_IN+40
    movl $31, INIT_IN+44
    movl $0, INIT_IN+48
    movl $0, INIT_IN+52
    fuse_call 0, INIT_IN, IN_HEADER+16, INIT_OUT, OUT_SIZE, 1, 8
    mov INIT_OUT+16, %eax               # the server's major version
    fail_unless_eq $7, 11

    # FUSE_LOOKUP "hello.txt" (10 bytes with its NUL) in node 1.
    fuse_header LOOKUP_IN, IN_HEADER+10, FUSE_LOOKUP, 2, $1
    movl $0x6c6c6568, LOOKUP_IN+40      # "hell"
    movl $0x78742e6f, LOOKUP_IN+44      # "o.tx"
    movw $0x0074, LOOKUP_IN+48          # "t\0"
    fuse_call 1, LOOKUP_IN, IN_HEADER+10, LOOKUP_OUT, OUT_SIZE, 2, 12

    # FUSE_OPEN of the node LOOKUP returned (fuse_entry_out.nodeid at 16), O_RDONLY.
    mov LOOKUP_OUT+16, %eax
    mov LOOKUP_OUT+20, %edx
    fuse_header OPEN_IN, IN_HEADER+8, FUSE_OPEN, 3, %eax
    movl %edx, OPEN_IN+20
    movl $0, OPEN_IN+40
    movl $0, OPEN_IN+44
    fuse_call 2, OPEN_IN, IN_HEADER+8, OPEN_OUT, OUT_SIZE, 3, 15

    # FUSE_READ: fh (fuse_open_out.fh at 16), offset 0, READ_SIZE bytes.
    mov LOOKUP_OUT+16, %eax
    mov LOOKUP_OUT+20, %edx
    fuse_header READ_IN, IN_HEADER+40, FUSE_READ, 4, %eax
    movl %edx, READ_IN+20
    mov OPEN_OUT+16, %eax
    mov %eax, READ_IN+40
    mov OPEN_OUT+20, %eax
    mov %eax, READ_IN+44
    movl $0, READ_IN+48                 # offset
    movl $0, READ_IN+52
    movl $READ_SIZE, READ_IN+56         # size
    movl $0, READ_IN+60                 # read_flags
    movl $0, READ_IN+64                 # lock_owner
    movl $0, READ_IN+68
    movl $0, READ_IN+72                 # flags
    movl $0, READ_IN+76
    fuse_call 3, READ_IN, IN_HEADER+40, READ_OUT, OUT_HEADER+READ_SIZE, 4, 18

    # Echo the bytes read to COM1 (the shim's console.log): length = reply length - header.
    mov READ_OUT, %ecx
    sub $OUT_HEADER, %ecx
    cmp $READ_SIZE, %ecx
    jbe 4f
    mov $21, %eax                       # a reply longer than asked for
    jmp report
4:  mov $READ_OUT+OUT_HEADER, %esi
5:  test %ecx, %ecx
    jz 7f
    mov $kCom1Port+5, %dx               # LSR
6:  inb %dx, %al
    test $0x20, %al                     # THR empty?
    jz 6b
    mov $kCom1Port, %dx
    movb (%esi), %al
    outb %al, %dx
    inc %esi
    dec %ecx
    jmp 5b
7:  xor %eax, %eax

report:
    mov $kTestResultPort, %dx
    outl %eax, %dx
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al                      # SLP_EN | SLP_TYP 5
    outb %al, %dx
3:  hlt
    jmp 3b
