//! Typed channels: frames of [`codec`]-encoded messages over a byte stream,
//! opened by a version handshake.
//!
//! Both sides send [`Handshake::new`] as their first frame, then read and check
//! the peer's ([`check_handshake`]): magic, then version, then service, each a
//! distinct [`ProtoError`]. The handshake frame is read with a limit of
//! [`HANDSHAKE_MAX_FRAME`] bytes, so an unauthenticated peer cannot make the
//! other side allocate a full frame before it has proved it speaks Flow.
//! Handshakes have no timeout of their own; wrap them in `tokio::time::timeout`
//! (or set a socket read timeout for [`SyncChannel`]).
//!
//! [`Channel`] is async (tokio); [`SyncChannel`] is the blocking variant for the
//! `flow` CLI. Both split into a receiving and a sending half for concurrent
//! use (one task reading requests while others write responses).

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::codec;
use crate::error::ProtoError;
use crate::frame::{FrameBuffer, DEFAULT_MAX_FRAME};
use crate::msg::{Handshake, ServiceKind, MAGIC, PROTOCOL_VERSION};

/// Limit for the handshake frame (an encoded [`Handshake`] is 7 bytes or less).
pub const HANDSHAKE_MAX_FRAME: usize = 64;

/// The part of [`Handshake`] that every protocol version must keep, decoded
/// first so that a peer of another version gets [`ProtoError::VersionMismatch`]
/// even if the rest of its handshake (a new service kind) does not decode here.
#[derive(Deserialize)]
struct HandshakePrefix {
    magic: [u8; 4],
    version: u16,
}

/// Checks a peer's handshake payload against the service this side expects.
pub fn check_handshake(payload: &[u8], expected: ServiceKind) -> Result<Handshake, ProtoError> {
    let (prefix, _) = codec::take::<HandshakePrefix>(payload)?;
    if prefix.magic != MAGIC {
        return Err(ProtoError::BadMagic {
            got: prefix.magic,
            expected: MAGIC,
        });
    }
    if prefix.version != PROTOCOL_VERSION {
        return Err(ProtoError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: prefix.version,
        });
    }
    let handshake: Handshake = codec::decode(payload)?;
    if handshake.service != expected {
        return Err(ProtoError::WrongService {
            expected,
            got: handshake.service,
        });
    }
    Ok(handshake)
}

async fn send_async<W: AsyncWrite + Unpin + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), ProtoError> {
    let frame = codec::encode_frame(msg, max)?;
    let op = "sending a message";
    w.write_all(&frame)
        .await
        .map_err(|e| ProtoError::io(op, e))?;
    w.flush().await.map_err(|e| ProtoError::io(op, e))
}

fn send_sync<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), ProtoError> {
    let frame = codec::encode_frame(msg, max)?;
    let op = "sending a message";
    w.write_all(&frame).map_err(|e| ProtoError::io(op, e))?;
    w.flush().map_err(|e| ProtoError::io(op, e))
}

/// An async typed channel over a byte stream `S` (e.g. a
/// `tokio::net::UnixStream`), after a successful handshake.
///
/// `recv` is cancel-safe (a partly read frame stays buffered in the channel);
/// `send` is not: a cancelled `send` may leave half a frame on the stream, and
/// the channel must then be dropped.
#[derive(Debug)]
pub struct Channel<S> {
    stream: S,
    rbuf: FrameBuffer,
    max_frame: usize,
    service: ServiceKind,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Sends this side's handshake, reads and checks the peer's, with the
    /// default frame limit ([`DEFAULT_MAX_FRAME`]).
    pub async fn handshake(stream: S, service: ServiceKind) -> Result<Channel<S>, ProtoError> {
        Channel::handshake_with_max_frame(stream, service, DEFAULT_MAX_FRAME).await
    }

    /// [`Channel::handshake`] with a frame limit for all later messages.
    pub async fn handshake_with_max_frame(
        mut stream: S,
        service: ServiceKind,
        max_frame: usize,
    ) -> Result<Channel<S>, ProtoError> {
        send_async(&mut stream, &Handshake::new(service), HANDSHAKE_MAX_FRAME).await?;
        let mut rbuf = FrameBuffer::new();
        let payload = rbuf.read_async(&mut stream, HANDSHAKE_MAX_FRAME).await?;
        check_handshake(&payload, service)?;
        Ok(Channel {
            stream,
            rbuf,
            max_frame,
            service,
        })
    }

