//! Capability handles: file descriptors carried with `SCM_RIGHTS` over
//! `SOCK_SEQPACKET` unix sockets.
//!
//! One datagram is one frame, in the same format as [`crate::frame`] (4-byte
//! little-endian length, then the payload); the length prefix must agree with
//! the datagram's size. Descriptors travel in the same datagram as the message
//! that announces them, so a message and its descriptors cannot be separated.
//!
//! **Invariants:**
//! - received descriptors are close-on-exec from the moment they exist
//!   (`MSG_CMSG_CLOEXEC`), so a concurrent `fork`+`exec` cannot leak them;
//! - a datagram or its descriptor list truncated by the kernel is an error,
//!   and every descriptor of a rejected message is closed before returning;
//! - at most [`MAX_FDS_PER_MESSAGE`] descriptors per message.
//!
//! These calls block on a blocking socket. On a non-blocking socket (e.g.
//! under `tokio::io::unix::AsyncFd`) they return an error for which
//! [`ProtoError::is_would_block`] is true; wait for readiness and retry.
//! Use one receiving thread per socket: a datagram is consumed whole.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::ProtoError;
use crate::frame::{self, HEADER_LEN};

/// Most descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 16;

/// Ancillary space for [`MAX_FDS_PER_MESSAGE`] descriptors.
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// Sends `payload` as one framed datagram with `fds` attached. The
/// descriptors stay open here; the receiver gets duplicates.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(ProtoError::TooManyFds {
            count: fds.len(),
            max: MAX_FDS_PER_MESSAGE,
        });
    }
    let header = frame::encode_header(payload.len(), u32::MAX as usize)?;
    let iov = [IoSlice::new(&header), IoSlice::new(payload)];
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ProtoError::TooManyFds {
            count: fds.len(),
            max: MAX_FDS_PER_MESSAGE,
        });
    }
    let expected = HEADER_LEN + payload.len();
    loop {
        // NOSIGNAL: a closed peer is an error for the caller, not a SIGPIPE
        // that kills the broker.
        match sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) if n == expected => return Ok(()),
            // SOCK_SEQPACKET sends are atomic; a short count means a stream socket.
            Ok(n) => {
                return Err(ProtoError::io(
                    "sending a frame with descriptors",
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!(
                            "sent {n} of {expected} bytes: the socket is not SOCK_SEQPACKET, \
                             use seqpacket_pair()"
                        ),
                    ),
                ))
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(ProtoError::io("sending a frame with descriptors", e.into())),
        }
    }
}

/// Receives one framed datagram of at most `max` payload bytes and the
/// descriptors attached to it (close-on-exec). A peer that has closed its end
/// gives [`ProtoError::Closed`].
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    max: usize,
) -> Result<(Vec<u8>, Vec<OwnedFd>), ProtoError> {
    let max = max.min(u32::MAX as usize);
    // One byte more than the largest acceptable datagram: a datagram of that
    // size is already oversized, whatever MSG_TRUNC says. The zeroed buffer is
    // untouched memory from the allocator until the kernel writes into it.
    let mut buf = vec![0u8; HEADER_LEN + max + 1];
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => break msg,
            Err(Errno::INTR) => {}
            Err(e) => {
                return Err(ProtoError::io(
                    "receiving a frame with descriptors",
                    e.into(),
                ))
            }
        }
    };

    // Take ownership of every descriptor first, so that each early return
    // below closes them.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    drop(control);

    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(ProtoError::FdsTruncated {
            max: MAX_FDS_PER_MESSAGE,
        });
    }
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.bytes > HEADER_LEN + max {
        return Err(ProtoError::DatagramTruncated { max });
    }
    let datagram = &buf[..msg.bytes];
    if datagram.is_empty() {
        // End of stream on SOCK_SEQPACKET (a zero-length datagram is not a frame either).
        return Err(ProtoError::Closed);
    }
    let Some(header) = datagram.first_chunk::<HEADER_LEN>() else {
        return Err(ProtoError::Truncated {
            part: "header",
            got: datagram.len(),
            expected: HEADER_LEN,
        });
    };
    let declared = frame::parse_header(*header, max)?;
    let actual = datagram.len() - HEADER_LEN;
    if declared != actual {
        return Err(ProtoError::LengthMismatch { declared, actual });
    }
    Ok((datagram[HEADER_LEN..].to_vec(), fds))
}

