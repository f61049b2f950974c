# virtio_irq: interrupt delivery from a virtio device, and a second vCPU, on 2 vCPUs with the
# in-kernel irqchip.
#   BSP: its own GDT and an IDT (vector 0x30: the virtio handler; everything else: report
#   0xee), the legacy PICs masked, the LAPIC software-enabled, IOAPIC pin kVirtioIrqBase routed
#   edge/active-high to vector 0x30 on APIC 0. Then the virtio-blk handshake, one read request,
#   QueueNotify, and `sti; hlt` until the handler has run. The handler reads InterruptStatus,
#   writes it to InterruptAck and sends the LAPIC EOI, and returns with iret — or, where the
#   host says iret cannot run (kvm_pvm: a KVM emulation failure), jumps to the code after the
#   wait loop with interrupts still off. Then INIT + SIPI to APIC 1, whose
#   real-mode trampoline enters 32-bit mode and records CPUID.1:EBX and its LAPIC ID register.
# Reports, 32 bits each on the test result port, in this order:
#   [0] 0 = interrupt part passed, else the failing step (1..7 handshake, 20..24 below, 0xee
#       an unexpected vector) — nothing else follows a failure;
#   [1] InterruptStatus as the handler read it; [2] the BSP's CPUID.1:EBX;
#   [3] 0 = the AP ran, 0xa9 = it did not within the bound; [4] the AP's CPUID.1:EBX;
#   [5] the AP's LAPIC ID register.
    .code32
    .globl _start

    .equ VECTOR, 0x30
    .equ GSI, kVirtioIrqBase

    .equ IDT, kTestGuestScratch + 0x800      # 256 gates of 8 bytes
    .equ DESC, kTestGuestScratch + 0x1000
    .equ AVAIL, kTestGuestScratch + 0x2000
    .equ USED, kTestGuestScratch + 0x3000
    .equ HEADER, kTestGuestScratch + 0x4000
    .equ STATUS, kTestGuestScratch + 0x4100
    .equ DATA, kTestGuestScratch + 0x5000
    .equ IRQ_COUNT, kTestGuestScratch + 0x40
    .equ IRQ_STATUS, kTestGuestScratch + 0x44
    .equ AP_FLAG, kTestGuestScratch + 0x48
    .equ AP_EBX, kTestGuestScratch + 0x4c
    .equ AP_LAPIC, kTestGuestScratch + 0x50
    .equ BSP_EBX, kTestGuestScratch + 0x54
    .equ USE_IRET, kTestGuestScratch + 0x58  # set by the host: 0 where iret cannot run (kvm_pvm)
    .equ AP_STACK, kTestGuestScratch + 0x8000

    .include "virtio_mmio.inc"
    .include "x86_irq.inc"

_start:
    x86_irq_setup IDT, VECTOR, GSI, virtio_irq
    movl $0, IRQ_COUNT
    movl $0, AP_FLAG
    mov $kBootStack, %esp           # below the code, away from the scratch area

    virtio_blk_handshake DESC, AVAIL, USED

    # One read: IN (type 0), sector 0, 512 bytes into DATA.
    movl $0, HEADER
    movl $0, HEADER+4
    movl $0, HEADER+8
    movl $0, HEADER+12
    movb $0xff, STATUS
    movl $HEADER, DESC+0
    movl $0, DESC+4
    movl $16, DESC+8
    movw $1, DESC+12                # NEXT
    movw $1, DESC+14
    movl $DATA, DESC+16
    movl $0, DESC+20
    movl $512, DESC+24
    movw $3, DESC+28                # NEXT | WRITE
    movw $2, DESC+30
    movl $STATUS, DESC+32
    movl $0, DESC+36
    movl $1, DESC+40
    movw $2, DESC+44                # WRITE
    movw $0, DESC+46
    movw $0, AVAIL                  # flags: interrupts wanted
    movw $0, AVAIL+4
    movw $1, AVAIL+2
    movl $0, MMIO+MMIO_QUEUE_NOTIFY

5:  cli
    cmpl $0, IRQ_COUNT
    jne after_irq
    sti
    hlt
    jmp 5b
after_irq:
    mov $kBootStack, %esp           # a handler that did not return left its frame behind
    mov IRQ_STATUS, %eax
    and $1, %eax                    # "used buffer" bit
    fail_unless_eq $1, 20
    movzwl USED+2, %eax
    fail_unless_eq $1, 21
    movzbl STATUS, %eax
    fail_unless_eq $0, 22
    mov MMIO+MMIO_INTERRUPT_STATUS, %eax
    fail_unless_eq $0, 23           # acknowledged
    mov IRQ_COUNT, %eax
    fail_unless_eq $1, 24

    mov $1, %eax
    cpuid
    mov %ebx, BSP_EBX

    # INIT, then STARTUP with the trampoline's page number as the vector.
    movl $(1 << 24), kLapic+LAPIC_ICR_HIGH
    movl $0x4500, kLapic+LAPIC_ICR_LOW
    movl $(1 << 24), kLapic+LAPIC_ICR_HIGH
    mov $ap_trampoline, %eax
    shr $12, %eax
    or $0x4600, %eax
    mov %eax, kLapic+LAPIC_ICR_LOW
    mov $0x4000000, %ecx
7:  cmpl $0, AP_FLAG
    jne 8f
    pause
    dec %ecx
    jnz 7b
    mov $0xa9, %esi
    jmp 9f
8:  xor %esi, %esi
9:  mov $kTestResultPort, %dx
    xor %eax, %eax
    outl %eax, %dx
    mov IRQ_STATUS, %eax
    outl %eax, %dx
    mov BSP_EBX, %eax
    outl %eax, %dx
    mov %esi, %eax
    outl %eax, %dx
    mov AP_EBX, %eax
    outl %eax, %dx
    mov AP_LAPIC, %eax
    outl %eax, %dx
    jmp power_off

report:
    mov $kTestResultPort, %dx
    outl %eax, %dx
power_off:
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al                  # SLP_EN | SLP_TYP 5
    outb %al, %dx
10: cli
    hlt
    jmp 10b

virtio_irq:
    push %eax
    mov MMIO+MMIO_INTERRUPT_STATUS, %eax
    mov %eax, IRQ_STATUS
    mov %eax, MMIO+MMIO_INTERRUPT_ACK
    incl IRQ_COUNT
    movl $0, kLapic+LAPIC_EOI
    pop %eax
    cmpl $0, USE_IRET
    je after_irq                    # kvm_pvm fails to emulate iret (measured): carry on here
    iret

spurious:
    iret

unexpected:
    mov $0xee, %eax
    jmp report

# The AP starts here in real mode (CS = page number << 8, IP = 0).
    .balign 4096
ap_trampoline:
    .code16
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl ap_gdt_ptr - ap_trampoline   # DS = this page
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $ap_entry32
    .code32
ap_entry32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $AP_STACK, %esp
    mov $1, %eax
    cpuid
    mov %ebx, AP_EBX
    mov kLapic+LAPIC_ID, %eax
    mov %eax, AP_LAPIC
    movl $1, AP_FLAG
11: cli
    hlt
    jmp 11b
ap_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
