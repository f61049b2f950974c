# virtio_net: a tiny virtio-net driver for the device in the first window (id 1): the modern
# handshake with VERSION_1 only and both queues (rx 0, tx 1; 8 entries each), eight 2 KiB rx
# buffers posted, then one frame sent: an ARP request from the box (192.168.127.2, the box's MAC)
# for 192.168.127.77. Through boxlite-shim-kvm that frame goes through the pump and the egress
# firewall to a real passt, which answers any ARP request but for the box's own address. The
# guest then reads the frames it receives (the first may answer the pump's own ARP request for
# the gateway) until one is the ARP reply for .77, and prints on COM1 (console.log)
#   "net: ARP reply: 192.168.127.77 is at xx:xx:xx:xx:xx:xx\n"   (the sender's MAC: passt's)
# Then it sends a UDP datagram to 192.0.2.1 port 9 (to that MAC), which the test's allow list
# does not name: the pump's firewall must refuse it with an ICMP destination unreachable
# (administratively prohibited) quoting it, and never pass it to passt; on that frame it prints
#   "net: refused: ICMP 3/13 for 192.0.2.1\n"
# Any failure prints "net: failed at step NN\n" (NN in hex: 01..07 the handshake,
# virtio_mmio.inc; 08 the ARP request's tx never completed, 09 no ARP reply, 0a eight frames
# without the one awaited, 0b a used id out of range, 0c the datagram's tx never completed, 0d no
# ICMP unreachable).
# Result port: 0 = success, else the step.
    .code32
    .globl _start

    .equ RXDESC, kTestGuestScratch + 0x1000
    .equ RXAVAIL, kTestGuestScratch + 0x2000
    .equ RXUSED, kTestGuestScratch + 0x3000
    .equ TXDESC, kTestGuestScratch + 0x4000
    .equ TXAVAIL, kTestGuestScratch + 0x5000
    .equ TXUSED, kTestGuestScratch + 0x6000
    .equ RXBUF, kTestGuestScratch + 0x8000  # NRX buffers of RXLEN bytes
    .equ RXLEN, 0x800
    .equ NRX, 8
    .equ HDR, 12                            # virtio_net_hdr_v1 in front of every frame

    .include "virtio_mmio.inc"

# Queue \queue with 8 entries at desc/avail/used, QueueReady; fails with 6 if it is smaller.
.macro queue_setup queue, desc, avail, used
    movl $\queue, MMIO+MMIO_QUEUE_SEL
    mov MMIO+MMIO_QUEUE_NUM_MAX, %eax
    cmp $8, %eax
    jae 8f
    mov $6, %eax
    jmp report
8:  movl $8, MMIO+MMIO_QUEUE_NUM
    movl $\desc, MMIO+MMIO_QUEUE_DESC
    movl $0, MMIO+MMIO_QUEUE_DESC+4
    movl $\avail, MMIO+MMIO_QUEUE_DRIVER
    movl $0, MMIO+MMIO_QUEUE_DRIVER+4
    movl $\used, MMIO+MMIO_QUEUE_DEVICE
    movl $0, MMIO+MMIO_QUEUE_DEVICE+4
    movl $1, MMIO+MMIO_QUEUE_READY
.endm

# Writes %ah to COM1 (polling LSR.THRE); clobbers %al and %dx.
.macro com1_putc
    mov $kCom1Port+5, %dx
77: inb %dx, %al
    test $0x20, %al
    jz 77b
    mov %ah, %al
    mov $kCom1Port, %dx
    outb %al, %dx
.endm

# Writes the NUL-terminated string at \text; clobbers %eax, %edx, %edi.
.macro com1_puts text
    mov $\text, %edi
78: movb (%edi), %ah
    test %ah, %ah
    jz 79f
    com1_putc
    inc %edi
    jmp 78b
79:
.endm

# Writes the byte in %bl as two hex digits; clobbers %eax, %edx, %ebx.
.macro com1_hex_bl
    mov %ebx, %eax
    and $0xff, %eax
    shr $4, %eax
    movb hexdigits(%eax), %ah
    com1_putc
    and $0xf, %ebx
    movb hexdigits(%ebx), %ah
    com1_putc
.endm

