//! What the dynamic loader will open when the exec allowance's binary starts,
//! found by reading ELF headers (never by running `ldd`, which executes code).
//!
//! The sandbox has no `/etc/ld.so.cache`, so every library is bound at a path
//! the loader searches without the cache: the `DT_RUNPATH`/`DT_RPATH` entry
//! (with `$ORIGIN` expanded) or the default directory where the search found
//! it. The interpreter is bound at its `PT_INTERP` path.
//!
//! Only 64-bit little-endian x86-64 ELF is accepted: the seccomp filters are
//! built for x86-64 and a foreign binary could not run anyway.

use crate::SandboxError;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

/// Directories the search walks after the run/rpath entries, in the order
/// glibc's loader uses on Debian's multiarch layout.
pub const DEFAULT_LIB_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Bounds against hostile or corrupt files: a real dependency graph is far
/// smaller.
const MAX_LIBRARIES: usize = 512;
const MAX_ELF_BYTES: u64 = 1 << 30;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const EM_X86_64: u16 = 62;

/// One file made visible in the sandbox: `source` is the canonical host file,
/// `target` the path the loader (or the kernel) will open inside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Binding {
    pub target: PathBuf,
    pub source: PathBuf,
}

/// The resolved closure of an executable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ElfDeps {
    /// `PT_INTERP`; `None` for a static binary.
    pub interpreter: Option<Binding>,
    /// Every `DT_NEEDED` library, recursively, sorted by target.
    pub libraries: Vec<Binding>,
}

/// The parts of one ELF file the search needs.
#[derive(Debug, Default)]
struct Parsed {
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn elf_err(path: &Path, reason: impl Into<String>) -> SandboxError {
    SandboxError::Elf {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn cstr_at(d: &[u8], off: usize) -> Option<String> {
    let rest = d.get(off..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    String::from_utf8(rest.get(..end)?.to_vec()).ok()
}

struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn parse(path: &Path, d: &[u8]) -> Result<Parsed, SandboxError> {
    if d.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(elf_err(path, "not an ELF file"));
    }
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian.
    if d.get(4) != Some(&2) || d.get(5) != Some(&1) {
        return Err(elf_err(path, "not a 64-bit little-endian ELF file"));
    }
    let bad = || elf_err(path, "truncated ELF header");
    if u16_at(d, 18).ok_or_else(bad)? != EM_X86_64 {
        return Err(elf_err(path, "not an x86-64 ELF file"));
    }
    let phoff = usize::try_from(u64_at(d, 32).ok_or_else(bad)?).map_err(|_| bad())?;
    let phentsize = usize::from(u16_at(d, 54).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(d, 56).ok_or_else(bad)?);
    if phentsize < 56 {
        return Err(elf_err(path, "program header entries are too small"));
    }
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let base = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(bad)?;
        let bad_ph = || elf_err(path, format!("program header {i} is truncated"));
        phdrs.push(Phdr {
            p_type: u32_at(d, base).ok_or_else(bad_ph)?,
            offset: u64_at(d, base + 8).ok_or_else(bad_ph)?,
            vaddr: u64_at(d, base + 16).ok_or_else(bad_ph)?,
            filesz: u64_at(d, base + 32).ok_or_else(bad_ph)?,
        });
    }
    let slice = |off: u64, len: u64| -> Option<&[u8]> {
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        d.get(start..end)
    };
    let mut out = Parsed::default();
    if let Some(ph) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        let raw = slice(ph.offset, ph.filesz)
            .ok_or_else(|| elf_err(path, "PT_INTERP is out of bounds"))?;
        let s = cstr_at(raw, 0).ok_or_else(|| elf_err(path, "PT_INTERP is not a string"))?;
        out.interp = Some(s);
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(out);
    };
    let dyn_bytes = slice(dynamic.offset, dynamic.filesz)
        .ok_or_else(|| elf_err(path, "PT_DYNAMIC is out of bounds"))?;
    let mut entries = Vec::new();
    for chunk in dyn_bytes.chunks_exact(16) {
        let tag = u64_at(chunk, 0).unwrap_or(DT_NULL);
        let val = u64_at(chunk, 8).unwrap_or(0);
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, val));
    }
    let find = |t: u64| entries.iter().find(|(tag, _)| *tag == t).map(|(_, v)| *v);
    let Some(strtab_vaddr) = find(DT_STRTAB) else {
        return Ok(out);
    };
    let strsz = find(DT_STRSZ).unwrap_or(0);
    // DT_STRTAB is a virtual address: map it to a file offset through the
    // PT_LOAD segment that contains it.
    let strtab_off = phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| strtab_vaddr >= p.vaddr && strtab_vaddr - p.vaddr < p.filesz)
        .map(|p| strtab_vaddr - p.vaddr + p.offset)
        .ok_or_else(|| elf_err(path, "DT_STRTAB is not inside a loaded segment"))?;
    let strtab =
        slice(strtab_off, strsz).ok_or_else(|| elf_err(path, "DT_STRTAB is out of bounds"))?;
    let string = |v: u64| -> Result<String, SandboxError> {
        usize::try_from(v)
            .ok()
            .and_then(|o| cstr_at(strtab, o))
            .ok_or_else(|| elf_err(path, "dynamic string out of bounds"))
    };
    for (tag, val) in &entries {
        match *tag {
            DT_NEEDED => out.needed.push(string(*val)?),
            DT_RPATH => out.rpath.extend(split_path_list(&string(*val)?)),
            DT_RUNPATH => out.runpath.extend(split_path_list(&string(*val)?)),
            _ => {}
        }
    }
    Ok(out)
}