    /// Encodes and sends one message, then flushes.
    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), ProtoError> {
        send_async(&mut self.stream, msg, self.max_frame).await
    }

    /// Receives and decodes one message. Cancel-safe.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        let payload = self
            .rbuf
            .read_async(&mut self.stream, self.max_frame)
            .await?;
        codec::decode(&payload)
    }

    /// Splits into halves that can be used from different tasks, through
    /// `tokio::io::split` (a lock shared by the halves). For a
    /// `tokio::net::UnixStream`, [`Channel::into_split`] avoids the lock.
    pub fn split(
        self,
    ) -> (
        RecvHalf<tokio::io::ReadHalf<S>>,
        SendHalf<tokio::io::WriteHalf<S>>,
    ) {
        let Channel {
            stream,
            rbuf,
            max_frame,
            service,
        } = self;
        let (reader, writer) = tokio::io::split(stream);
        halves(reader, writer, rbuf, max_frame, service)
    }
}

fn halves<R, W>(
    reader: R,
    writer: W,
    rbuf: FrameBuffer,
    max_frame: usize,
    service: ServiceKind,
) -> (RecvHalf<R>, SendHalf<W>) {
    (
        RecvHalf {
            reader,
            rbuf,
            max_frame,
            service,
        },
        SendHalf {
            writer,
            max_frame,
            service,
        },
    )
}

impl<S> Channel<S> {
    /// The service agreed in the handshake.
    pub fn service(&self) -> ServiceKind {
        self.service
    }

    /// The current frame limit for both directions.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the frame limit for both directions.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

impl Channel<tokio::net::UnixStream> {
    /// Splits a unix-socket channel into owned halves without a shared lock.
    pub fn into_split(
        self,
    ) -> (
        RecvHalf<tokio::net::unix::OwnedReadHalf>,
        SendHalf<tokio::net::unix::OwnedWriteHalf>,
    ) {
        let (reader, writer) = self.stream.into_split();
        halves(reader, writer, self.rbuf, self.max_frame, self.service)
    }
}

/// The receiving half of a split [`Channel`]. `recv` is cancel-safe.
#[derive(Debug)]
pub struct RecvHalf<R> {
    reader: R,
    rbuf: FrameBuffer,
    max_frame: usize,
    service: ServiceKind,
}

impl<R: AsyncRead + Unpin> RecvHalf<R> {
    /// Receives and decodes one message. Cancel-safe.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        let payload = self
            .rbuf
            .read_async(&mut self.reader, self.max_frame)
            .await?;
        codec::decode(&payload)
    }
}

impl<R> RecvHalf<R> {
    /// The service agreed in the handshake.
    pub fn service(&self) -> ServiceKind {
        self.service
    }

    /// Changes the frame limit for received messages.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

/// The sending half of a split [`Channel`]. `send` is not cancel-safe.
#[derive(Debug)]
pub struct SendHalf<W> {
    writer: W,
    max_frame: usize,
    service: ServiceKind,
}

impl<W: AsyncWrite + Unpin> SendHalf<W> {
    /// Encodes and sends one message, then flushes.
    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), ProtoError> {
        send_async(&mut self.writer, msg, self.max_frame).await
    }

    /// Shuts down the write direction; the peer's `recv` then sees
    /// [`ProtoError::Closed`].
    pub async fn shutdown(&mut self) -> Result<(), ProtoError> {
        self.writer
            .shutdown()
            .await
            .map_err(|e| ProtoError::io("shutting down a channel", e))
    }
}

impl<W> SendHalf<W> {
    /// The service agreed in the handshake.
    pub fn service(&self) -> ServiceKind {
        self.service
    }

    /// Changes the frame limit for sent messages.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

/// A blocking typed channel over a `Read + Write` stream (e.g. a
/// `std::os::unix::net::UnixStream`), after a successful handshake.
///
/// With a socket read timeout set, a timed-out `recv` returns
/// [`ProtoError::Io`] and keeps any partly read frame, so it can be retried.
#[derive(Debug)]
pub struct SyncChannel<S> {
    stream: S,
    rbuf: FrameBuffer,
    max_frame: usize,
    service: ServiceKind,
}

impl<S: Read + Write> SyncChannel<S> {
    /// Sends this side's handshake, reads and checks the peer's, with the
    /// default frame limit ([`DEFAULT_MAX_FRAME`]).
    pub fn handshake(stream: S, service: ServiceKind) -> Result<SyncChannel<S>, ProtoError> {
        SyncChannel::handshake_with_max_frame(stream, service, DEFAULT_MAX_FRAME)
    }

