    .code32
    .globl _start
_start:
    hlt
