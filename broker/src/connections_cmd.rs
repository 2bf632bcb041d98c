//! `flow connections add | list | rm`: the CLI side. The CLI never touches
//! the keyring: it reads a secret (from a prompt without echo, or from
//! standard input when that is not a terminal; never from argv or the
//! environment) and hands it to the broker over the control socket.

use crate::client;
use anyhow::{bail, Context};
use proto::egress::Secret;
use proto::msg::{ConnectionList, ControlRequest, ControlResponse};
use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd};

/// Longest secret accepted (the keyutils payload limit).
const MAX_SECRET: usize = 32_767;

pub fn add(name: &str) -> anyhow::Result<i32> {
    audit::ConnectionName::parse(name)?;
    let secret = read_secret(name)?;
    match client::request(ControlRequest::ConnectionAdd {
        name: name.to_string(),
        secret,
    })? {
        ControlResponse::Connections(list) => {
            let origin = list.rows.first().map(|r| r.origin.as_str()).unwrap_or("?");
            println!(
                "stored the credential of connection {name} for {origin} in the {} store",
                list.store
            );
            println!("note: {}", list.store_note);
            Ok(0)
        }
        _ => bail!("unexpected answer from the broker"),
    }
}

pub fn list(json: bool) -> anyhow::Result<i32> {
    let list = match client::request(ControlRequest::ConnectionList)? {
        ControlResponse::Connections(list) => list,
        _ => bail!("unexpected answer from the broker"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", render(&list));
    }
    Ok(0)
}

pub fn render(list: &ConnectionList) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "credential store: {}", list.store);
    let _ = writeln!(o, "note: {}", list.store_note);
    if list.rows.is_empty() {
        let _ = writeln!(
            o,
            "no connections: the service catalog names none and the store holds none"
        );
        return o;
    }
    let nw = list
        .rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let ow = list
        .rows
        .iter()
        .map(|r| r.origin.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(o, "{:<nw$}  {:<ow$}  CREDENTIAL", "NAME", "ORIGIN");
    for r in &list.rows {
        let state = match (r.present, r.in_catalog) {
            (true, true) => "present".to_string(),
            (false, _) => format!("MISSING: run 'flow connections add {}'", r.name),
            (true, false) => format!(
                "present, but no catalog entry uses it for this origin: remove it with 'flow connections rm {}'",
                r.name
            ),
        };
        let _ = writeln!(o, "{:<nw$}  {:<ow$}  {state}", r.name, r.origin);
    }
    o
}

pub fn rm(name: &str) -> anyhow::Result<i32> {
    audit::ConnectionName::parse(name)?;
    match client::request(ControlRequest::ConnectionRemove {
        name: name.to_string(),
    })? {
        ControlResponse::Ok => {
            println!("removed the credential of connection {name}");
            Ok(0)
        }
        _ => bail!("unexpected answer from the broker"),
    }
}

/// The secret for `name`: typed at a prompt without echo when standard
/// input is a terminal, else all of standard input (one trailing newline
/// dropped).
fn read_secret(name: &str) -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let bytes = if rustix::termios::isatty(fd) {
        eprint!("secret for connection {name} (input is not shown): ");
        let r = prompt_without_echo(fd);
        eprintln!();
        r?
    } else {
        let mut b = read_all(fd).context("cannot read the secret from standard input")?;
        if b.last() == Some(&b'\n') {
            b.pop();
            if b.last() == Some(&b'\r') {
                b.pop();
            }
        }
        b
    };
    // From here on the bytes are zeroed when dropped.
    let secret = Secret::new(bytes);
    if secret.expose().is_empty() {
        bail!("the secret is empty: type or paste it at the prompt, or pipe it on standard input");
    }
    if secret.expose().len() > MAX_SECRET {
        bail!("the secret is longer than {MAX_SECRET} bytes");
    }
    Ok(secret)
}

fn read_all(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
    // One allocation, so no partial copies are left behind by growth.
    let mut out = Vec::with_capacity(MAX_SECRET + 2);
    let mut chunk = [0u8; 512];
    loop {
        let n = match rustix::io::read(fd, &mut chunk) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 || out.len() + n > MAX_SECRET + 2 {
            out.extend_from_slice(&chunk[..n.min(MAX_SECRET + 2 - out.len())]);
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    chunk.fill(0);
    Ok(out)
}

/// Read one line from the terminal with echo, canonical mode and signals
/// off, so that Ctrl-C is seen here and the terminal is always restored.
fn prompt_without_echo(fd: BorrowedFd<'_>) -> anyhow::Result<Vec<u8>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, SpecialCodeIndex};
    let old = tcgetattr(fd).context("cannot read the terminal's settings")?;
    let mut raw = old.clone();
    raw.local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
    raw.special_codes[SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    tcsetattr(fd, OptionalActions::Flush, &raw).context("cannot turn the terminal's echo off")?;
    let r = read_line_raw(fd);
    let restored = tcsetattr(fd, OptionalActions::Now, &old);
    let line = r?;
    restored.context("cannot restore the terminal's settings: run 'stty sane'")?;
    Ok(line)
}

fn read_line_raw(fd: BorrowedFd<'_>) -> anyhow::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(MAX_SECRET + 1);
    let mut byte = [0u8; 1];
    loop {
        let n = match rustix::io::read(fd, &mut byte) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        match byte[0] {
            b'\n' | b'\r' => break,
            // Ctrl-C, Ctrl-D on an empty line: give up.
            0x03 => bail!("cancelled"),
            0x04 if line.is_empty() => bail!("cancelled"),
            // Backspace, delete.
            0x08 | 0x7f => {
                if let Some(b) = line.last_mut() {
                    *b = 0;
                }
                line.pop();
            }
            b => {
                if line.len() > MAX_SECRET {
                    bail!("the secret is longer than {MAX_SECRET} bytes");
                }
                line.push(b);
            }
        }
    }
    Ok(line)
}
