/* A 64-way switch over every byte of a 4 KiB buffer: the JIT's jump-table benchmark.
 * Included twice: by switch64_bpf.c (clang-19 -target bpf) and by switch64_native.c (the same
 * C compiled for x86-64 at -O2, the baseline). The 64 cases do different kinds of work (multiply,
 * shift, rotate, xor, ...), so that LLVM can turn the switch into a jump table but not into a
 * lookup table of constants. Generated once with a fixed seed; edit freely. */
#define SWITCH64_LEN 4096

static inline __attribute__((always_inline)) unsigned long long
switch64_step(unsigned long long acc, unsigned char b)
{
	switch (b & 63) {
	case 0: acc = acc * 0xffb1e0079e58219ULL + 0; break;
	case 1: acc ^= acc >> 4; break;
	case 2: acc = (acc << 5) | (acc >> 59); break;
	case 3: acc += 0x74d305f4b440d80fULL; break;
	case 4: acc -= acc << 5; break;
	case 5: acc ^= 0x639bc8ebd1c5554fULL; break;
	case 6: acc = (acc ^ 0xa37481625be0915ULL) * 0x6adc80372fULL; break;
	case 7: acc = ~acc + 0x196094f370a6383fULL; break;
	case 8: acc = acc * 0x3393643e156b2103ULL + 8; break;
	case 9: acc ^= acc >> 12; break;
	case 10: acc = (acc << 13) | (acc >> 51); break;
	case 11: acc += 0x21caf0cf96c0e921ULL; break;
	case 12: acc -= acc << 6; break;
	case 13: acc ^= 0x3aac24f1c509bba7ULL; break;
	case 14: acc = (acc ^ 0x25dee6da36b8ce19ULL) * 0x23be0d6c87ULL; break;
	case 15: acc = ~acc + 0x36a41dd98cb7c2edULL; break;
	case 16: acc = acc * 0x5fa9c8fb4e98ce51ULL + 16; break;
	case 17: acc ^= acc >> 20; break;
	case 18: acc = (acc << 21) | (acc >> 43); break;
	case 19: acc += 0x1c1d9b0536a76b2bULL; break;
	case 20: acc -= acc << 7; break;
	case 21: acc ^= 0x65df6e3bd4562703ULL; break;
	case 22: acc = (acc ^ 0x7830b42cce6e3827ULL) * 0xdf4d94d8e7ULL; break;
	case 23: acc = ~acc + 0xe40bae6db694149ULL; break;
	case 24: acc = acc * 0x1c83ecf14c73ba7fULL + 24; break;
	case 25: acc ^= acc >> 28; break;
	case 26: acc = (acc << 29) | (acc >> 35); break;
	case 27: acc += 0x7a3a0959f2e132ebULL; break;
	case 28: acc -= acc << 1; break;
	case 29: acc ^= 0x5abd8b9d4cf2042bULL; break;
	case 30: acc = (acc ^ 0x13e1c0a5461890d3ULL) * 0x2dd3aa38b9ULL; break;
	case 31: acc = ~acc + 0x5b2d8274c4de02dULL; break;
	case 32: acc = acc * 0xf5fd7391c6a7af7ULL + 32; break;
	case 33: acc ^= acc >> 7; break;
	case 34: acc = (acc << 8) | (acc >> 56); break;
	case 35: acc += 0x3623ef36d5495bffULL; break;
	case 36: acc -= acc << 2; break;
	case 37: acc ^= 0x586a18a9515106b5ULL; break;
	case 38: acc = (acc ^ 0x6dd15c209907323ULL) * 0xb0bf2a31dbULL; break;
	case 39: acc = ~acc + 0x280c0d68890e8203ULL; break;
	case 40: acc = acc * 0x123aee2cd7af7c99ULL + 40; break;
	case 41: acc ^= acc >> 15; break;
	case 42: acc = (acc << 16) | (acc >> 48); break;
	case 43: acc += 0x40a3e2a69f921813ULL; break;
	case 44: acc -= acc << 3; break;
	case 45: acc ^= 0x29a99c6d22eca887ULL; break;
	case 46: acc = (acc ^ 0x12c42dfadd90903ULL) * 0x4fee0788f5ULL; break;
	case 47: acc = ~acc + 0x517f5f85a8c77f27ULL; break;
	case 48: acc = acc * 0x30eb3ea12bed0ff3ULL + 48; break;
	case 49: acc ^= acc >> 23; break;
	case 50: acc = (acc << 24) | (acc >> 40); break;
	case 51: acc += 0x288a53371531fa6fULL; break;
	case 52: acc -= acc << 4; break;
	case 53: acc ^= 0x5f98bb075c9586efULL; break;
	case 54: acc = (acc ^ 0xfd39b16c0e9047fULL) * 0xa478684513ULL; break;
	case 55: acc = ~acc + 0x2e1d8711faa89dc1ULL; break;
	case 56: acc = acc * 0xc5e4c357cfe8d57ULL + 56; break;
	case 57: acc ^= acc >> 31; break;
	case 58: acc = (acc << 3) | (acc >> 61); break;
	case 59: acc += 0x5f8d743d9ae9c00bULL; break;
	case 60: acc -= acc << 5; break;
	case 61: acc ^= 0x31343b921d6946abULL; break;
	case 62: acc = (acc ^ 0x1397eb46bc92d5f9ULL) * 0x4bd5534dd9ULL; break;
	case 63: acc = ~acc + 0x701ae60d59b50bb5ULL; break;
	}
	return acc;
}

static inline __attribute__((always_inline)) unsigned long long
switch64_body(const unsigned char *data, unsigned long long len)
{
	unsigned long long acc = 0x0123456789abcdefULL;

	if (len < SWITCH64_LEN)
		return 0;
	for (int i = 0; i < SWITCH64_LEN; i++)
		acc = switch64_step(acc, data[i]);
	return acc;
}