/// Encodes `msg` and sends it with `fds` attached.
pub fn send_msg_with_fds<T: Serialize + ?Sized>(
    sock: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    send_with_fds(sock, &codec::encode(msg)?, fds)
}

/// Receives and decodes one message and its descriptors. If the message does
/// not decode, its descriptors are closed.
pub fn recv_msg_with_fds<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
    max: usize,
) -> Result<(T, Vec<OwnedFd>), ProtoError> {
    let (payload, fds) = recv_with_fds(sock, max)?;
    Ok((codec::decode(&payload)?, fds))
}

fn pair(kind: SocketType) -> Result<(OwnedFd, OwnedFd), ProtoError> {
    socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
        .map_err(|e| ProtoError::io("creating a unix socket pair", e.into()))
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair (close-on-exec), for
/// [`send_with_fds`]/[`recv_with_fds`] (e.g. bootstrap channels).
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), ProtoError> {
    pair(SocketType::SEQPACKET)
}

/// A connected `AF_UNIX` `SOCK_STREAM` pair (close-on-exec), for capability
/// channels used with [`crate::channel::Channel`]: convert an end with
/// `std::os::unix::net::UnixStream::from`, `set_nonblocking(true)`, then
/// `tokio::net::UnixStream::from_std`.
pub fn stream_pair() -> Result<(OwnedFd, OwnedFd), ProtoError> {
    pair(SocketType::STREAM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{BrokerMsg, CapGrant, CapId, CapKind, CapRole, Right};
    use std::os::fd::AsFd;

    /// True when every write end of the pipe whose read end is `read` has
    /// been closed (read gives EOF rather than "would block").
    fn all_writers_closed(read: &OwnedFd) -> bool {
        rustix::io::ioctl_fionbio(read, true).unwrap();
        let mut buf = [0u8; 8];
        loop {
            match rustix::io::read(read, &mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(Errno::AGAIN) => return false,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn pipe_end_round_trip() {
        let (tx, rx) = seqpacket_pair().unwrap();
        let (pipe_r, pipe_w) = rustix::pipe::pipe().unwrap();

        send_with_fds(tx.as_fd(), b"take this", &[pipe_w.as_fd()]).unwrap();
        drop(pipe_w);
        let (payload, mut fds) = recv_with_fds(rx.as_fd(), 64).unwrap();
        assert_eq!(payload, b"take this");
        assert_eq!(fds.len(), 1);
        let received = fds.remove(0);
        let flags = rustix::io::fcntl_getfd(&received).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));

        assert_eq!(rustix::io::write(&received, b"through").unwrap(), 7);
        drop(received);
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&pipe_r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"through");
        assert!(all_writers_closed(&pipe_r));
    }

    #[test]
    fn typed_round_trip_with_several_fds() {
        let (tx, rx) = seqpacket_pair().unwrap();
        let (a, _a_peer) = stream_pair().unwrap();
        let (b, _b_peer) = stream_pair().unwrap();
        let msg = BrokerMsg::Grant(vec![
            CapGrant {
                id: CapId(1),
                kind: CapKind::Reasoning,
                role: CapRole::Client,
                rights: vec![Right::Ping, Right::Infer],
            },
            CapGrant {
                id: CapId(2),
                kind: CapKind::Reasoning,
                role: CapRole::Server,
                rights: vec![],
            },
        ]);
        send_msg_with_fds(tx.as_fd(), &msg, &[a.as_fd(), b.as_fd()]).unwrap();
        let (got, fds): (BrokerMsg, _) = recv_msg_with_fds(rx.as_fd(), 1024).unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 2);

        send_msg_with_fds(tx.as_fd(), &BrokerMsg::Shutdown, &[]).unwrap();
        let (got, fds): (BrokerMsg, _) = recv_msg_with_fds(rx.as_fd(), 1024).unwrap();
        assert_eq!((got, fds.len()), (BrokerMsg::Shutdown, 0));

        drop(tx);
        let err = recv_with_fds(rx.as_fd(), 1024).unwrap_err();
        assert!(matches!(err, ProtoError::Closed), "{err:?}");
    }

    #[test]
    fn too_many_fds_refused_by_sender() {
        let (tx, _rx) = seqpacket_pair().unwrap();
        let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
        let fds = vec![pipe_r.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        let err = send_with_fds(tx.as_fd(), b"x", &fds).unwrap_err();
        assert!(
            matches!(err, ProtoError::TooManyFds { count: 17, max: 16 }),
            "{err:?}"
        );
        let fds = vec![pipe_r.as_fd(); MAX_FDS_PER_MESSAGE];
        send_with_fds(tx.as_fd(), b"x", &fds).unwrap();
    }

    /// Sends raw bytes (and fds) without our framing or limits, as a hostile peer would.
    fn raw_send(sock: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(64))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        }
        sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .unwrap();
    }

    #[test]
    fn truncated_fd_list_is_an_error_and_closes_fds() {
        let (tx, rx) = seqpacket_pair().unwrap();
        let (pipe_r, pipe_w) = rustix::pipe::pipe().unwrap();
        let fds = vec![pipe_w.as_fd(); MAX_FDS_PER_MESSAGE + 4];
        raw_send(&tx, &[1, 0, 0, 0, 7], &fds);
        drop(pipe_w);
        let err = recv_with_fds(rx.as_fd(), 64).unwrap_err();
        assert!(
            matches!(err, ProtoError::FdsTruncated { max: 16 }),
            "{err:?}"
        );
        assert!(all_writers_closed(&pipe_r));
    }

    #[test]
    fn oversized_datagram_is_an_error_and_closes_fds() {
        let (tx, rx) = seqpacket_pair().unwrap();
        let (pipe_r, pipe_w) = rustix::pipe::pipe().unwrap();
        send_with_fds(tx.as_fd(), &[5; 100], &[pipe_w.as_fd()]).unwrap();
        drop(pipe_w);
        let err = recv_with_fds(rx.as_fd(), 99).unwrap_err();
        assert!(
            matches!(err, ProtoError::DatagramTruncated { max: 99 }),
            "{err:?}"
        );
        assert!(all_writers_closed(&pipe_r));
    }

    #[test]
    fn bad_datagrams_are_typed_errors() {
        let (tx, rx) = seqpacket_pair().unwrap();
        let recv = || recv_with_fds(rx.as_fd(), 64).unwrap_err();

        raw_send(&tx, &[3, 0, 0, 0, 1, 2], &[]);
        let err = recv();
        assert!(
            matches!(
                err,
                ProtoError::LengthMismatch {
                    declared: 3,
                    actual: 2
                }
            ),
            "{err:?}"
        );
        raw_send(&tx, &[1, 0, 0, 0, 1, 2], &[]);
        let err = recv();
        assert!(
            matches!(
                err,
                ProtoError::LengthMismatch {
                    declared: 1,
                    actual: 2
                }
            ),
            "{err:?}"
        );
        raw_send(&tx, &[0, 0, 0, 0], &[]);
        let err = recv();
        assert!(matches!(err, ProtoError::EmptyFrame), "{err:?}");
        raw_send(&tx, &[1, 0], &[]);
        let err = recv();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "header",
                    got: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut big = 100u32.to_le_bytes().to_vec();
        big.extend_from_slice(&[0; 10]);
        raw_send(&tx, &big, &[]);
        let err = recv();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { len: 100, max: 64 }),
            "{err:?}"
        );
        // Garbage payload for the typed receiver.
        raw_send(&tx, &[1, 0, 0, 0, 200], &[]);
        let err = recv_msg_with_fds::<BrokerMsg>(rx.as_fd(), 64).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn nonblocking_receive_would_block() {
        let (_tx, rx) = seqpacket_pair().unwrap();
        rustix::io::ioctl_fionbio(&rx, true).unwrap();
        let err = recv_with_fds(rx.as_fd(), 64).unwrap_err();
        assert!(err.is_would_block(), "{err:?}");
    }
}
