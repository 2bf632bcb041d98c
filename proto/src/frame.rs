//! Length-prefixed frames: a 4-byte little-endian `u32` payload length, then
//! the payload.
//!
//! **Invariant:** a declared length is checked against the caller's limit before
//! any buffer for it is allocated, so a hostile peer cannot make a reader
//! allocate more than `max` (plus a fixed read chunk) by lying in a header.
//! Zero-length frames are rejected: every message encodes to at least one byte,
//! so an empty frame only comes from a confused or hostile peer.
//!
//! End of stream exactly at a frame boundary is [`ProtoError::Closed`]; end of
//! stream anywhere inside a frame is [`ProtoError::Truncated`].

use std::io::{ErrorKind, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProtoError;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default maximum payload size of one frame: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Payloads up to this size are copied next to their header and written with
/// one call; larger ones are written with two calls instead of being copied.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The largest payload a header can describe, whatever limit a caller passes.
fn effective_max(max: usize) -> usize {
    max.min(u32::MAX as usize)
}

/// Checks a declared payload length against `max`.
fn check_len(len: u64, max: usize) -> Result<usize, ProtoError> {
    if len == 0 {
        return Err(ProtoError::EmptyFrame);
    }
    match usize::try_from(len) {
        Ok(n) if n <= effective_max(max) => Ok(n),
        _ => Err(ProtoError::FrameTooLarge { len, max }),
    }
}

/// Reads and validates the declared payload length of a complete header.
pub(crate) fn parse_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, ProtoError> {
    check_len(u64::from(u32::from_le_bytes(header)), max)
}

/// The header for a payload of `len` bytes, after checking it against `max`.
pub fn encode_header(len: usize, max: usize) -> Result<[u8; HEADER_LEN], ProtoError> {
    let len = check_len(len as u64, max)?;
    let len = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge {
        len: len as u64,
        max,
    })?;
    Ok(len.to_le_bytes())
}

/// Header and payload in one buffer.
pub fn encode_frame(payload: &[u8], max: usize) -> Result<Vec<u8>, ProtoError> {
    let header = encode_header(payload.len(), max)?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// What [`parse`] found at the start of a buffer.
enum Parsed {
    /// A whole frame: payload at `HEADER_LEN..consumed`.
    Complete { consumed: usize },
    /// The buffer holds a prefix of a valid frame; `total` bytes are needed
    /// (only the header's 4 if the header itself is incomplete).
    NeedMore { total: usize },
}

fn parse(buf: &[u8], max: usize) -> Result<Parsed, ProtoError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Parsed::NeedMore { total: HEADER_LEN });
    };
    let total = HEADER_LEN + parse_header(*header, max)?;
    if buf.len() >= total {
        Ok(Parsed::Complete { consumed: total })
    } else {
        Ok(Parsed::NeedMore { total })
    }
}

/// Decodes the frame at the start of `buf` without copying: returns its payload
/// and the number of bytes it occupies (header included). Bytes after the
/// frame are left for the caller.
///
/// An incomplete frame (including an empty buffer) is [`ProtoError::Truncated`]
/// with how much of the header or body is present, so a caller holding a
/// partial buffer can tell how much more to read.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<(&[u8], usize), ProtoError> {
    match parse(buf, max)? {
        Parsed::Complete { consumed } => Ok((&buf[HEADER_LEN..consumed], consumed)),
        Parsed::NeedMore { .. } => Err(truncation(buf)),
    }
}

/// The error for a stream that ended with `rest` (a prefix of a frame whose
/// header, if complete, is already validated) unconsumed.
fn truncation(rest: &[u8]) -> ProtoError {
    match rest.first_chunk::<HEADER_LEN>() {
        None => ProtoError::Truncated {
            part: "header",
            got: rest.len(),
            expected: HEADER_LEN,
        },
        Some(header) => ProtoError::Truncated {
            part: "body",
            got: rest.len() - HEADER_LEN,
            expected: u32::from_le_bytes(*header) as usize,
        },
    }
}

