//! The gateway's own resolver: DNS over TCP (RFC 1035 section 4.2.2, RFC
//! 7766) to the name servers the broker configured. The gateway has no
//! filesystem (no `/etc/resolv.conf`, no NSS) and may not create UDP sockets,
//! and the system resolver would re-resolve behind our back: a name is
//! resolved here exactly once per request, with one `A` and one `AAAA` query
//! (one after the other on one connection, RFC 7766; a server that closes
//! after the first answer gets the second query on a new connection), and the
//! caller dials only addresses from that answer.
//!
//! Answers are checked before use: the response id must be the random id we
//! sent, it must be a response (QR) to a standard query, echo our question
//! (name, type, class), and not be truncated. Address records are taken from
//! the answer section for the queried name and the CNAME chain from it (at
//! most 8 links), class IN only, with the exact record length. Name
//! compression pointers are followed at most 32 times and names are at most
//! 255 bytes, so a hostile answer cannot loop or grow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const CLASS_IN: u16 = 1;

/// Longest a single name server may take for both queries.
const PER_SERVER: Duration = Duration::from_secs(5);
/// Most CNAME links followed.
const MAX_CHAIN: usize = 8;
/// Most compression pointers followed in one name.
const MAX_JUMPS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("no name server is configured: set egress.dns_servers or check /etc/resolv.conf")]
    NoServers,
    #[error("name server {server} failed: {detail}")]
    Server { server: SocketAddr, detail: String },
}

/// A query message for `name` (already a valid DNS name) with recursion
/// desired.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(18 + name.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    m.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // AN, NS, AR
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, String> {
    msg.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "truncated message".to_string())
}

/// Reads a (possibly compressed) name at `pos`: the name, lower case with
/// odd bytes escaped as `\DDD`, and the position just after it.
pub fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), String> {
    let mut pos = start;
    let mut out = String::new();
    let mut wire_len = 0usize;
    let mut jumps = 0usize;
    let mut after: Option<usize> = None;
    loop {
        let len = *msg.get(pos).ok_or("truncated name")? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    pos += 1;
                    break;
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or("truncated label")?;
                wire_len += len + 1;
                if wire_len > 255 {
                    return Err("name longer than 255 bytes".into());
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    let b = b.to_ascii_lowercase();
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        out.push(char::from(b));
                    } else {
                        out.push_str(&format!("\\{b:03}"));
                    }
                }
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or("truncated pointer")? as usize;
                let target = ((len & 0x3f) << 8) | lo;
                after.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > MAX_JUMPS || target >= msg.len() {
                    return Err("bad compression pointer".into());
                }
                pos = target;
            }
            _ => return Err("unsupported label type".into()),
        }
    }
    Ok((out, after.unwrap_or(pos)))
}

struct Record {
    owner: String,
    rtype: u16,
    class: u16,
    rdata: std::ops::Range<usize>,
}

/// Checks a response against the query (`id`, `name`, `qtype`) and returns
/// the addresses of type `qtype` for `name` and its CNAME chain. NXDOMAIN
/// and an empty answer are `Ok(vec![])`.
pub fn parse_response(msg: &[u8], id: u16, name: &str, qtype: u16) -> Result<Vec<IpAddr>, String> {
    if msg.len() < 12 {
        return Err("short message".into());
    }
    if u16_at(msg, 0)? != id {
        return Err("response id does not match the query".into());
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response".into());
    }
    if (flags >> 11) & 0xf != 0 {
        return Err("not a standard query response".into());
    }
    if flags & 0x0200 != 0 {
        return Err("truncated response".into());
    }
    let rcode = flags & 0xf;
    if u16_at(msg, 4)? != 1 {
        return Err("response does not carry exactly our question".into());
    }
    let ancount = u16_at(msg, 6)?;
    let (qname, mut pos) = read_name(msg, 12)?;
    let (qt, qc) = (u16_at(msg, pos)?, u16_at(msg, pos + 2)?);
    pos += 4;
    if qname != name || qt != qtype || qc != CLASS_IN {
        return Err("response question does not match the query".into());
    }
    match rcode {
        0 => {}
        3 => return Ok(Vec::new()),
        n => return Err(format!("response code {n}")),
    }
    let mut records = Vec::new();
    for _ in 0..ancount {
        let (owner, p) = read_name(msg, pos)?;
        let rtype = u16_at(msg, p)?;
        let class = u16_at(msg, p + 2)?;
        let rdlen = u16_at(msg, p + 8)? as usize;
        let start = p + 10;
        if msg.len() < start + rdlen {
            return Err("truncated record".into());
        }
        records.push(Record {
            owner,
            rtype,
            class,
            rdata: start..start + rdlen,
        });
        pos = start + rdlen;
    }
    let mut chain = vec![name.to_string()];
    for _ in 0..MAX_CHAIN {
        let Some(current) = chain.last() else { break };
        let Some(c) = records
            .iter()
            .find(|r| r.rtype == TYPE_CNAME && r.class == CLASS_IN && &r.owner == current)
        else {
            break;
        };
        let (target, _) = read_name(msg, c.rdata.start)?;
        if chain.contains(&target) {
            break;
        }
        chain.push(target);
    }
    let mut out = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.rtype == qtype && r.class == CLASS_IN && chain.contains(&r.owner))
    {
        let d = &msg[r.rdata.clone()];
        let ip = match (qtype, d.len()) {
            (TYPE_A, 4) => IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(d);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err("address record of the wrong length".into()),
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

fn random_id() -> Result<u16, String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness for the query id".to_string())?;
    Ok(u16::from_be_bytes(b))
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(q.len() + 2);
    f.extend_from_slice(&(q.len() as u16).to_be_bytes());
    f.extend_from_slice(q);
    f
}

async fn connect(server: SocketAddr) -> Result<tokio::net::TcpStream, String> {
    let s = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// One length-prefixed message; `Ok(None)` when the server closed the
/// connection before it.
async fn read_msg(s: &mut tokio::net::TcpStream) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        // A server that closes after one answer may also reset the
        // connection (our next query arrived unread).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("receive: {e}")),
    }
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    Ok(Some(msg))
}