    /// [`SyncChannel::handshake`] with a frame limit for all later messages.
    pub fn handshake_with_max_frame(
        mut stream: S,
        service: ServiceKind,
        max_frame: usize,
    ) -> Result<SyncChannel<S>, ProtoError> {
        send_sync(&mut stream, &Handshake::new(service), HANDSHAKE_MAX_FRAME)?;
        let mut rbuf = FrameBuffer::new();
        let payload = rbuf.read_sync(&mut stream, HANDSHAKE_MAX_FRAME)?;
        check_handshake(&payload, service)?;
        Ok(SyncChannel {
            stream,
            rbuf,
            max_frame,
            service,
        })
    }

    /// Encodes and sends one message, then flushes.
    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), ProtoError> {
        send_sync(&mut self.stream, msg, self.max_frame)
    }

    /// Receives and decodes one message.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        let payload = self.rbuf.read_sync(&mut self.stream, self.max_frame)?;
        codec::decode(&payload)
    }
}

impl<S> SyncChannel<S> {
    /// The service agreed in the handshake.
    pub fn service(&self) -> ServiceKind {
        self.service
    }

    /// The current frame limit for both directions.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the frame limit for both directions.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The underlying stream, e.g. to set timeouts. Reading or writing it
    /// directly would corrupt the framing.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl SyncChannel<std::os::unix::net::UnixStream> {
    /// Splits into halves for use from two threads (the socket is duplicated
    /// with `try_clone`).
    pub fn try_split(
        self,
    ) -> Result<
        (
            SyncRecvHalf<std::os::unix::net::UnixStream>,
            SyncSendHalf<std::os::unix::net::UnixStream>,
        ),
        ProtoError,
    > {
        let writer = self
            .stream
            .try_clone()
            .map_err(|e| ProtoError::io("duplicating a channel socket", e))?;
        Ok((
            SyncRecvHalf {
                reader: self.stream,
                rbuf: self.rbuf,
                max_frame: self.max_frame,
                service: self.service,
            },
            SyncSendHalf {
                writer,
                max_frame: self.max_frame,
                service: self.service,
            },
        ))
    }
}

/// The receiving half of a split [`SyncChannel`].
#[derive(Debug)]
pub struct SyncRecvHalf<R> {
    reader: R,
    rbuf: FrameBuffer,
    max_frame: usize,
    service: ServiceKind,
}

impl<R: Read> SyncRecvHalf<R> {
    /// Receives and decodes one message.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        let payload = self.rbuf.read_sync(&mut self.reader, self.max_frame)?;
        codec::decode(&payload)
    }
}

impl<R> SyncRecvHalf<R> {
    /// The service agreed in the handshake.
    pub fn service(&self) -> ServiceKind {
        self.service
    }
}

/// The sending half of a split [`SyncChannel`].
#[derive(Debug)]
pub struct SyncSendHalf<W> {
    writer: W,
    max_frame: usize,
    service: ServiceKind,
}

impl<W: Write> SyncSendHalf<W> {
    /// Encodes and sends one message, then flushes.
    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), ProtoError> {
        send_sync(&mut self.writer, msg, self.max_frame)
    }
}

impl<W> SyncSendHalf<W> {
    /// The service agreed in the handshake.
    pub fn service(&self) -> ServiceKind {
        self.service
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{read_frame_async, write_frame_async};
    use crate::msg::{ReasoningRequest, ReasoningResponse};
    use tokio::net::UnixStream;

    fn payload(h: &Handshake) -> Vec<u8> {
        codec::encode(h).unwrap()
    }

    #[test]
    fn check_handshake_accepts_ours() {
        let h = Handshake::new(ServiceKind::Reasoning);
        assert_eq!(
            check_handshake(&payload(&h), ServiceKind::Reasoning).unwrap(),
            h
        );
    }

    #[test]
    fn check_handshake_bad_magic() {
        let mut h = Handshake::new(ServiceKind::Control);
        h.magic = *b"HTTP";
        let err = check_handshake(&payload(&h), ServiceKind::Control).unwrap_err();
        assert!(
            matches!(err, ProtoError::BadMagic { got, expected } if got == *b"HTTP" && expected == MAGIC),
            "{err:?}"
        );
    }

    #[test]
    fn check_handshake_wrong_version_even_with_unknown_service() {
        let mut h = Handshake::new(ServiceKind::Control);
        h.version = PROTOCOL_VERSION + 1;
        let err = check_handshake(&payload(&h), ServiceKind::Control).unwrap_err();
        assert!(
            matches!(err, ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs } if theirs == PROTOCOL_VERSION + 1),
            "{err:?}"
        );
        // A future peer with a service variant this version does not know.
        let mut bytes = payload(&h);
        *bytes.last_mut().unwrap() = 99;
        let err = check_handshake(&bytes, ServiceKind::Control).unwrap_err();
        assert!(matches!(err, ProtoError::VersionMismatch { .. }), "{err:?}");
    }

