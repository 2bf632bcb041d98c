//! Thin checked wrappers over the raw syscalls the entry steps use. Each
//! returns `std::io::Error::last_os_error()` on failure; callers attach the
//! step and syscall names.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub(crate) fn cstring(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn check_int(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; the caller guarantees no
    // live Rust object owns a descriptor in the range (enter documents this).
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) }).map(|_| ())
}

pub(crate) fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let conv = |s: Option<&str>| -> io::Result<Option<CString>> {
        s.map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
            .transpose()
    };
    let (src, fst, dat) = (conv(source)?, conv(fstype)?, conv(data)?);
    let tgt = cstring(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either NULL or a NUL-terminated string that
    // lives until the call returns.
    check_int(unsafe {
        libc::mount(
            ptr(&src),
            tgt.as_ptr(),
            ptr(&fst),
            flags,
            ptr(&dat).cast::<libc::c_void>(),
        )
    })
}

pub(crate) fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstring(target)?;
    // SAFETY: t is a NUL-terminated string alive for the call.
    check_int(unsafe { libc::umount2(t.as_ptr(), flags) })
}

pub(crate) fn pivot_root_dot() -> io::Result<()> {
    let dot = c".";
    // SAFETY: both arguments are static NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) }).map(|_| ())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached recursive copy of the mount tree at `path`.
pub(crate) fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let p = cstring(path)?;
    // SAFETY: p is NUL-terminated and alive for the call; the kernel returns a
    // new descriptor that we own.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE,
        )
    })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: fd was just returned by open_tree and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set `attr_set` flags (and private propagation) on every mount of a tree.
pub(crate) fn mount_setattr_tree(fd: RawFd, attr_set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: "" is a static C string; attr is a valid mount_attr of the size
    // passed, alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(|_| ())
}

/// Attach a detached tree at `target`.
pub(crate) fn move_mount_to(fd: RawFd, target: &Path) -> io::Result<()> {
    let t = cstring(target)?;
    // SAFETY: both strings are NUL-terminated and alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(|_| ())
}

pub(crate) fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the prctl options used by this crate take only integer
    // arguments (no pointers).
    let r = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn pidfd_send_signal0(pidfd: RawFd) -> io::Result<()> {
    // SAFETY: signal 0 with a NULL siginfo and no flags only checks that the
    // process behind the pidfd exists and may be signalled.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    })
    .map(|_| ())
}