/// One query on its own connection.
async fn query(server: SocketAddr, name: &str, qtype: u16) -> Result<Vec<IpAddr>, String> {
    let id = random_id()?;
    let mut s = connect(server).await?;
    s.write_all(&framed(&encode_query(id, name, qtype)))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let msg = read_msg(&mut s)
        .await?
        .ok_or("the server closed the connection without an answer")?;
    parse_response(&msg, id, name, qtype)
}

/// The `A` then the `AAAA` query on one connection (a second connection
/// only if the server closed the first after one answer).
async fn query_both(server: SocketAddr, name: &str) -> Result<(Vec<IpAddr>, Vec<IpAddr>), String> {
    let mut s = connect(server).await?;
    let mut answers = Vec::with_capacity(2);
    for qtype in [TYPE_A, TYPE_AAAA] {
        let id = random_id()?;
        let q = framed(&encode_query(id, name, qtype));
        let sent = s.write_all(&q).await;
        let msg = match sent {
            Ok(()) => read_msg(&mut s).await?,
            Err(_) => None,
        };
        let msg = match msg {
            Some(m) => m,
            // Closed after the first answer: the second query alone.
            None if qtype == TYPE_AAAA => {
                answers.push(query(server, name, qtype).await?);
                continue;
            }
            None => return Err("the server closed the connection without an answer".into()),
        };
        answers.push(parse_response(&msg, id, name, qtype)?);
    }
    let aaaa = answers.pop().unwrap_or_default();
    let a = answers.pop().unwrap_or_default();
    Ok((a, aaaa))
}

