# virtio_blk: a tiny virtio-mmio driver for the first device window (a virtio-blk disk).
# It does the modern handshake (magic, version 2, device id, VERSION_1, FEATURES_OK, one
# 8-entry queue, DRIVER_OK), writes a 512-byte pattern to sector 1, reads sector 1 back into
# another buffer, compares, and reports on the test result port:
#   0 = success; 1..12 = the step that failed (see the `fail` calls below).
# Completions are polled on the used ring (QueueNotify exits to the VMM, which runs the device
# before the guest resumes, so no interrupt is needed).
    .code32
    .globl _start

    .equ MMIO, kVirtioMmioBase
    .equ DESC, kTestGuestScratch + 0x1000
    .equ AVAIL, kTestGuestScratch + 0x2000
    .equ USED, kTestGuestScratch + 0x3000
    .equ HEADER, kTestGuestScratch + 0x4000
    .equ STATUS, kTestGuestScratch + 0x4100
    .equ WDATA, kTestGuestScratch + 0x5000
    .equ RDATA, kTestGuestScratch + 0x6000

.macro fail_unless_eq value, code
    cmp \value, %eax
    je 9f
    mov $\code, %eax
    jmp report
9:
.endm

_start:
    mov MMIO+0x000, %eax            # MagicValue
    fail_unless_eq $0x74726976, 1
    mov MMIO+0x004, %eax            # Version
    fail_unless_eq $2, 2
    mov MMIO+0x008, %eax            # DeviceID
    fail_unless_eq $2, 3
    movl $0, MMIO+0x070             # reset
    movl $3, MMIO+0x070             # ACKNOWLEDGE | DRIVER
    movl $1, MMIO+0x014             # DeviceFeaturesSel = 1
    mov MMIO+0x010, %eax
    and $1, %eax                    # VERSION_1 (bit 32)
    fail_unless_eq $1, 4
    movl $1, MMIO+0x024             # DriverFeaturesSel = 1
    movl $1, MMIO+0x020             #   VERSION_1
    movl $0, MMIO+0x024
    movl $0, MMIO+0x020
    movl $0xb, MMIO+0x070           # | FEATURES_OK
    mov MMIO+0x070, %eax
    and $8, %eax
    fail_unless_eq $8, 5
    movl $0, MMIO+0x030             # QueueSel 0
    mov MMIO+0x034, %eax            # QueueNumMax
    cmp $8, %eax
    jae 1f
    mov $6, %eax
    jmp report
1:  movl $8, MMIO+0x038             # QueueNum
    movl $DESC, MMIO+0x080
    movl $0, MMIO+0x084
    movl $AVAIL, MMIO+0x090
    movl $0, MMIO+0x094
    movl $USED, MMIO+0x0a0
    movl $0, MMIO+0x0a4
    movl $1, MMIO+0x044             # QueueReady
    movl $0xf, MMIO+0x070           # | DRIVER_OK
    mov MMIO+0x070, %eax
    and $0x40, %eax                 # DEVICE_NEEDS_RESET?
    fail_unless_eq $0, 7

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
    movl $0, MMIO+0x050             # QueueNotify(0)
    movzwl USED+2, %eax
    fail_unless_eq $1, 8
    movzbl STATUS, %eax
    fail_unless_eq $0, 9

    # Request 2: IN (type 0), sector 1, into RDATA.
    movl $0, HEADER
    movb $0xff, STATUS
    movl $RDATA, DESC+16
    movw $3, DESC+28                # NEXT | WRITE
    movw $0, AVAIL+6                # ring[1] = head 0
    movw $2, AVAIL+2
    movl $0, MMIO+0x050
    movzwl USED+2, %eax
    fail_unless_eq $2, 10
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
