# pvh_dump: a "kernel" for the shim's Linux boot path — an ELF64 vmlinux with a Xen PVH note,
# entered like Linux's PVH entry (32-bit protected mode, paging off, %ebx = hvm_start_info).
# It prints the command line, a newline, then every byte of the initrd (module 0) on COM1, and
# powers off; with no initrd it prints the command line and "\nno initrd". The test reads it
# all back from console.log.
    .section .note.Xen, "a", @note
    .align 4
    .long 4, 4, 18                  # namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long _start

    .text
    .code32
    .globl _start
_start:
    mov $kBootStack, %esp           # PVH gives no stack (Linux sets up its own first)
    mov %ebx, %ebp                  # hvm_start_info
    mov 24(%ebp), %esi              # cmdline_paddr (low half)
1:  movzbl (%esi), %eax
    test %eax, %eax
    jz 2f
    call putc
    inc %esi
    jmp 1b
2:  mov $'\n', %eax
    call putc
    cmpl $0, 12(%ebp)               # nr_modules
    je no_initrd
    mov 16(%ebp), %edi              # modlist_paddr
    mov (%edi), %esi                # module 0: paddr
    mov 8(%edi), %ecx               # size
3:  test %ecx, %ecx
    jz power_off
    movzbl (%esi), %eax
    call putc
    inc %esi
    dec %ecx
    jmp 3b
no_initrd:
    mov $message, %esi
4:  movzbl (%esi), %eax
    test %eax, %eax
    jz power_off
    call putc
    inc %esi
    jmp 4b
power_off:
    mov $kAcpiSleepControlPort, %dx
    mov $0x34, %al
    outb %al, %dx
5:  hlt
    jmp 5b

# %al to COM1 once its transmit holding register is empty.
putc:
    mov %eax, %ebx
    mov $kCom1Port+5, %dx
6:  inb %dx, %al
    test $0x20, %al
    jz 6b
    mov $kCom1Port, %dx
    mov %ebx, %eax
    outb %al, %dx
    ret
message:
    .asciz "no initrd"
