# blk_loop: the virtio-blk benchmark guest. Handshake, then N one-sector reads (N = the 32-bit
# word the host put at the start of the test scratch area), one at a time: chain on the avail
# ring, QueueNotify, wait for the completion. Then power off. The host counts the exits that
# reached userspace per request (with an ioeventfd the notify is absorbed by KVM).
# How it waits is the host's choice (the word after N):
#   0 — polls the used ring with interrupts off (VIRTQ_AVAIL_F_NO_INTERRUPT), as a busy driver;
#   1 — asks for interrupts and halts until the completion interrupt, as Linux's driver waits.
#       The handler reads InterruptStatus, acknowledges, EOIs and returns with iret, or — where
#       the word after that is 0 (kvm_pvm cannot emulate iret) — jumps back into the wait loop.
    .code32
    .globl _start

    .equ COUNT, kTestGuestScratch
    .equ MODE, kTestGuestScratch + 4
    .equ USE_IRET, kTestGuestScratch + 8
    .equ IDT, kTestGuestScratch + 0x800
    .equ DESC, kTestGuestScratch + 0x1000
    .equ AVAIL, kTestGuestScratch + 0x2000
    .equ USED, kTestGuestScratch + 0x3000
    .equ HEADER, kTestGuestScratch + 0x4000
    .equ STATUS, kTestGuestScratch + 0x4100
    .equ DATA, kTestGuestScratch + 0x5000
    .equ VECTOR, 0x30

    .include "virtio_mmio.inc"
    .include "x86_irq.inc"

_start:
    cmpl $0, MODE
    je 1f
    x86_irq_setup IDT, VECTOR, kVirtioIrqBase, completion_irq
1:  mov $kBootStack, %esp
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
    movw $1, AVAIL                  # VIRTQ_AVAIL_F_NO_INTERRUPT while polling
    cmpl $0, MODE
    je 2f
    movw $0, AVAIL                  # interrupts wanted
2:  mov COUNT, %esi
    xor %edi, %edi                  # requests submitted
next_request:
    cmp %esi, %edi
    je done
    mov %edi, %eax
    and $7, %eax
    movw $0, AVAIL+4(,%eax,2)       # ring[idx % 8] = head 0
    inc %edi
    movw %di, AVAIL+2
    movl $0, MMIO+MMIO_QUEUE_NOTIFY
    cmpl $0, MODE
    jne wait_irq
    mov $0x4000000, %ecx
3:  movzwl USED+2, %eax
    cmp %di, %ax
    je next_request
    pause
    dec %ecx
    jnz 3b
    mov $8, %eax
    jmp report
wait_irq:
    cli
    movzwl USED+2, %eax
    cmp %di, %ax
    je next_request
    sti
    hlt
    jmp wait_irq
done:
    xor %eax, %eax
report:
    mov $kTestResultPort, %dx
    outl %eax, %dx
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al
    outb %al, %dx
4:  hlt
    jmp 4b

completion_irq:
    push %eax
    mov MMIO+MMIO_INTERRUPT_STATUS, %eax
    mov %eax, MMIO+MMIO_INTERRUPT_ACK
    movl $0, kLapic+LAPIC_EOI
    pop %eax
    cmpl $0, USE_IRET
    je 5f
    iret
5:  mov $kBootStack, %esp           # drop the frame; interrupts stay off until wait_irq's sti
    jmp wait_irq

spurious:
    iret
unexpected:
    mov $0xee, %eax
    jmp report