# Waits for element %ebp of the rx used ring (fails with \code when none comes, 10 when all NRX
# buffers are used), points %esi at its Ethernet frame and counts it (%ebp + 1).
.macro next_frame code
    cmp $NRX, %ebp
    jne 71f
    mov $10, %eax
    jmp report
71: mov $0x4000000, %ecx
72: movzwl RXUSED+2, %eax
    cmp %ebp, %eax
    ja 73f
    pause
    dec %ecx
    jnz 72b
    mov $\code, %eax
    jmp report
73: mov RXUSED+4(,%ebp,8), %esi             # the used element's descriptor id
    cmp $NRX, %esi
    jb 74f
    mov $11, %eax
    jmp report
74: shl $11, %esi
    add $RXBUF+HDR, %esi
    inc %ebp
.endm

_start:
    mov MMIO+MMIO_MAGIC, %eax
    fail_unless_eq $0x74726976, 1
    mov MMIO+MMIO_VERSION, %eax
    fail_unless_eq $2, 2
    mov MMIO+MMIO_DEVICE_ID, %eax
    fail_unless_eq $1, 3
    movl $0, MMIO+MMIO_STATUS               # reset
    movl $3, MMIO+MMIO_STATUS               # ACKNOWLEDGE | DRIVER
    movl $1, MMIO+MMIO_DEVICE_FEATURES_SEL
    mov MMIO+MMIO_DEVICE_FEATURES, %eax
    and $1, %eax                            # VERSION_1 (bit 32)
    fail_unless_eq $1, 4
    movl $1, MMIO+MMIO_DRIVER_FEATURES_SEL
    movl $1, MMIO+MMIO_DRIVER_FEATURES      #   VERSION_1
    movl $0, MMIO+MMIO_DRIVER_FEATURES_SEL
    movl $0, MMIO+MMIO_DRIVER_FEATURES
    movl $0xb, MMIO+MMIO_STATUS             # | FEATURES_OK
    mov MMIO+MMIO_STATUS, %eax
    and $8, %eax
    fail_unless_eq $8, 5
    queue_setup 0, RXDESC, RXAVAIL, RXUSED
    queue_setup 1, TXDESC, TXAVAIL, TXUSED
    movl $0xf, MMIO+MMIO_STATUS             # | DRIVER_OK
    mov MMIO+MMIO_STATUS, %eax
    and $0x40, %eax                         # DEVICE_NEEDS_RESET?
    fail_unless_eq $0, 7

    # rx: descriptor i = buffer i (device-writable), all eight made available.
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $11, %eax                           # * RXLEN
    add $RXBUF, %eax
    mov %ecx, %edx
    shl $4, %edx                            # * 16 (a descriptor)
    mov %eax, RXDESC(%edx)
    movl $0, RXDESC+4(%edx)
    movl $RXLEN, RXDESC+8(%edx)
    movw $2, RXDESC+12(%edx)                # WRITE
    movw $0, RXDESC+14(%edx)
    movw %cx, RXAVAIL+4(,%ecx,2)
    inc %ecx
    cmp $NRX, %ecx
    jne 1b
    movw $NRX, RXAVAIL+2
    movl $0, MMIO+MMIO_QUEUE_NOTIFY         # rx buffers posted

    # tx: one descriptor, the header and the frame (device-readable).
    movl $txframe, TXDESC+0
    movl $0, TXDESC+4
    movl $txframe_end-txframe, TXDESC+8
    movw $0, TXDESC+12
    movw $0, TXDESC+14
    movw $0, TXAVAIL+4
    movw $1, TXAVAIL+2
    movl $1, MMIO+MMIO_QUEUE_NOTIFY
    wait_used TXUSED, 1, 8

    # rx: the next frame, until the ARP reply for .77.
    xor %ebp, %ebp
arp_wait:
    next_frame 9
    cmpw $0x0608, 12(%esi)                  # EtherType ARP (08 06)
    jne arp_wait
    cmpw $0x0200, 20(%esi)                  # operation: reply (00 02)
    jne arp_wait
    cmpl $0x4d7fa8c0, 28(%esi)              # sender IP 192.168.127.77
    jne arp_wait

    com1_puts got_reply
    xor %ecx, %ecx
