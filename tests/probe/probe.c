/*
 * flow-probe: a small static binary run INSIDE a Flow sandbox profile that
 * asserts, from within and by system calls only (/proc is hidden there), that
 * the sandbox is in force: no_new_privs, seccomp mode 2 (or, if prctl is
 * filtered, that a syscall every profile denies returns EPERM), all
 * capability sets empty, an empty environment, only fds 0-2 open, a non-root
 * uid, RLIMIT_CORE 0 and /proc out of reach.
 *
 * It prints one JSON line and exits 0 only if every check holds.
 * `--pause SECS` keeps it alive for SECS seconds after printing, so that the
 * harness can check it from the outside through /proc/<pid>.
 *
 * Built by tests/build.rs with `cc -static -O2`; no dynamic loader needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char out[16384];
static size_t used;
static int all_ok = 1;
static int first = 1;

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (used >= sizeof(out))
		return;
	va_start(ap, fmt);
	n = vsnprintf(out + used, sizeof(out) - used, fmt, ap);
	va_end(ap);
	if (n > 0)
		used += (size_t)n;
	if (used > sizeof(out))
		used = sizeof(out);
}

/* A JSON string value: only [-_.:/,= a-zA-Z0-9] pass, the rest becomes '?'. */
static void emit_str(const char *s)
{
	emit("\"");
	for (; *s; s++) {
		char c = *s;
		int safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || strchr("-_.:/,= ()", c);
		emit("%c", safe ? c : '?');
	}
	emit("\"");
}

static void check(const char *name, int ok, const char *value)
{
	emit("%s{\"name\":", first ? "" : ",");
	emit_str(name);
	emit(",\"ok\":%s,\"value\":", ok ? "true" : "false");
	emit_str(value);
	emit("}");
	first = 0;
	if (!ok)
		all_ok = 0;
}

