//! `flow-bench-egress [--rounds R] [--requests N] [--body BYTES] [--squid HOST:PORT]`:
//! the client side of `bench/egress.sh`. The same `GET /items/1` (a `BYTES`
//! response) to one loopback upstream, one request at a time, made
//!
//! - `direct`: over one keep-alive connection straight to the upstream;
//! - `gateway`: through the real gateway process under its real profile
//!   (`flow_tests::gateway_harness`), connection origin `127.0.0.1` (an IP
//!   literal: no DNS), one `Egress` capability;
//! - `gateway-dns`: the same with origin `bench.test`, resolved by the
//!   gateway for every request (one A and one AAAA query over TCP to a
//!   loopback test DNS server), as production does;
//! - `squid`: through Squid (`--squid`), over one keep-alive connection.
//!
//! Modes run interleaved, `N` requests each per round, after a warm-up.
//! Prints one JSON line per round and mode, then a summary with p50, p99
//! and sequential throughput per mode and the ratios to `direct`.

use flow_tests::gateway_harness::{Dns, Gateway, Reply, Upstream};
use proto::egress::{ConnectionConfig, GatewayConfig, Limits, Method, Origin, Scheme};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PATH: &str = "/items/1";

/// A keep-alive HTTP/1.1 client (plain TCP): origin-form to the upstream,
/// absolute-form to a proxy.
struct Http {
    r: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl Http {
    fn connect(to: SocketAddr, target: &str, host: &str) -> Result<Http, String> {
        let s = TcpStream::connect(to).map_err(|e| format!("connect {to}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flow-bench-egress\r\n\r\n"
        )
        .into_bytes();
        Ok(Http {
            r: BufReader::new(s),
            request,
        })
    }

    /// One request; returns the body length.
    fn get(&mut self) -> Result<usize, String> {
        self.r
            .get_mut()
            .write_all(&self.request)
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.r.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(format!("unexpected status line {line:?}"));
        }
        let mut len: Option<usize> = None;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).map_err(|e| e.to_string())?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if !chunked {
            let n = len.ok_or("response without a length")?;
            let mut body = vec![0u8; n];
            self.r.read_exact(&mut body).map_err(|e| e.to_string())?;
            return Ok(n);
        }
        let mut total = 0;
        loop {
            let mut size = String::new();
            self.r.read_line(&mut size).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| e.to_string())?;
            let mut chunk = vec![0u8; n + 2];
            self.r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn pct(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v[i.min(v.len() - 1)]
    }

    fn throughput(&self) -> f64 {
        let total: f64 = self.0.iter().map(Duration::as_secs_f64).sum();
        if total > 0.0 {
            self.0.len() as f64 / total
        } else {
            0.0
        }
    }
}

fn time(
    n: usize,
    mut one: impl FnMut() -> Result<usize, String>,
    want: usize,
) -> Result<Samples, String> {
    let mut s = Samples(Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let got = one()?;
        s.0.push(t.elapsed());
        if got != want {
            return Err(format!("body of {got} bytes, expected {want}"));
        }
    }
    Ok(s)
}

fn bench_connection(id: &str, host: &str, port: u16) -> ConnectionConfig {
    ConnectionConfig {
        id: id.into(),
        origin: Origin {
            scheme: Scheme::Http,
            host: host.into(),
            port,
        },
        base_path: String::new(),
        methods: vec![Method::Get],
        paths: vec!["/items/*".into()],
        auth: None,
        allow_cidrs: vec!["127.0.0.0/8".into()],
        limits: Limits {
            rate_per_minute: u32::MAX,
            ..Limits::default()
        },
    }
}

fn run() -> Result<(), String> {
    let mut rounds = 5usize;
    let mut requests = 2000usize;
    let mut body = 1024usize;
    let mut squid: Option<SocketAddr> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--rounds" => rounds = v.parse().map_err(|_| "--rounds N")?,
            "--requests" => requests = v.parse().map_err(|_| "--requests N")?,
            "--body" => body = v.parse().map_err(|_| "--body BYTES")?,
            "--squid" => squid = Some(v.parse().map_err(|_| "--squid HOST:PORT")?),
            _ => return Err("usage: flow-bench-egress [--rounds R] [--requests N] [--body BYTES] [--squid HOST:PORT]".into()),
        }
    }
    let up = Upstream::fixed(Reply::ok(&vec![b'x'; body]));
    let upstream = up.addr;
    let dns = Dns::start();
    dns.script("bench.test", &[&["127.0.0.1"]]);
    let mut gw = Gateway::spawn(&[upstream.port(), dns.port()]);
    gw.configure(GatewayConfig {
        dns_servers: vec![dns.addr],
        extra_roots_pem: Vec::new(),
        connections: vec![
            bench_connection("ip", "127.0.0.1", upstream.port()),
            bench_connection("dns", "bench.test", upstream.port()),
        ],
    });
    let mut cap = gw.grant(&["ip", "dns"], false);
    // Decision records are drained so the channel never backs up.
    let host = format!("127.0.0.1:{}", upstream.port());
    let mut direct = Http::connect(upstream, PATH, &host)?;
    let mut proxy = match squid {
        Some(s) => Some(Http::connect(s, &format!("http://{host}{PATH}"), &host)?),
        None => None,
    };
    let mut modes: Vec<&str> = vec!["direct", "gateway", "gateway-dns"];
    if proxy.is_some() {
        modes.push("squid");
    }
    let mut all: Vec<(String, Samples)> = modes
        .iter()
        .map(|m| (m.to_string(), Samples::default()))
        .collect();
    for round in 0..=rounds {
        // Round 0 is the warm-up and is not counted.
        let n = if round == 0 {
            requests.min(500)
        } else {
            requests
        };
        for (mi, mode) in modes.iter().enumerate() {
            let s = match *mode {
                "direct" => time(n, || direct.get(), body)?,
                "gateway" | "gateway-dns" => {
                    let conn = if *mode == "gateway" { "ip" } else { "dns" };
                    let s = time(
                        n,
                        || {
                            gw.request(&mut cap, conn, Method::Get, PATH, &[], b"")
                                .map(|(_, b)| b.len())
                                .map_err(|e| e.to_string())
                        },
                        body,
                    )?;
                    while gw.report(Duration::ZERO).is_some() {}
                    s
                }
                _ => match proxy.as_mut() {
                    Some(p) => time(n, || p.get(), body)?,
                    None => continue,
                },
            };
            if round > 0 {
                println!(
                    "{{\"round\":{round},\"mode\":\"{mode}\",\"p50_us\":{:.1},\"p99_us\":{:.1},\"req_per_s\":{:.0}}}",
                    s.pct(50.0),
                    s.pct(99.0),
                    s.throughput()
                );
                all[mi].1 .0.extend(s.0);
            }
        }
    }
    if !gw.alive() {
        return Err(format!("the gateway died: {}", gw.stderr()));
    }
    let base = all[0].1.pct(50.0);
    let base_p99 = all[0].1.pct(99.0);
    println!("# summary over {rounds} interleaved rounds of {requests} sequential requests, {body}-byte body");
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "mode", "p50 us", "p99 us", "req/s", "p50 added", "p50 ratio"
    );
    for (mode, s) in &all {
        println!(
            "{:<12} {:>10.1} {:>10.1} {:>10.0} {:>12.1} {:>12.2}",
            mode,
            s.pct(50.0),
            s.pct(99.0),
            s.throughput(),
            s.pct(50.0) - base,
            s.pct(50.0) / base
        );
    }
    for (mode, s) in &all[1..] {
        println!(
            "{{\"summary\":\"{mode}\",\"p50_us\":{:.1},\"p99_us\":{:.1},\"req_per_s\":{:.0},\"added_p50_us\":{:.1},\"added_p99_us\":{:.1}}}",
            s.pct(50.0),
            s.pct(99.0),
            s.throughput(),
            s.pct(50.0) - base,
            s.pct(99.0) - base_p99
        );
    }
    let _ = gw.shutdown();
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("flow-bench-egress: {e}");
        std::process::exit(1);
    }
}