fn split_path_list(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `$ORIGIN` / `${ORIGIN}` is the directory of the object as the loader found
/// it (its non-canonical path), which is also its path inside the sandbox.
fn expand_origin(entry: &str, origin: &Path) -> Option<PathBuf> {
    let o = origin.to_str()?;
    let e = entry.replace("${ORIGIN}", o).replace("$ORIGIN", o);
    // Other dynamic string tokens ($LIB, $PLATFORM) are not expanded: such an
    // entry is skipped, so the default directories are searched instead.
    if e.contains('$') || !e.starts_with('/') {
        return None;
    }
    Some(PathBuf::from(e))
}

fn read_elf(path: &Path) -> Result<Parsed, SandboxError> {
    let meta = std::fs::metadata(path).map_err(|source| SandboxError::Path {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(elf_err(path, "not a regular file"));
    }
    if meta.len() > MAX_ELF_BYTES {
        return Err(elf_err(path, "larger than 1 GiB"));
    }
    let data = std::fs::read(path).map_err(|source| SandboxError::Path {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &data)
}

fn is_x86_64_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head.get(..4) == Some(b"\x7fELF".as_slice())
        && head.get(4) == Some(&2)
        && u16_at(&head, 18) == Some(EM_X86_64)
}

/// Resolve the interpreter and the recursive `DT_NEEDED` closure of `exec`.
/// `exec` must be an absolute path to a regular file.
pub fn resolve(exec: &Path) -> Result<ElfDeps, SandboxError> {
    if !exec.is_absolute() {
        return Err(SandboxError::InvalidPath {
            path: exec.to_path_buf(),
            reason: "the exec allowance needs an absolute path",
        });
    }
    let root = read_elf(exec)?;
    let mut deps = ElfDeps::default();
    if let Some(interp) = &root.interp {
        let target = PathBuf::from(interp);
        let source = std::fs::canonicalize(&target).map_err(|source| SandboxError::Path {
            op: "resolve ELF interpreter",
            path: target.clone(),
            source,
        })?;
        deps.interpreter = Some(Binding { target, source });
    }
    // The executable's DT_RPATH applies to every object without DT_RUNPATH.
    let exe_dir = exec.parent().unwrap_or(Path::new("/")).to_path_buf();
    let exe_rpath: Vec<PathBuf> = if root.runpath.is_empty() {
        root.rpath
            .iter()
            .filter_map(|e| expand_origin(e, &exe_dir))
            .collect()
    } else {
        Vec::new()
    };
    let mut found: BTreeMap<String, Binding> = BTreeMap::new();
    let mut queue: VecDeque<(String, Vec<PathBuf>)> = VecDeque::new();
    let search_of = |p: &Parsed, origin: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if p.runpath.is_empty() {
            dirs.extend(p.rpath.iter().filter_map(|e| expand_origin(e, origin)));
            dirs.extend(exe_rpath.iter().cloned());
        } else {
            dirs.extend(p.runpath.iter().filter_map(|e| expand_origin(e, origin)));
        }
        dirs.extend(DEFAULT_LIB_DIRS.iter().map(PathBuf::from));
        dirs
    };
    let root_search = search_of(&root, &exe_dir);
    for n in &root.needed {
        queue.push_back((n.clone(), root_search.clone()));
    }
    while let Some((name, dirs)) = queue.pop_front() {
        if found.contains_key(&name) {
            continue;
        }
        if found.len() >= MAX_LIBRARIES {
            return Err(elf_err(
                exec,
                format!("more than {MAX_LIBRARIES} libraries"),
            ));
        }
        let candidates: Vec<PathBuf> = if name.contains('/') {
            vec![PathBuf::from(&name)]
        } else {
            dirs.iter().map(|d| d.join(&name)).collect()
        };
        let Some(target) = candidates
            .into_iter()
            .find(|c| c.is_file() && is_x86_64_elf(c))
        else {
            return Err(elf_err(
                exec,
                format!("library {name} not found in {dirs:?}"),
            ));
        };
        let source = std::fs::canonicalize(&target).map_err(|source| SandboxError::Path {
            op: "resolve library",
            path: target.clone(),
            source,
        })?;
        let parsed = read_elf(&source)?;
        let origin = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let next = search_of(&parsed, &origin);
        for n in parsed.needed {
            queue.push_back((n, next.clone()));
        }
        found.insert(name, Binding { target, source });
    }
    deps.libraries = found.into_values().collect();
    deps.libraries.sort();
    // libc lists the interpreter as DT_NEEDED; the loader matches that by
    // soname against itself (already loaded) and never opens it again.
    if let Some(interp) = &deps.interpreter {
        deps.libraries.retain(|b| b.source != interp.source);
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_true_needs_libc_and_interpreter() {
        let deps = resolve(Path::new("/bin/true")).unwrap();
        let interp = deps.interpreter.unwrap();
        assert_eq!(interp.target, PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
        assert!(interp.source.is_file());
        let targets: Vec<_> = deps.libraries.iter().map(|b| b.target.clone()).collect();
        assert_eq!(
            targets,
            vec![PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")]
        );
    }

    #[test]
    fn relative_exec_is_refused() {
        assert!(matches!(
            resolve(Path::new("bin/true")),
            Err(SandboxError::InvalidPath { .. })
        ));
    }

    #[test]
    fn non_elf_is_refused() {
        let err = resolve(Path::new("/etc/passwd")).unwrap_err();
        assert!(err.to_string().contains("not an ELF file"), "{err}");
    }

    #[test]
    fn static_binary_has_no_dependencies() {
        // Build a minimal static ELF image in memory: header + one PT_LOAD, no
        // PT_INTERP, no PT_DYNAMIC.
        let mut d = vec![0u8; 64 + 56];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&1u16.to_le_bytes());
        d[64..68].copy_from_slice(&PT_LOAD.to_le_bytes());
        let p = parse(Path::new("static"), &d).unwrap();
        assert_eq!((p.interp, p.needed), (None, Vec::<String>::new()));
    }

    #[test]
    fn truncated_header_is_an_error_not_a_panic() {
        for len in 0..80 {
            let mut d = vec![0u8; len];
            if len >= 6 {
                d[..4].copy_from_slice(b"\x7fELF");
                d[4] = 2;
                d[5] = 1;
            }
            assert!(parse(Path::new("t"), &d).is_err());
        }
    }

    #[test]
    fn origin_is_expanded() {
        assert_eq!(
            expand_origin("$ORIGIN/../lib", Path::new("/opt/app/bin")),
            Some(PathBuf::from("/opt/app/bin/../lib"))
        );
        assert_eq!(expand_origin("$LIB/x", Path::new("/a")), None);
    }
}