/// Resolves `name` once: an `A` and an `AAAA` query to the first server that
/// answers both; IPv4 answers first. `Ok(vec![])`: the name has no address.
pub async fn resolve(
    servers: &[SocketAddr],
    name: &str,
    deadline: Instant,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut last = DnsError::NoServers;
    for &server in servers {
        let until = deadline.min(Instant::now() + PER_SERVER);
        let both = tokio::time::timeout_at(until, query_both(server, name)).await;
        match both {
            Ok(Ok((mut a, aaaa))) => {
                a.extend(
                    aaaa.into_iter()
                        .filter(|x| !a.contains(x))
                        .collect::<Vec<_>>(),
                );
                return Ok(a);
            }
            Ok(Err(e)) => last = DnsError::Server { server, detail: e },
            Err(_) => {
                last = DnsError::Server {
                    server,
                    detail: "timed out".into(),
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `q` (our query bytes) with the given flags and answers.
    fn response(q: &[u8], rcode: u16, answers: &[(Vec<u8>, u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = q.to_vec();
        let flags = 0x8180u16 | rcode;
        m[2..4].copy_from_slice(&flags.to_be_bytes());
        m[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (owner, t, rdata) in answers {
            m.extend_from_slice(owner);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&60u32.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    /// Pointer to the question name (offset 12).
    const QPTR: [u8; 2] = [0xc0, 12];

    #[test]
    fn encodes_a_query() {
        let q = encode_query(0x1234, "svc.test", TYPE_AAAA);
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b's', b'v', b'c', 4, b't', b'e', b's',
                b't', 0, 0, 28, 0, 1
            ]
        );
    }

    #[test]
    fn parses_addresses_and_cname_chains() {
        let q = encode_query(7, "svc.test", TYPE_A);
        let r = response(
            &q,
            0,
            &[
                (QPTR.to_vec(), TYPE_A, vec![127, 0, 0, 1]),
                (QPTR.to_vec(), TYPE_A, vec![10, 0, 0, 1]),
            ],
        );
        assert_eq!(
            parse_response(&r, 7, "svc.test", TYPE_A).unwrap(),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        // svc.test CNAME x.test; x.test A 1.2.3.4; unrelated.test A 5.6.7.8.
        let x = vec![1, b'x', 0xc0, 16]; // "x" + pointer to "test" in the question
        let r = response(
            &q,
            0,
            &[
                (QPTR.to_vec(), TYPE_CNAME, x.clone()),
                (x.clone(), TYPE_A, vec![1, 2, 3, 4]),
                (
                    vec![
                        9, b'u', b'n', b'r', b'e', b'l', b'a', b't', b'e', b'd', 0xc0, 16,
                    ],
                    TYPE_A,
                    vec![5, 6, 7, 8],
                ),
            ],
        );
        assert_eq!(
            parse_response(&r, 7, "svc.test", TYPE_A).unwrap(),
            vec!["1.2.3.4".parse::<IpAddr>().unwrap()]
        );
        let q6 = encode_query(9, "svc.test", TYPE_AAAA);
        let mut v6 = vec![0u8; 16];
        v6[15] = 1;
        let r = response(&q6, 0, &[(QPTR.to_vec(), TYPE_AAAA, v6)]);
        assert_eq!(
            parse_response(&r, 9, "svc.test", TYPE_AAAA).unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn refuses_mismatches() {
        let q = encode_query(7, "svc.test", TYPE_A);
        let r = response(&q, 0, &[(QPTR.to_vec(), TYPE_A, vec![1, 2, 3, 4])]);
        assert!(parse_response(&r, 8, "svc.test", TYPE_A)
            .unwrap_err()
            .contains("id"));
        assert!(parse_response(&r, 7, "other.test", TYPE_A).is_err());
        assert!(parse_response(&r, 7, "svc.test", TYPE_AAAA).is_err());
        assert!(parse_response(&q, 7, "svc.test", TYPE_A)
            .unwrap_err()
            .contains("not a response"));
        let bad_len = response(&q, 0, &[(QPTR.to_vec(), TYPE_A, vec![1, 2, 3])]);
        assert!(parse_response(&bad_len, 7, "svc.test", TYPE_A).is_err());
        let servfail = response(&q, 2, &[]);
        assert!(parse_response(&servfail, 7, "svc.test", TYPE_A).is_err());
        let nx = response(&q, 3, &[]);
        assert!(parse_response(&nx, 7, "svc.test", TYPE_A)
            .unwrap()
            .is_empty());
        let mut tc = r.clone();
        tc[2] |= 0x02;
        assert!(parse_response(&tc, 7, "svc.test", TYPE_A)
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn hostile_names_do_not_loop_or_panic() {
        // A pointer to itself.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[0xc0, 12]);
        assert!(read_name(&m, 12).is_err());
        // Two pointers to each other.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12]);
        assert!(read_name(&m, 12).is_err());
        // A label that repeats through a backward pointer.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[1, b'a', 0xc0, 12]);
        assert!(read_name(&m, 12).is_err());
        // Pointer past the end, truncated label, extended label type.
        assert!(read_name(&[0xc0, 0xff], 0).is_err());
        assert!(read_name(&[5, b'a'], 0).is_err());
        assert!(read_name(&[0x40, 0], 0).is_err());
        // Every prefix of a valid response fails cleanly.
        let q = encode_query(7, "svc.test", TYPE_A);
        let r = response(&q, 0, &[(QPTR.to_vec(), TYPE_A, vec![1, 2, 3, 4])]);
        for n in 0..r.len() {
            assert!(
                parse_response(&r[..n], 7, "svc.test", TYPE_A).is_err(),
                "{n}"
            );
        }
        // Odd bytes in a label are escaped, never confused with a dot.
        let (n, _) = read_name(&[3, b'a', b'.', b'b', 0], 0).unwrap();
        assert_eq!(n, "a\\046b");
    }
}