7:  movzbl 22(%esi,%ecx), %ebx              # the sender's MAC
    com1_hex_bl
    inc %ecx
    cmp $6, %ecx
    je 8f
    movb $':', %ah
    com1_putc
    jmp 7b
8:  movb $'\n', %ah
    com1_putc

    # tx: the UDP datagram to 192.0.2.1, addressed to the MAC that answered.
    mov 22(%esi), %eax
    mov %eax, udpframe+HDR
    movw 26(%esi), %ax
    movw %ax, udpframe+HDR+4
    movl $udpframe, TXDESC+16
    movl $0, TXDESC+20
    movl $udpframe_end-udpframe, TXDESC+24
    movw $0, TXDESC+28
    movw $0, TXDESC+30
    movw $1, TXAVAIL+6
    movw $2, TXAVAIL+2
    movl $1, MMIO+MMIO_QUEUE_NOTIFY
    wait_used TXUSED, 2, 12

    # rx: the next frame, until an ICMP unreachable quoting the datagram.
icmp_wait:
    next_frame 13
    cmpw $0x0008, 12(%esi)                  # EtherType IPv4 (08 00)
    jne icmp_wait
    cmpb $1, 23(%esi)                       # protocol ICMP
    jne icmp_wait
    cmpw $0x0d03, 34(%esi)                  # type 3 (unreachable), code 13 (prohibited)
    jne icmp_wait
    cmpl $0x010200c0, 58(%esi)              # the quoted datagram's destination: 192.0.2.1
    jne icmp_wait
    com1_puts refused
    xor %eax, %eax
    jmp done

report:
    mov %eax, %esi
    com1_puts failed
    mov %esi, %ebx
    com1_hex_bl
    movb $'\n', %ah
    com1_putc
    mov %esi, %eax
done:
    mov $kTestResultPort, %dx
    outl %eax, %dx
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al                          # SLP_EN | SLP_TYP 5
    outb %al, %dx
9:  hlt
    jmp 9b

got_reply:
    .asciz "net: ARP reply: 192.168.127.77 is at "
refused:
    .asciz "net: refused: ICMP 3/13 for 192.0.2.1\n"
failed:
    .asciz "net: failed at step "
hexdigits:
    .ascii "0123456789abcdef"

# The frame: virtio_net_hdr_v1 (all zero: no offload), then an ARP request, padded to 60 bytes.
txframe:
    .fill HDR, 1, 0
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff    # to: broadcast
    .byte 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee    # from: the box's MAC (vmm::kBoxMac)
    .byte 0x08, 0x06                            # ARP
    .byte 0x00, 0x01, 0x08, 0x00, 6, 4          # Ethernet, IPv4
    .byte 0x00, 0x01                            # request
    .byte 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee    # sender MAC
    .byte 192, 168, 127, 2                      # sender IP: the box
    .byte 0, 0, 0, 0, 0, 0                      # target MAC: unknown
    .byte 192, 168, 127, 77                     # target IP
    .fill 18, 1, 0                              # padding to 60 bytes
txframe_end:

# A UDP datagram from the box to 192.0.2.1 port 9 (TEST-NET-1): the destination MAC is filled in
# from the ARP reply. IPv4 header checksum precomputed; UDP checksum 0 (none).
udpframe:
    .fill HDR, 1, 0
    .byte 0, 0, 0, 0, 0, 0                      # to: the MAC that answered the ARP request
    .byte 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee    # from: the box's MAC
    .byte 0x08, 0x00                            # IPv4
    .byte 0x45, 0x00, 0x00, 30                  # version 4, IHL 5, total length 30
    .byte 0x00, 0x01, 0x00, 0x00                # id 1, no fragment
    .byte 64, 17, 0x79, 0x22                    # TTL 64, UDP, header checksum
    .byte 192, 168, 127, 2                      # from the box
    .byte 192, 0, 2, 1                          # to 192.0.2.1
    .byte 0x30, 0x39, 0x00, 9                   # ports 12345 -> 9
    .byte 0x00, 10, 0x00, 0x00                  # UDP length 10, no checksum
    .ascii "hi"
    .fill 16, 1, 0                              # padding to 60 bytes
udpframe_end:
