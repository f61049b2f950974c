# hello: proves PIO and MMIO exit dispatch and UART output.
#   1. prints "hello from a tiny guest\n" on COM1, polling LSR.THRE like a real driver;
#   2. writes 0x12345678 to the test MMIO window, reads its second word and reports it (and a
#      byte read) on the test result port;
#   3. powers off through the ACPI sleep control register (SLP_TYP=5, SLP_EN).
    .code32
    .globl _start
_start:
    mov $message, %esi
1:  movb (%esi), %bl
    test %bl, %bl
    jz 3f
    mov $kCom1Port+5, %dx          # LSR
2:  inb %dx, %al
    test $0x20, %al                # THR empty?
    jz 2b
    mov $kCom1Port, %dx
    mov %bl, %al
    outb %al, %dx
    inc %esi
    jmp 1b
3:  movl $0x12345678, kTestMmio    # MMIO write, 4 bytes
    movl kTestMmio+4, %eax         # MMIO read, 4 bytes
    mov $kTestResultPort, %dx
    outl %eax, %dx
    movb kTestMmio+8, %al          # MMIO read, 1 byte
    outb %al, %dx
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al                 # SLP_EN | (5 << 2)
    outb %al, %dx
4:  hlt
    jmp 4b
message:
    .asciz "hello from a tiny guest\n"
