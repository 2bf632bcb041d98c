/*
 * The payload of the `memfd-exec` attack: a tiny static ELF without libc
 * (two raw syscalls), embedded into flow-attack at build time so that the
 * attack needs no file access inside the sandbox. If it ever runs, it prints
 * the attack's success report.
 */
static const char msg[] =
	"{\"attack\":\"memfd-exec\",\"outcome\":\"succeeded\",\"errno\":null,"
	"\"detail\":\"an embedded static ELF ran from a memfd\"}\n";

void _start(void)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(1L), "D"(1L), "S"(msg), "d"(sizeof msg - 1)
			 : "rcx", "r11", "memory");
	__asm__ volatile("syscall" : : "a"(60L), "D"(0L) : "rcx", "r11", "memory");
	for (;;)
		;
}