/// Reads into `buf` until it is full or the stream ends; returns bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ProtoError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::io("reading a frame", e)),
        }
    }
    Ok(filled)
}

async fn read_full_async<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<usize, ProtoError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::io("reading a frame", e)),
        }
    }
    Ok(filled)
}

fn header_result(header: [u8; HEADER_LEN], got: usize, max: usize) -> Result<usize, ProtoError> {
    match got {
        0 => Err(ProtoError::Closed),
        HEADER_LEN => parse_header(header, max),
        _ => Err(ProtoError::Truncated {
            part: "header",
            got,
            expected: HEADER_LEN,
        }),
    }
}

fn body_result(body: Vec<u8>, got: usize) -> Result<Vec<u8>, ProtoError> {
    if got == body.len() {
        Ok(body)
    } else {
        Err(ProtoError::Truncated {
            part: "body",
            got,
            expected: body.len(),
        })
    }
}

/// Reads exactly one frame and returns its payload. Reads nothing beyond the
/// frame, so it can be mixed with other reads on the same stream.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, ProtoError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    let len = header_result(header, got, max)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    body_result(body, got)
}

/// Writes one frame and flushes.
pub fn write_frame(w: &mut impl Write, payload: &[u8], max: usize) -> Result<(), ProtoError> {
    let op = "writing a frame";
    if payload.len() <= COALESCE_LIMIT {
        w.write_all(&encode_frame(payload, max)?)
            .map_err(|e| ProtoError::io(op, e))?;
    } else {
        let header = encode_header(payload.len(), max)?;
        w.write_all(&header).map_err(|e| ProtoError::io(op, e))?;
        w.write_all(payload).map_err(|e| ProtoError::io(op, e))?;
    }
    w.flush().map_err(|e| ProtoError::io(op, e))
}

/// Async [`read_frame`]. **Not cancel-safe:** dropping the future mid-frame
/// loses the bytes read so far; use a [`crate::channel::Channel`] (whose
/// `recv` is cancel-safe) inside `select!`.
pub async fn read_frame_async<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, ProtoError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full_async(r, &mut header).await?;
    let len = header_result(header, got, max)?;
    let mut body = vec![0u8; len];
    let got = read_full_async(r, &mut body).await?;
    body_result(body, got)
}

/// Async [`write_frame`]. **Not cancel-safe:** dropping the future mid-write
/// leaves a partial frame on the stream, which must then be closed.
pub async fn write_frame_async<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), ProtoError> {
    let op = "writing a frame";
    if payload.len() <= COALESCE_LIMIT {
        w.write_all(&encode_frame(payload, max)?)
            .await
            .map_err(|e| ProtoError::io(op, e))?;
    } else {
        let header = encode_header(payload.len(), max)?;
        w.write_all(&header)
            .await
            .map_err(|e| ProtoError::io(op, e))?;
        w.write_all(payload)
            .await
            .map_err(|e| ProtoError::io(op, e))?;
    }
    w.flush().await.map_err(|e| ProtoError::io(op, e))
}

/// Bytes asked of the stream per read when no larger frame is pending.
const READ_CHUNK: usize = 8 * 1024;

