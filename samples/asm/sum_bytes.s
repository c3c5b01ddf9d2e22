# Sum the bytes of the memory buffer: r1 = buffer, r2 = its length (LLVM pseudo-C dialect).
    r0 = 0
    r3 = 0
loop:
    if r3 >= r2 goto done
    r4 = r1
    r4 += r3
    r5 = *(u8 *)(r4 + 0)
    r0 += r5
    r3 += 1
    goto loop
done:
    exit
