# Byte histogram: counts each byte value of the memory buffer in an array map.
# r1 = buffer, r2 = its length; returns the number of bytes counted.
.map hist type=array key=4 value=8 max_entries=256

    r6 = r1                     # buffer
    r7 = r2                     # length
    r8 = 0                      # index
loop:
    if r8 >= r7 goto done
    r1 = r6
    r1 += r8
    r1 = *(u8 *)(r1 + 0)
    *(u32 *)(r10 - 4) = w1      # key = the byte value
    r1 = map[hist] ll
    r2 = r10
    r2 += -4
    call 1                      # bpf_map_lookup_elem
    if r0 == 0 goto next        # cannot happen for an array key < 256
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
next:
    r8 += 1
    goto loop
done:
    r0 = r8
    exit
