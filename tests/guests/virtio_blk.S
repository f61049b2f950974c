# virtio_blk: a tiny virtio-mmio driver for the first device window (a virtio-blk disk).
# It does the modern handshake (magic, version 2, device id, VERSION_1, FEATURES_OK, one
# 8-entry queue, DRIVER_OK), writes a 512-byte pattern to sector 1, reads sector 1 back into
# another buffer, compares, and reports on the test result port:
#   0 = success; 1..7 = the handshake step that failed (virtio_mmio.inc), 8..12 a step below.
# Completions are polled on the used ring, with interrupts off: the device may run on the
# vCPU thread during the QueueNotify exit, or on the VMM's event loop (ioeventfd) afterwards.
    .code32
    .globl _start

    .equ DESC, kTestGuestScratch + 0x1000
    .equ AVAIL, kTestGuestScratch + 0x2000
    .equ USED, kTestGuestScratch + 0x3000
    .equ HEADER, kTestGuestScratch + 0x4000
    .equ STATUS, kTestGuestScratch + 0x4100
    .equ WDATA, kTestGuestScratch + 0x5000
    .equ RDATA, kTestGuestScratch + 0x6000

    .include "virtio_mmio.inc"

_start:
    virtio_blk_handshake DESC, AVAIL, USED

    # Fill the write buffer: byte i = i ^ 0xa5.
    xor %ecx, %ecx
2:  mov %cl, %al
    xor $0xa5, %al
    mov %al, WDATA(%ecx)
    inc %ecx
    cmp $512, %ecx
    jne 2b

    # Request 1: OUT (type 1), sector 1, WDATA, status.
    movl $1, HEADER
    movl $0, HEADER+4
    movl $1, HEADER+8
    movl $0, HEADER+12
    movb $0xff, STATUS
    movl $HEADER, DESC+0            # d0: header, 16 bytes, NEXT -> 1
    movl $0, DESC+4
    movl $16, DESC+8
    movw $1, DESC+12
    movw $1, DESC+14
    movl $WDATA, DESC+16            # d1: data, 512 bytes, NEXT -> 2 (device reads)
    movl $0, DESC+20
    movl $512, DESC+24
    movw $1, DESC+28
    movw $2, DESC+30
    movl $STATUS, DESC+32           # d2: status, 1 byte, WRITE
    movl $0, DESC+36
    movl $1, DESC+40
    movw $2, DESC+44
    movw $0, DESC+46
    movw $0, AVAIL+4                # ring[0] = head 0
    movw $1, AVAIL+2                # idx = 1
    movl $0, MMIO+MMIO_QUEUE_NOTIFY # QueueNotify(0)
    wait_used USED, 1, 8
    movzbl STATUS, %eax
    fail_unless_eq $0, 9

    # Request 2: IN (type 0), sector 1, into RDATA.
    movl $0, HEADER
    movb $0xff, STATUS
    movl $RDATA, DESC+16
    movw $3, DESC+28                # NEXT | WRITE
    movw $0, AVAIL+6                # ring[1] = head 0
    movw $2, AVAIL+2
    movl $0, MMIO+MMIO_QUEUE_NOTIFY
    wait_used USED, 2, 10
    movzbl STATUS, %eax
    fail_unless_eq $0, 11
    mov $WDATA, %esi
    mov $RDATA, %edi
    mov $512, %ecx
    cld
    repe cmpsb
    sete %al
    movzbl %al, %eax
    fail_unless_eq $1, 12
    xor %eax, %eax

report:
    mov $kTestResultPort, %dx
    outl %eax, %dx
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al                  # SLP_EN | SLP_TYP 5
    outb %al, %dx
3:  hlt
    jmp 3b
