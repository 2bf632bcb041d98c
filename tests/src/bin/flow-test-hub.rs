//! `flow-test-hub --dir DIR [--port N] [--cut-after BYTES] [--log FILE]`: a
//! small, real HTTP/1.1 server on 127.0.0.1 serving a Model Hub directory
//! (`catalog.toml`, `catalog.toml.sig`, `models/<id>/<version>/<file>`; see
//! docs/hub.md) for the end-to-end pull tests. Standard library only.
//!
//! - Prints the port it listens on (one line, digits only) on stdout, then
//!   serves until killed. `--port 0` (the default) picks a free port.
//! - GET and HEAD; persistent connections (HTTP/1.1 keep-alive, or
//!   `Connection: close`).
//! - A strong ETag per file (inode, size, mtime: replacing a file changes it).
//! - `Range: bytes=A-B`, `bytes=A-` and `bytes=-N` (one range; a list is
//!   answered with the whole file, as RFC 9110 allows); `If-Range` with a
//!   matching strong ETag keeps the range, anything else gets the whole file
//!   (200); an unsatisfiable range gets 416 with `Content-Range: bytes */LEN`.
//! - `--cut-after BYTES`: the first response whose body is longer than BYTES
//!   sends its full head and BYTES of the body, then the connection is shut
//!   down. Once per process: a resume test's second request is served whole.
//! - `--log FILE`: one line per request, appended and flushed before the
//!   answer: `METHOD PATH range=VALUE|- if-range=match|mismatch|-
//!   status=CODE headers=NAME,NAME,...` (header names only, lower case,
//!   in the order received; the only value logged is the Range header's).
//!
//! Paths: segments of `A-Z a-z 0-9 . _ - ~ @ +`, no `.`/`..`, no `%`; a query
//! string is ignored. Anything else is 404.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_HEAD: usize = 16 * 1024;
const MAX_REQUEST_BODY: u64 = 1 << 20;
const IDLE: Duration = Duration::from_secs(30);

struct Hub {
    dir: PathBuf,
    /// Taken by the first response long enough to be cut.
    cut_after: Mutex<Option<u64>>,
    log: Option<Mutex<File>>,
}

fn usage() -> ! {
    eprintln!("usage: flow-test-hub --dir DIR [--port N] [--cut-after BYTES] [--log FILE]");
    std::process::exit(2)
}

fn main() {
    let mut dir = None;
    let mut port: u16 = 0;
    let mut cut_after = None;
    let mut log = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(value())),
            "--port" => port = value().parse().unwrap_or_else(|_| usage()),
            "--cut-after" => cut_after = Some(value().parse::<u64>().unwrap_or_else(|_| usage())),
            "--log" => log = Some(PathBuf::from(value())),
            _ => usage(),
        }
    }
    let Some(dir) = dir else { usage() };
    let log = log.map(|p| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap_or_else(|e| {
                eprintln!("flow-test-hub: cannot open {}: {e}", p.display());
                std::process::exit(1)
            });
        Mutex::new(f)
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("flow-test-hub: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("flow-test-hub: {e}");
            std::process::exit(1)
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{port}");
    let _ = out.flush();
    run(
        listener,
        Arc::new(Hub {
            dir,
            cut_after: Mutex::new(cut_after),
            log,
        }),
    )
}

/// Accept connections forever, one thread each.
fn run(listener: TcpListener, hub: Arc<Hub>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let hub = hub.clone();
        std::thread::spawn(move || {
            let _ = serve(&hub, conn);
        });
    }
}