    #[test]
    fn check_handshake_wrong_service() {
        let h = Handshake::new(ServiceKind::Control);
        let err = check_handshake(&payload(&h), ServiceKind::Reasoning).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::WrongService {
                    expected: ServiceKind::Reasoning,
                    got: ServiceKind::Control
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn check_handshake_garbage_and_trailing() {
        let err = check_handshake(b"FL", ServiceKind::Control).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err:?}");
        let mut bytes = payload(&Handshake::new(ServiceKind::Control));
        bytes.push(0);
        let err = check_handshake(&bytes, ServiceKind::Control).unwrap_err();
        assert!(
            matches!(err, ProtoError::TrailingBytes { extra: 1, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn handshake_then_request_response() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            let mut ch = Channel::handshake(b, ServiceKind::Reasoning).await.unwrap();
            let ReasoningRequest::Ping { id, payload } = ch.recv().await.unwrap() else {
                panic!("expected a ping");
            };
            ch.send(&ReasoningResponse::Pong { id, payload })
                .await
                .unwrap();
        });
        let mut ch = Channel::handshake(a, ServiceKind::Reasoning).await.unwrap();
        assert_eq!(ch.service(), ServiceKind::Reasoning);
        ch.send(&ReasoningRequest::Ping {
            id: 4,
            payload: vec![1, 2],
        })
        .await
        .unwrap();
        let resp: ReasoningResponse = ch.recv().await.unwrap();
        assert_eq!(
            resp,
            ReasoningResponse::Pong {
                id: 4,
                payload: vec![1, 2]
            }
        );
        server.await.unwrap();
        let err = ch.recv::<ReasoningResponse>().await.unwrap_err();
        assert!(matches!(err, ProtoError::Closed), "{err:?}");
    }

    #[tokio::test]
    async fn handshake_rejects_wrong_service() {
        let (a, b) = UnixStream::pair().unwrap();
        let other = tokio::spawn(Channel::handshake(b, ServiceKind::Control));
        let err = Channel::handshake(a, ServiceKind::Reasoning)
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::WrongService { .. }), "{err:?}");
        let err = other.await.unwrap().unwrap_err();
        assert!(matches!(err, ProtoError::WrongService { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn handshake_rejects_raw_peers() {
        // Wrong magic from a raw peer.
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut h = Handshake::new(ServiceKind::Control);
        h.magic = *b"XXXX";
        write_frame_async(&mut b, &payload(&h), 64).await.unwrap();
        let err = Channel::handshake(a, ServiceKind::Control)
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::BadMagic { .. }), "{err:?}");
        // The peer still received our handshake.
        let ours = read_frame_async(&mut b, 64).await.unwrap();
        assert_eq!(ours, payload(&Handshake::new(ServiceKind::Control)));

        // Wrong version.
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut h = Handshake::new(ServiceKind::Control);
        h.version = 0;
        write_frame_async(&mut b, &payload(&h), 64).await.unwrap();
        let err = Channel::handshake(a, ServiceKind::Control)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProtoError::VersionMismatch { theirs: 0, .. }),
            "{err:?}"
        );

        // A handshake frame larger than the handshake limit.
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&1000u32.to_le_bytes()).await.unwrap();
        let err = Channel::handshake(a, ServiceKind::Control)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::FrameTooLarge {
                    len: 1000,
                    max: HANDSHAKE_MAX_FRAME
                }
            ),
            "{err:?}"
        );

        // Peer hangs up before its handshake.
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = Channel::handshake(a, ServiceKind::Control)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProtoError::Closed | ProtoError::Io { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn max_frame_applies_after_handshake() {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(async move {
            let mut ch = Channel::handshake(b, ServiceKind::Reasoning).await.unwrap();
            ch.send(&ReasoningRequest::Ping {
                id: 1,
                payload: vec![0; 100],
            })
            .await
            .unwrap();
            ch
        });
        let mut ch = Channel::handshake_with_max_frame(a, ServiceKind::Reasoning, 50)
            .await
            .unwrap();
        assert_eq!(ch.max_frame(), 50);
        let err = ch
            .send(&ReasoningRequest::Ping {
                id: 1,
                payload: vec![0; 100],
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { max: 50, .. }),
            "{err:?}"
        );
        let err = ch.recv::<ReasoningRequest>().await.unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { max: 50, .. }),
            "{err:?}"
        );
        drop(peer.await.unwrap());
    }

    #[tokio::test]
    async fn split_halves_pipeline() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            let ch = Channel::handshake(b, ServiceKind::Reasoning).await.unwrap();
            let (mut rx, mut tx) = ch.into_split();
            // Echo with a separate writer task, as a concurrent server would.
            let (q_tx, mut q_rx) = tokio::sync::mpsc::channel::<ReasoningResponse>(8);
            let writer = tokio::spawn(async move {
                while let Some(resp) = q_rx.recv().await {
                    tx.send(&resp).await.unwrap();
                }
            });
            loop {
                match rx.recv::<ReasoningRequest>().await {
                    Ok(ReasoningRequest::Ping { id, payload }) => q_tx
                        .send(ReasoningResponse::Pong { id, payload })
                        .await
                        .unwrap(),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(ProtoError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            drop(q_tx);
            writer.await.unwrap();
        });
        let ch = Channel::handshake(a, ServiceKind::Reasoning).await.unwrap();
        let (mut rx, mut tx) = ch.split();
        let sender = tokio::spawn(async move {
            for id in 0..100u64 {
                tx.send(&ReasoningRequest::Ping {
                    id,
                    payload: vec![id as u8; id as usize * 50],
                })
                .await
                .unwrap();
            }
            tx.shutdown().await.unwrap();
        });
        for id in 0..100u64 {
            let resp: ReasoningResponse = rx.recv().await.unwrap();
            assert_eq!(
                resp,
                ReasoningResponse::Pong {
                    id,
                    payload: vec![id as u8; id as usize * 50]
                }
            );
        }
        sender.await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn recv_is_cancel_safe() {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(Channel::handshake(b, ServiceKind::Control));
        let mut ch = Channel::handshake(a, ServiceKind::Control).await.unwrap();
        let mut peer = peer.await.unwrap().unwrap();
        let frame = codec::encode_frame(&crate::msg::ControlRequest::Down, 64).unwrap();
        // Half a frame, then a cancelled recv, then the rest.
        peer.stream.write_all(&frame[..3]).await.unwrap();
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            ch.recv::<crate::msg::ControlRequest>(),
        )
        .await;
        assert!(cancelled.is_err());
        peer.stream.write_all(&frame[3..]).await.unwrap();
        let got: crate::msg::ControlRequest = ch.recv().await.unwrap();
        assert_eq!(got, crate::msg::ControlRequest::Down);
    }

    #[test]
    fn sync_channel_round_trip_and_split() {
        use crate::msg::{ControlRequest, ControlResponse};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut ch = SyncChannel::handshake(b, ServiceKind::Control).unwrap();
            assert_eq!(ch.recv::<ControlRequest>().unwrap(), ControlRequest::Status);
            ch.send(&ControlResponse::Ok).unwrap();
            let (mut rx, mut tx) = ch.try_split().unwrap();
            assert_eq!(rx.recv::<ControlRequest>().unwrap(), ControlRequest::Down);
            tx.send(&ControlResponse::Ok).unwrap();
        });
        let mut ch = SyncChannel::handshake(a, ServiceKind::Control).unwrap();
        ch.send(&ControlRequest::Status).unwrap();
        assert_eq!(ch.recv::<ControlResponse>().unwrap(), ControlResponse::Ok);
        ch.send(&ControlRequest::Down).unwrap();
        assert_eq!(ch.recv::<ControlResponse>().unwrap(), ControlResponse::Ok);
        server.join().unwrap();
        let err = ch.recv::<ControlResponse>().unwrap_err();
        assert!(matches!(err, ProtoError::Closed), "{err:?}");
    }

    #[test]
    fn sync_channel_wrong_service() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let other = std::thread::spawn(move || SyncChannel::handshake(b, ServiceKind::Bootstrap));
        let err = SyncChannel::handshake(a, ServiceKind::Control).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::WrongService {
                    expected: ServiceKind::Control,
                    got: ServiceKind::Bootstrap
                }
            ),
            "{err:?}"
        );
        assert!(other.join().unwrap().is_err());
    }
}
