# exit_loop: the exit-dispatch benchmark's guest. Counts down from the 32-bit word the host put
# at the start of the test scratch area, writing each value to the test result port (one PIO
# exit per iteration), then powers off.
    .code32
    .globl _start
_start:
    mov kTestGuestScratch, %ecx
    mov $kTestResultPort, %dx
1:  test %ecx, %ecx
    jz 2f
    mov %ecx, %eax
    outl %eax, %dx
    dec %ecx
    jmp 1b
2:  mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al
    outb %al, %dx
3:  hlt
    jmp 3b
