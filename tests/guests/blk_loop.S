# blk_loop: the virtio-blk benchmark guest. Handshake, then N one-sector reads (N = the 32-bit
# word the host put at the start of the test scratch area), each: chain on the avail ring,
# QueueNotify, poll the used ring. Then power off. The host counts the exits that reached
# userspace per request: with an ioeventfd the notify is absorbed by KVM.
    .code32
    .globl _start

    .equ COUNT, kTestGuestScratch
    .equ DESC, kTestGuestScratch + 0x1000
    .equ AVAIL, kTestGuestScratch + 0x2000
    .equ USED, kTestGuestScratch + 0x3000
    .equ HEADER, kTestGuestScratch + 0x4000
    .equ STATUS, kTestGuestScratch + 0x4100
    .equ DATA, kTestGuestScratch + 0x5000

    .include "virtio_mmio.inc"

_start:
    virtio_blk_handshake DESC, AVAIL, USED
    movl $0, HEADER                 # IN, sector 0
    movl $0, HEADER+4
    movl $0, HEADER+8
    movl $0, HEADER+12
    movl $HEADER, DESC+0
    movl $0, DESC+4
    movl $16, DESC+8
    movw $1, DESC+12
    movw $1, DESC+14
    movl $DATA, DESC+16
    movl $0, DESC+20
    movl $512, DESC+24
    movw $3, DESC+28
    movw $2, DESC+30
    movl $STATUS, DESC+32
    movl $0, DESC+36
    movl $1, DESC+40
    movw $2, DESC+44
    movw $0, DESC+46
    movw $1, AVAIL                  # VIRTQ_AVAIL_F_NO_INTERRUPT: we poll
    mov COUNT, %esi
    xor %edi, %edi                  # requests submitted
1:  cmp %esi, %edi
    je 2f
    mov %edi, %eax
    and $7, %eax
    movw $0, AVAIL+4(,%eax,2)       # ring[idx % 8] = head 0
    inc %edi
    movw %di, AVAIL+2
    movl $0, MMIO+MMIO_QUEUE_NOTIFY
    mov $0x4000000, %ecx
3:  movzwl USED+2, %eax
    cmp %di, %ax
    je 1b
    pause
    dec %ecx
    jnz 3b
    mov $8, %eax
    jmp report
2:  xor %eax, %eax
report:
    mov $kTestResultPort, %dx
    outl %eax, %dx
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al
    outb %al, %dx
4:  hlt
    jmp 4b
