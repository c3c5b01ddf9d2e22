# Test object: hand-written assembly with no function symbols; the loader treats each
# executable section as one program named after it.
# Rebuild: tests/data/elf/build.sh
	.section	xdp,"ax",@progbits
	r0 = 2
	exit
	.section	socket,"ax",@progbits
	r0 = 0
	if r1 == 0 goto +1
	r0 = -1
	exit
	.section	license,"aw",@progbits
	.asciz	"GPL"