struct Request {
    method: String,
    path: String,
    /// (lower-case name, value) in the order received.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serve requests on one connection until it closes.
fn serve(hub: &Hub, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let Some(req) = read_head(&mut reader)? else {
            return Ok(());
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if req.header("transfer-encoding").is_some() {
            respond_simple(&mut writer, 501, true)?;
            return Ok(());
        }
        let body_len = match req
            .header("content-length")
            .map(|v| v.trim().parse::<u64>())
        {
            None => 0,
            Some(Ok(n)) if n <= MAX_REQUEST_BODY => n,
            Some(_) => {
                respond_simple(&mut writer, 413, true)?;
                return Ok(());
            }
        };
        std::io::copy(&mut (&mut reader).take(body_len), &mut std::io::sink())?;
        let keep = answer(hub, &req, &mut writer, close)?;
        if close || !keep {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// The request line and headers; `None` at a clean end of the connection.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed inside a request head"))
            };
        }
        total += n;
        if total > MAX_HEAD || !line.ends_with('\n') {
            return Err(bad("request head too long"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerated blank line before a request
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("bad request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("not HTTP/1.x"));
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("bad header line"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Some(Request {
        method: method.to_string(),
        path,
        headers,
    }))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The file a path names inside the served directory, if it is a safe path.
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix('/')?;
    let mut out = dir.to_path_buf();
    for seg in rest.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-~@+".contains(&c));
        if !ok {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

enum Range {
    /// No (usable) range: the whole file.
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part(u64, u64),
    Unsatisfiable,
}

/// RFC 9110 single byte range against a file of `len` bytes.
fn parse_range(v: &str, len: u64) -> Range {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Range::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last N bytes.
        return match b.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(n) if len > 0 => Range::Part(len.saturating_sub(n), len),
            Ok(_) => Range::Unsatisfiable,
            Err(_) => Range::Whole,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return Range::Whole;
    };
    let end = if b.is_empty() {
        len
    } else {
        match b.parse::<u64>() {
            Ok(last) if last >= start => (last + 1).min(len),
            _ => return Range::Whole,
        }
    };
    if start >= len {
        Range::Unsatisfiable
    } else {
        Range::Part(start, end)
    }
}

fn log_line(hub: &Hub, req: &Request, if_range: &str, status: u16) {
    let Some(log) = &hub.log else { return };
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    let line = format!(
        "{} {} range={} if-range={if_range} status={status} headers={}\n",
        req.method,
        req.path,
        req.header("range").unwrap_or("-"),
        names.join(",")
    );
    let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
    let _ = f.write_all(line.as_bytes());
    let _ = f.flush();
}

/// Answer one request; `Ok(false)` when the connection must close.
fn answer(hub: &Hub, req: &Request, w: &mut TcpStream, close: bool) -> std::io::Result<bool> {
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        log_line(hub, req, "-", 405);
        respond_simple(w, 405, close)?;
        return Ok(true);
    }
    let opened = resolve(&hub.dir, &req.path).and_then(|p| {
        let f = File::open(p).ok()?;
        let meta = f.metadata().ok()?;
        meta.is_file().then_some((f, meta))
    });
    let Some((mut file, meta)) = opened else {
        log_line(hub, req, "-", 404);
        respond_simple(w, 404, close)?;
        return Ok(true);
    };
    let len = meta.len();
    let etag = format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino(),
        len,
        meta.mtime(),
        meta.mtime_nsec()
    );
    let if_range = match req.header("if-range") {
        None => "-",
        Some(v) if v == etag => "match",
        Some(_) => "mismatch",
    };
    let range = match req.header("range") {
        Some(v) if if_range != "mismatch" => parse_range(v, len),
        _ => Range::Whole,
    };
    let conn = if close { "close" } else { "keep-alive" };
    let (status, start, end) = match range {
        Range::Whole => (200, 0, len),
        Range::Part(s, e) => (206, s, e),
        Range::Unsatisfiable => {
            log_line(hub, req, if_range, 416);
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nETag: {etag}\r\nConnection: {conn}\r\n\r\n"
            );
            w.write_all(head.as_bytes())?;
            return Ok(true);
        }
    };
    log_line(hub, req, if_range, status);
    let body_len = end - start;
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nConnection: {conn}\r\n",
        if status == 206 { "Partial Content" } else { "OK" }
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            end - 1
        ));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if head_only {
        return Ok(true);
    }
    let cut = {
        let mut c = hub.cut_after.lock().unwrap_or_else(|p| p.into_inner());
        match *c {
            Some(n) if body_len > n => c.take(),
            _ => None,
        }
    };
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
    let send = cut.unwrap_or(body_len);
    let copied = std::io::copy(&mut (&mut file).take(send), w)?;
    w.flush()?;
    if cut.is_some() || copied < send {
        // The interruption a resume test needs: the head promised more.
        let _ = w.shutdown(Shutdown::Both);
        return Ok(false);
    }
    Ok(true)
}

fn respond_simple(w: &mut TcpStream, status: u16, close: bool) -> std::io::Result<()> {
    let reason = match status {
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        501 => "Not Implemented",
        _ => "Error",
    };
    let conn = if close { "close" } else { "keep-alive" };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    w.write_all(
        format!(
            "HTTP/1.1 {status} {reason}\r\n{allow}Content-Length: 0\r\nConnection: {conn}\r\n\r\n"
        )
        .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub on a free port serving a temp dir with `models/m/1.0.0/m.gguf`
    /// (bytes 0..=255 repeated, 1000 bytes); returns (port, dir, log path).
    fn start(cut_after: Option<u64>) -> (u16, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "flow-test-hub-{}-{}",
            std::process::id(),
            cut_after.unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("models/m/1.0.0")).unwrap();
        std::fs::write(dir.join("models/m/1.0.0/m.gguf"), body()).unwrap();
        std::fs::write(dir.join("catalog.toml"), b"# empty\n").unwrap();
        let log = dir.join("requests.log");
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hub = Arc::new(Hub {
            dir: dir.clone(),
            cut_after: Mutex::new(cut_after),
            log: Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )),
        });
        std::thread::spawn(move || run(listener, hub));
        (port, dir, log)
    }

    fn body() -> Vec<u8> {
        (0..1000u32).map(|i| i as u8).collect()
    }

    /// One request on its own connection (`Connection: close`); returns the
    /// head (status line and headers) and the body bytes read until EOF.
    fn get(port: u16, path: &str, extra: &[(&str, &str)]) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in extra {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8(all[..split].to_vec()).unwrap(),
            all[split + 4..].to_vec(),
        )
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn serves_ranges_if_range_and_one_cut() {
        let (port, dir, log) = start(Some(300));
        let path = "/models/m/1.0.0/m.gguf";
        // The first long body is cut after 300 bytes; the head promised 1000.
        let (head, got) = get(port, path, &[]);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(header(&head, "content-length"), Some("1000"));
        assert_eq!(got, body()[..300]);
        let etag = header(&head, "etag").unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

        // Resume with the matching validator: 206 with the rest.
        let (head, got) = get(port, path, &[("Range", "bytes=300-"), ("If-Range", &etag)]);
        assert!(head.starts_with("HTTP/1.1 206 Partial Content"), "{head}");
        assert_eq!(header(&head, "content-range"), Some("bytes 300-999/1000"));
        assert_eq!(got, body()[300..]);

        // Another validator: the whole file.
        let (head, got) = get(
            port,
            path,
            &[("Range", "bytes=300-"), ("If-Range", "\"x\"")],
        );
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(got, body());

        let (head, _) = get(port, path, &[("Range", "bytes=1000-")]);
        assert!(head.starts_with("HTTP/1.1 416"), "{head}");
        assert_eq!(header(&head, "content-range"), Some("bytes */1000"));

        let (head, _) = get(port, "/models/../catalog.toml", &[]);
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let (head, got) = get(port, "/catalog.toml?x=1", &[]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(got, b"# empty\n");

        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "GET /models/m/1.0.0/m.gguf range=- if-range=- status=200 headers=host,connection",
                "GET /models/m/1.0.0/m.gguf range=bytes=300- if-range=match status=206 headers=host,range,if-range,connection",
                "GET /models/m/1.0.0/m.gguf range=bytes=300- if-range=mismatch status=200 headers=host,range,if-range,connection",
                "GET /models/m/1.0.0/m.gguf range=bytes=1000- if-range=- status=416 headers=host,range,connection",
                "GET /models/../catalog.toml range=- if-range=- status=404 headers=host,connection",
                "GET /catalog.toml range=- if-range=- status=200 headers=host,connection",
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn keeps_connections_alive() {
        let (port, dir, _) = start(None);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /catalog.toml HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"# empty\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200 OK"));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ranges() {
        assert!(matches!(parse_range("bytes=0-", 10), Range::Part(0, 10)));
        assert!(matches!(parse_range("bytes=3-", 10), Range::Part(3, 10)));
        assert!(matches!(parse_range("bytes=3-4", 10), Range::Part(3, 5)));
        assert!(matches!(parse_range("bytes=3-99", 10), Range::Part(3, 10)));
        assert!(matches!(parse_range("bytes=-4", 10), Range::Part(6, 10)));
        assert!(matches!(parse_range("bytes=-40", 10), Range::Part(0, 10)));
        assert!(matches!(parse_range("bytes=10-", 10), Range::Unsatisfiable));
        assert!(matches!(parse_range("bytes=-0", 10), Range::Unsatisfiable));
        assert!(matches!(parse_range("bytes=0-1,3-4", 10), Range::Whole));
        assert!(matches!(parse_range("bytes=5-3", 10), Range::Whole));
        assert!(matches!(parse_range("items=0-1", 10), Range::Whole));
    }

    #[test]
    fn paths_stay_inside_the_directory() {
        let d = Path::new("/srv/hub");
        assert_eq!(
            resolve(d, "/models/m/1.0.0/m.gguf"),
            Some(PathBuf::from("/srv/hub/models/m/1.0.0/m.gguf"))
        );
        for p in [
            "/../etc/passwd",
            "/a//b",
            "/a/./b",
            "relative",
            "/a%2fb",
            "/",
        ] {
            assert_eq!(resolve(d, p), None, "{p}");
        }
    }
}
