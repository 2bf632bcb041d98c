//! The bootstrap channel: the only descriptor a sandboxed child inherits
//! (always fd [`BOOTSTRAP_FD`]), a `SOCK_SEQPACKET` socket to the broker.
//!
//! Sequence: the child enters its sandbox, sends [`Handshake`] and
//! [`ChildMsg::Hello`], then blocks until the broker has attested it from the
//! outside and answers with its handshake and a first [`BrokerMsg::Grant`].
//! Blocking matters: until that grant arrives the child must not open any
//! descriptor or start any thread, so that the broker sees exactly the
//! declared fd table and one thread.

use crate::channel::{check_handshake, HANDSHAKE_MAX_FRAME};
use crate::error::ProtoError;
use crate::fdpass::{recv_msg_with_fds, recv_with_fds, send_msg_with_fds};
use crate::msg::{BrokerMsg, CapGrant, ChildMsg, Component, Handshake, SelfReport, ServiceKind};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Where a sandboxed child finds its bootstrap channel.
pub const BOOTSTRAP_FD: RawFd = 3;

/// Frame limit on the bootstrap channel; its messages are small.
pub const BOOTSTRAP_MAX_FRAME: usize = 64 * 1024;

/// Receive the peer's handshake on a blocking bootstrap socket and check it
/// with the same rules as every other channel ([`crate::channel::check_handshake`]:
/// magic and version before the rest, so a newer peer gets `VersionMismatch`).
fn recv_handshake(fd: BorrowedFd<'_>) -> Result<(), ProtoError> {
    let (payload, fds) = recv_with_fds(fd, HANDSHAKE_MAX_FRAME)?;
    drop(fds);
    check_handshake(&payload, ServiceKind::Bootstrap).map(|_| ())
}

/// The async form of [`recv_handshake`], for the broker's side.
pub async fn recv_handshake_async(
    fd: &tokio::io::unix::AsyncFd<OwnedFd>,
) -> Result<(), ProtoError> {
    loop {
        let mut guard = fd.readable().await.map_err(|e| ProtoError::Io {
            op: "waiting for the bootstrap channel",
            source: e,
        })?;
        match recv_handshake(fd.get_ref().as_fd()) {
            Err(e) if e.is_would_block() => {
                guard.clear_ready();
                continue;
            }
            other => return other,
        }
    }
}

/// The child's end of the bootstrap channel.
#[derive(Debug)]
pub struct ChildBootstrap {
    fd: OwnedFd,
}

impl ChildBootstrap {
    /// Take ownership of the inherited [`BOOTSTRAP_FD`].
    ///
    /// # Safety
    /// Must be called at most once per process, by a child the broker spawned
    /// (which guarantees fd 3 is the bootstrap socket).
    pub unsafe fn from_inherited() -> ChildBootstrap {
        // SAFETY: the caller guarantees fd 3 is open, ours, and taken once.
        let fd = unsafe { OwnedFd::from_raw_fd(BOOTSTRAP_FD) };
        ChildBootstrap { fd }
    }

    /// Announce this component after it entered its sandbox.
    pub fn hello(&self, component: Component, report: SelfReport) -> Result<(), ProtoError> {
        send_msg_with_fds(
            self.fd.as_fd(),
            &Handshake::new(ServiceKind::Bootstrap),
            &[],
        )?;
        send_msg_with_fds(self.fd.as_fd(), &ChildMsg::Hello { component, report }, &[])
    }

    /// Block until the broker attested this process and sent the first grant.
    pub fn wait_grant(&self) -> Result<(Vec<CapGrant>, Vec<OwnedFd>), ProtoError> {
        recv_handshake(self.fd.as_fd())?;
        match recv_msg_with_fds::<BrokerMsg>(self.fd.as_fd(), BOOTSTRAP_MAX_FRAME)? {
            (BrokerMsg::Grant(grants), fds) => Ok((grants, fds)),
            (BrokerMsg::Shutdown, _) => Err(ProtoError::Closed),
            (_, _) => Err(ProtoError::Decode {
                type_name: "BrokerMsg::Grant",
                len: 0,
                reason: "the first message after the handshake must be a grant".into(),
            }),
        }
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for ChildBootstrap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Pair received fds with grants, in order. Extra or missing fds are a
/// protocol violation.
pub fn pair_grants(
    grants: Vec<CapGrant>,
    fds: Vec<OwnedFd>,
) -> Result<Vec<(CapGrant, OwnedFd)>, ProtoError> {
    if grants.len() != fds.len() {
        return Err(ProtoError::Decode {
            type_name: "BrokerMsg::Grant",
            len: grants.len(),
            reason: format!(
                "{} grants arrived with {} descriptors",
                grants.len(),
                fds.len()
            ),
        });
    }
    Ok(grants.into_iter().zip(fds).collect())
}

/// Receive one message on a non-blocking seqpacket socket registered with
/// tokio; used by both the broker and the children after bootstrap.
pub async fn recv_async<T: serde::de::DeserializeOwned>(
    fd: &tokio::io::unix::AsyncFd<OwnedFd>,
    max: usize,
) -> Result<(T, Vec<OwnedFd>), ProtoError> {
    loop {
        let mut guard = fd.readable().await.map_err(|e| ProtoError::Io {
            op: "waiting for the bootstrap channel",
            source: e,
        })?;
        match recv_msg_with_fds::<T>(fd.get_ref().as_fd(), max) {
            Err(e) if e.is_would_block() => {
                guard.clear_ready();
                continue;
            }
            other => return other,
        }
    }
}

/// Send one message with descriptors on a non-blocking seqpacket socket.
pub async fn send_async<T: serde::Serialize>(
    fd: &tokio::io::unix::AsyncFd<OwnedFd>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    loop {
        let mut guard = fd.writable().await.map_err(|e| ProtoError::Io {
            op: "waiting for the bootstrap channel",
            source: e,
        })?;
        match send_msg_with_fds(fd.get_ref().as_fd(), msg, fds) {
            Err(e) if e.is_would_block() => {
                guard.clear_ready();
                continue;
            }
            other => return other,
        }
    }
}

/// Register an owned descriptor with the current tokio reactor.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`; nothing else can close or
    // replace the descriptor while it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// Register an owned descriptor for readability only (e.g. a pidfd).
pub fn async_fd_readable(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: as in `async_fd`: the AsyncFd owns the descriptor.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}