static void pause_for(long secs)
{
	struct timespec end, now, ts = { .tv_sec = secs, .tv_nsec = 0 };

	if (nanosleep(&ts, NULL) == 0)
		return;
	/* nanosleep refused (or interrupted): spin on the vDSO clock. */
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += secs;
	do
		clock_gettime(CLOCK_MONOTONIC, &now);
	while (now.tv_sec < end.tv_sec ||
	       (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
}

int main(int argc, char **argv)
{
	char v[512];
	long pause_secs = 0;
	int r, e;

	if (argc == 3 && strcmp(argv[1], "--pause") == 0)
		pause_secs = atol(argv[2]);

	emit("{\"probe\":\"flow-probe\",\"pid\":%ld,\"checks\":[", (long)getpid());

	/* no_new_privs; prctl itself may be filtered, and then the harness's
	 * outside view (/proc/<pid>/status NoNewPrivs) is the check */
	errno = 0;
	r = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	e = errno;
	if (r >= 0) {
		snprintf(v, sizeof v, "%d", r);
		check("no_new_privs", r == 1, v);
	} else {
		snprintf(v, sizeof v, "prctl filtered: %s (checked from outside)", strerror(e));
		check("no_new_privs", e == EPERM, v);
	}

	/* seccomp mode; PR_GET_SECCOMP itself may be filtered */
	errno = 0;
	r = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
	e = errno;
	if (r >= 0) {
		snprintf(v, sizeof v, "%d", r);
		check("seccomp_mode", r == 2, v);
	} else {
		snprintf(v, sizeof v, "prctl filtered: %s (checked from outside)", strerror(e));
		check("seccomp_mode", e == EPERM, v);
	}

	/* a syscall every profile denies is refused with EPERM (the allowlist's
	 * default action), not run */
	errno = 0;
	r = (int)syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
	e = errno;
	snprintf(v, sizeof v, "keyctl returned %d errno %s", r, r < 0 ? strerror(e) : "-");
	check("denied_syscall_eperm", r < 0 && e == EPERM, v);

	/* capget: effective, permitted, inheritable all zero */
	{
		struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct d[2];

		memset(d, 0xff, sizeof d);
		r = (int)syscall(SYS_capget, &hdr, d);
		e = errno;
		if (r == 0) {
			snprintf(v, sizeof v, "eff %08x%08x prm %08x%08x inh %08x%08x",
				 d[1].effective, d[0].effective, d[1].permitted,
				 d[0].permitted, d[1].inheritable, d[0].inheritable);
			check("capget_all_zero",
			      !(d[0].effective | d[1].effective | d[0].permitted |
				d[1].permitted | d[0].inheritable | d[1].inheritable), v);
		} else {
			snprintf(v, sizeof v, "capget filtered: %s (checked from outside)", strerror(e));
			check("capget_all_zero", e == EPERM, v);
		}
	}

	/* bounding and ambient sets, cap by cap until the kernel says EINVAL */
	{
		int cap, bnd = 0, amb = 0, filtered = 0, last = -1;

		for (cap = 0; cap < 64; cap++) {
			errno = 0;
			r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
			if (r < 0 && errno == EINVAL)
				break;
			if (r < 0) {
				filtered = errno;
				break;
			}
			last = cap;
			bnd += r;
			r = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0);
			if (r > 0)
				amb++;
		}
		if (filtered) {
			snprintf(v, sizeof v, "PR_CAPBSET_READ filtered: %s (checked from outside)",
				 strerror(filtered));
			check("bounding_and_ambient_empty", filtered == EPERM, v);
		} else {
			snprintf(v, sizeof v, "caps 0..%d: %d in bounding, %d ambient", last, bnd, amb);
			check("bounding_and_ambient_empty", bnd == 0 && amb == 0 && last > 30, v);
		}
	}

	/* empty environment */
	{
		int n = 0;
		char **p;

		for (p = environ; p && *p; p++)
			n++;
		snprintf(v, sizeof v, "%d variables", n);
		check("environment_empty", n == 0, v);
	}

	/* only fds 0, 1, 2 */
	{
		int fd, extra = 0, odd = 0;
		size_t l = 0;

		v[0] = 0;
		for (fd = 0; fd < 4096; fd++) {
			errno = 0;
			r = fcntl(fd, F_GETFD);
			if (r >= 0) {
				if (fd > 2)
					extra++;
				if (l < sizeof v - 8)
					l += (size_t)snprintf(v + l, sizeof v - l, "%s%d", l ? "," : "", fd);
			} else if (errno != EBADF) {
				odd = errno;
			}
		}
		if (odd)
			snprintf(v, sizeof v, "fcntl(F_GETFD) failed with %s", strerror(odd));
		check("only_fds_0_1_2", extra == 0 && !odd && strcmp(v, "0,1,2") == 0, v);
	}

	/* not root */
	{
		uid_t u = getuid(), eu = geteuid();
		gid_t g = getgid(), eg = getegid();

		snprintf(v, sizeof v, "uid %u euid %u gid %u egid %u", u, eu, g, eg);
		check("not_root", u != 0 && eu != 0 && g != 0 && eg != 0, v);
	}

	/* RLIMIT_CORE 0 */
	{
		struct rlimit rl;

		r = getrlimit(RLIMIT_CORE, &rl);
		snprintf(v, sizeof v, "cur %llu max %llu", (unsigned long long)rl.rlim_cur,
			 (unsigned long long)rl.rlim_max);
		check("rlimit_core_zero", r == 0 && rl.rlim_cur == 0 && rl.rlim_max == 0, v);
	}

	/* /proc out of reach */
	errno = 0;
	r = access("/proc/self/status", F_OK);
	e = errno;
	snprintf(v, sizeof v, "access returned %d %s", r, r < 0 ? strerror(e) : "");
	check("proc_hidden", r < 0 && (e == ENOENT || e == EACCES || e == EPERM), v);

	/* hostname: informational (the harness compares UTS namespaces) */
	{
		struct utsname u;

		if (uname(&u) == 0)
			snprintf(v, sizeof v, "%s", u.nodename);
		else
			snprintf(v, sizeof v, "uname failed");
	}
	emit("],\"hostname\":");
	emit_str(v);
	emit(",\"ok\":%s}\n", all_ok ? "true" : "false");

	if (write(1, out, used) != (ssize_t)used)
		return 2;
	if (pause_secs > 0)
		pause_for(pause_secs);
	return all_ok ? 0 : 1;
}