/// An empty buffer larger than this is released instead of kept for reuse.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Buffered frame reader state, owned by a channel so that reads can be
/// resumed: after a cancelled async `recv` or a `WouldBlock`/timeout, the bytes
/// already read stay here. Reads ahead by up to [`READ_CHUNK`] bytes, so one
/// read call usually yields several small frames.
///
/// The buffer never grows beyond `max(HEADER_LEN + max, READ_CHUNK)`.
#[derive(Debug, Default)]
pub(crate) struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameBuffer {
    pub(crate) fn new() -> FrameBuffer {
        FrameBuffer::default()
    }

    /// Takes a complete buffered frame, or says how many bytes (from the
    /// start of the pending frame) are needed.
    fn take(&mut self, max: usize) -> Result<Result<Vec<u8>, usize>, ProtoError> {
        let pending = &self.buf[self.start..self.end];
        match parse(pending, max)? {
            Parsed::NeedMore { total } => Ok(Err(total)),
            Parsed::Complete { consumed } => {
                let payload = pending[HEADER_LEN..consumed].to_vec();
                self.start += consumed;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    if self.buf.len() > KEEP_CAPACITY {
                        self.buf = Vec::new();
                    }
                }
                Ok(Ok(payload))
            }
        }
    }

    /// Room to read into, large enough for a pending frame of `total` bytes.
    fn spare(&mut self, total: usize) -> &mut [u8] {
        let want = total.max(READ_CHUNK);
        if self.start + want > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if want > self.buf.len() {
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    fn eof(&self) -> ProtoError {
        let rest = &self.buf[self.start..self.end];
        if rest.is_empty() {
            ProtoError::Closed
        } else {
            truncation(rest)
        }
    }

    pub(crate) fn read_sync<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        max: usize,
    ) -> Result<Vec<u8>, ProtoError> {
        loop {
            let total = match self.take(max)? {
                Ok(payload) => return Ok(payload),
                Err(total) => total,
            };
            match r.read(self.spare(total)) {
                Ok(0) => return Err(self.eof()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ProtoError::io("reading a frame", e)),
            }
        }
    }

    /// Cancel-safe: all progress is kept in `self`.
    pub(crate) async fn read_async<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
        max: usize,
    ) -> Result<Vec<u8>, ProtoError> {
        loop {
            let total = match self.take(max)? {
                Ok(payload) => return Ok(payload),
                Err(total) => total,
            };
            match r.read(self.spare(total)).await {
                Ok(0) => return Err(self.eof()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ProtoError::io("reading a frame", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        encode_frame(payload, DEFAULT_MAX_FRAME).unwrap()
    }

    /// A reader that returns one byte per call, to exercise resumption.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn header_is_little_endian_u32() {
        assert_eq!(frame(b"abc"), vec![3, 0, 0, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn decode_frame_returns_payload_and_consumed() {
        let mut buf = frame(b"hello");
        buf.extend_from_slice(&frame(b"x"));
        let (payload, consumed) = decode_frame(&buf, 16).unwrap();
        assert_eq!((payload, consumed), (&b"hello"[..], 9));
        let (payload, consumed) = decode_frame(&buf[consumed..], 16).unwrap();
        assert_eq!((payload, consumed), (&b"x"[..], 5));
    }

    #[test]
    fn decode_frame_errors() {
        let err = decode_frame(&[], 16).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "header",
                    got: 0,
                    expected: 4
                }
            ),
            "{err:?}"
        );
        let err = decode_frame(&[5, 0], 16).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "header",
                    got: 2,
                    expected: 4
                }
            ),
            "{err:?}"
        );
        let err = decode_frame(&[5, 0, 0, 0, 1, 2], 16).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "body",
                    got: 2,
                    expected: 5
                }
            ),
            "{err:?}"
        );
        let err = decode_frame(&[0, 0, 0, 0], 16).unwrap_err();
        assert!(matches!(err, ProtoError::EmptyFrame), "{err:?}");
        let err = decode_frame(&[17, 0, 0, 0], 16).unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { len: 17, max: 16 }),
            "{err:?}"
        );
        let err = decode_frame(&[0xff; 4], usize::MAX).unwrap_err();
        assert!(
            matches!(err, ProtoError::Truncated { part: "body", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn read_frame_round_trip_and_clean_eof() {
        let mut stream = Vec::new();
        write_frame(&mut stream, b"one", 16).unwrap();
        write_frame(&mut stream, &[7; 20_000], 32_000).unwrap();
        let mut r = stream.as_slice();
        assert_eq!(read_frame(&mut r, 32_000).unwrap(), b"one");
        assert_eq!(read_frame(&mut r, 32_000).unwrap(), vec![7; 20_000]);
        let err = read_frame(&mut r, 32_000).unwrap_err();
        assert!(matches!(err, ProtoError::Closed), "{err:?}");
    }

    #[test]
    fn read_frame_truncated_header() {
        let err = read_frame(&mut &[3u8, 0][..], 16).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "header",
                    got: 2,
                    expected: 4
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn read_frame_truncated_body() {
        let err = read_frame(&mut &[3u8, 0, 0, 0, 1][..], 16).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "body",
                    got: 1,
                    expected: 3
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn read_frame_oversized_and_empty() {
        // 9 000 000 declared bytes, none present: rejected on the header alone.
        let header = 9_000_000u32.to_le_bytes();
        let err = read_frame(&mut &header[..], DEFAULT_MAX_FRAME).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::FrameTooLarge {
                    len: 9_000_000,
                    max: DEFAULT_MAX_FRAME
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "frame of 9000000 bytes exceeds the 1048576-byte limit: the peer is misbehaving \
             and was disconnected"
        );
        let err = read_frame(&mut &[0u8, 0, 0, 0, 1][..], 16).unwrap_err();
        assert!(matches!(err, ProtoError::EmptyFrame), "{err:?}");
    }

    #[test]
    fn write_frame_checks_limits() {
        let mut out = Vec::new();
        let err = write_frame(&mut out, &[0; 17], 16).unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { len: 17, max: 16 }),
            "{err:?}"
        );
        let err = write_frame(&mut out, &[], 16).unwrap_err();
        assert!(matches!(err, ProtoError::EmptyFrame), "{err:?}");
        assert!(out.is_empty());
    }

    #[test]
    fn buffered_reader_resumes_and_reports_eof() {
        let mut stream = frame(b"first");
        stream.extend_from_slice(&frame(&[1; 9_000]));
        stream.extend_from_slice(&[4, 0, 0, 0, 1]);

        let mut reader = FrameBuffer::new();
        let mut src = Trickle(&stream);
        assert_eq!(reader.read_sync(&mut src, 10_000).unwrap(), b"first");
        assert_eq!(reader.read_sync(&mut src, 10_000).unwrap(), vec![1; 9_000]);
        let err = reader.read_sync(&mut src, 10_000).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "body",
                    got: 1,
                    expected: 4
                }
            ),
            "{err:?}"
        );

        let mut reader = FrameBuffer::new();
        let mut src = &frame(b"a")[..];
        assert_eq!(reader.read_sync(&mut src, 16).unwrap(), b"a");
        let err = reader.read_sync(&mut src, 16).unwrap_err();
        assert!(matches!(err, ProtoError::Closed), "{err:?}");
    }

    #[test]
    fn buffered_reader_rejects_oversized_before_reading_body() {
        let mut stream = u32::MAX.to_le_bytes().to_vec();
        stream.extend_from_slice(&[0; 100]);
        let mut reader = FrameBuffer::new();
        let err = reader.read_sync(&mut stream.as_slice(), 1024).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err:?}");
        assert!(reader.buf.len() <= READ_CHUNK);
    }

    #[tokio::test]
    async fn async_round_trip_and_errors() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            write_frame_async(&mut a, b"ping", 16).await.unwrap();
            write_frame_async(&mut a, &[9; 30_000], 40_000)
                .await
                .unwrap();
            a.write_all(&[2, 0, 0]).await.unwrap();
        });
        assert_eq!(read_frame_async(&mut b, 16).await.unwrap(), b"ping");
        assert_eq!(
            read_frame_async(&mut b, 40_000).await.unwrap(),
            vec![9; 30_000]
        );
        writer.await.unwrap();
        let err = read_frame_async(&mut b, 16).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::Truncated {
                    part: "header",
                    got: 3,
                    expected: 4
                }
            ),
            "{err:?}"
        );

        let (mut a, mut b) = tokio::io::duplex(64);
        drop(a.write_all(&[20, 0, 0, 0]).await);
        drop(a);
        let err = read_frame_async(&mut b, 16).await.unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { len: 20, max: 16 }),
            "{err:?}"
        );

        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let err = read_frame_async(&mut b, 16).await.unwrap_err();
        assert!(matches!(err, ProtoError::Closed), "{err:?}");
    }
}
