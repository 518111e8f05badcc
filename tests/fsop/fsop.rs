//! `fsop`: file system operations for the fidelity suite, run *inside* a
//! test container (busybox has no setfattr, no ns-precise or pre-epoch
//! touch, no socket maker, no hard link to a symlink). Built by the test
//! from this one file with `rustc -C target-feature=+crt-static` (std
//! only), so it runs in a busybox image without a C library.
//!
//! ```text
//! fsop OP ARG…        one operation
//! fsop -f FILE        one operation per line ('#' starts a comment)
//! ```
//!
//! Byte arguments (paths, names, values) are hex (`-` is empty); numbers
//! are decimal (modes octal). Operations:
//!
//! ```text
//! mkdir P MODE | mkdirs P | write P SIZE SEED | put P DATA | append P DATA
//! truncate P SIZE | rm P | rmdir P | rmrf P | rename A B | symlink TARGET P
//! link A B | mkfifo P MODE | mknod P c|b MAJOR MINOR MODE | chmod P MODE
//! chown P UID GID | utime P SEC NSEC | setx P NAME VALUE | rmx P NAME
//! socket P | deep P DEPTH NAME | many P COUNT SIZE | loop P FILES
//! mmaploop P | mmapreopen P
//! ```
//!
//! `deep` makes DEPTH nested directories NAME below P (relative to each
//! other, so deeper than PATH_MAX if asked) with a file `f` at the bottom;
//! `many` COUNT files of SIZE bytes; `loop` writes an increasing counter to
//! P/0 … P/FILES-1, in order, forever; `mmaploop` writes an increasing
//! counter into P/map through a shared writable mapping (no system call;
//! one 8-byte little-endian store, which a freeze cannot tear), then as
//! text into P/marker with write(2), forever; `mmapreopen` does the same
//! but opens and maps P/map afresh each round, unmaps and closes it before
//! the marker's write, then sleeps a millisecond: the file is open nowhere
//! most of the time, its page dirty.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[repr(C)]
struct Timespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

unsafe extern "C" {
    fn utimensat(dirfd: c_int, path: *const c_char, times: *const Timespec, flags: c_int) -> c_int;
    fn lsetxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: usize, flags: c_int) -> c_int;
    fn lremovexattr(path: *const c_char, name: *const c_char) -> c_int;
    fn mknod(path: *const c_char, mode: c_uint, dev: u64) -> c_int;
    fn linkat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char, flags: c_int) -> c_int;
    fn lchown(path: *const c_char, uid: c_uint, gid: c_uint) -> c_int;
    fn chmod(path: *const c_char, mode: c_uint) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: c_long) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
}

const AT_FDCWD: c_int = -100;
const AT_SYMLINK_NOFOLLOW: c_int = 0x100;

type Res = Result<(), String>;

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    if s.len() % 2 != 0 {
        return Err(format!("odd hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex {s:?}: {e}")))
        .collect()
}

fn cstr(b: &[u8]) -> CString {
    CString::new(b).expect("no NUL in a path")
}

fn check(rc: c_int, what: &str) -> Res {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    }
}

/// Deterministic bytes (xorshift) for file contents.
fn bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run(words: &[&str]) -> Res {
    let e = |r: std::io::Result<()>, what: &str| r.map_err(|err| format!("{what}: {err}"));
    let p = |i: usize| -> Result<PathBuf, String> {
        Ok(PathBuf::from(OsStr::from_bytes(&hex(words.get(i).ok_or("missing path")?)?)))
    };
    let b = |i: usize| hex(words.get(i).ok_or("missing bytes")?);
    let n = |i: usize| -> Result<u64, String> {
        words.get(i).ok_or("missing number")?.parse::<u64>().map_err(|x| x.to_string())
    };
    let i = |i: usize| -> Result<i64, String> {
        words.get(i).ok_or("missing number")?.parse::<i64>().map_err(|x| x.to_string())
    };
    let mode = |i: usize| -> Result<u32, String> {
        u32::from_str_radix(words.get(i).ok_or("missing mode")?, 8).map_err(|x| x.to_string())
    };
    let c = |path: &Path| cstr(path.as_os_str().as_bytes());
    match words[0] {
        "mkdir" => {
            e(fs::create_dir(p(1)?), "mkdir")?;
            e(fs::set_permissions(p(1)?, fs::Permissions::from_mode(mode(2)?)), "chmod")
        }
        "mkdirs" => e(fs::create_dir_all(p(1)?), "mkdirs"),
        "write" => e(fs::write(p(1)?, bytes(n(2)? as usize, n(3)?)), "write"),
        "put" => e(fs::write(p(1)?, b(2)?), "put"),
        "append" => {
            let mut f = fs::OpenOptions::new().append(true).open(p(1)?).map_err(|x| x.to_string())?;
            e(f.write_all(&b(2)?), "append")
        }
        "truncate" => {
            let f = fs::OpenOptions::new().write(true).create(true).truncate(false).open(p(1)?).map_err(|x| x.to_string())?;
            e(f.set_len(n(2)?), "truncate")
        }
        "rm" => e(fs::remove_file(p(1)?), "rm"),
        "rmdir" => e(fs::remove_dir(p(1)?), "rmdir"),
        "rmrf" => e(fs::remove_dir_all(p(1)?), "rmrf"),
        "rename" => e(fs::rename(p(1)?, p(2)?), "rename"),
        "symlink" => e(std::os::unix::fs::symlink(OsStr::from_bytes(&b(1)?), p(2)?), "symlink"),
        "link" => check(
            unsafe { linkat(AT_FDCWD, c(&p(1)?).as_ptr(), AT_FDCWD, c(&p(2)?).as_ptr(), 0) },
            "link",
        ),
        "mkfifo" => check(unsafe { mknod(c(&p(1)?).as_ptr(), 0o010000 | mode(2)?, 0) }, "mkfifo"),
        "mknod" => {
            let kind = match words.get(2).copied() {
                Some("c") => 0o020000,
                Some("b") => 0o060000,
                other => return Err(format!("mknod type {other:?}")),
            };
            let (major, minor) = (n(3)?, n(4)?);
            let dev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32);
            check(unsafe { mknod(c(&p(1)?).as_ptr(), kind | mode(5)?, dev) }, "mknod")
        }
        "chmod" => check(unsafe { chmod(c(&p(1)?).as_ptr(), mode(2)?) }, "chmod"),
        "chown" => check(unsafe { lchown(c(&p(1)?).as_ptr(), n(2)? as c_uint, n(3)? as c_uint) }, "chown"),
        "utime" => {
            let t = Timespec { tv_sec: i(2)? as c_long, tv_nsec: n(3)? as c_long };
            let ts = [Timespec { tv_sec: t.tv_sec, tv_nsec: t.tv_nsec }, t];
            check(unsafe { utimensat(AT_FDCWD, c(&p(1)?).as_ptr(), ts.as_ptr(), AT_SYMLINK_NOFOLLOW) }, "utime")
        }
        "setx" => {
            let (name, value) = (cstr(&b(2)?), b(3)?);
            check(
                unsafe { lsetxattr(c(&p(1)?).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) },
                "setxattr",
            )
        }
        "rmx" => check(unsafe { lremovexattr(c(&p(1)?).as_ptr(), cstr(&b(2)?).as_ptr()) }, "removexattr"),
        "socket" => {
            // Bound and left behind, as a crashed server leaves one; bound
            // from its directory (a socket address holds 107 bytes).
            let path = p(1)?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            e(std::env::set_current_dir(dir), "cd")?;
            let l = std::os::unix::net::UnixListener::bind(path.file_name().ok_or("no name")?);
            e(std::env::set_current_dir("/"), "cd /")?;
            std::mem::forget(l.map_err(|x| x.to_string())?);
            Ok(())
        }
        "deep" => {
            let (depth, name) = (n(2)?, PathBuf::from(OsStr::from_bytes(&b(3)?)));
            e(std::env::set_current_dir(p(1)?), "cd")?;
            for _ in 0..depth {
                e(fs::create_dir(&name), "mkdir")?;
                e(std::env::set_current_dir(&name), "cd")?;
            }
            let r = e(fs::write("f", b"bottom\n"), "write");
            e(std::env::set_current_dir("/"), "cd /")?;
            r
        }
        "many" => {
            let (dir, count, size) = (p(1)?, n(2)?, n(3)? as usize);
            for k in 0..count {
                e(fs::write(dir.join(format!("f{k:05}")), bytes(size, k)), "write")?;
            }
            Ok(())
        }
        "mmaploop" => mmap_loop(&p(1)?, false),
        "mmapreopen" => mmap_loop(&p(1)?, true),
        "loop" => {
            let (dir, files) = (p(1)?, n(2)?);
            for round in 0u64.. {
                for k in 0..files {
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o644)
                        .open(dir.join(k.to_string()))
                        .map_err(|x| x.to_string())?;
                    e(f.write_all(format!("{round}\n").as_bytes()), "write")?;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

/// `mmaploop` (one mapping, kept) and `mmapreopen` (a mapping a round).
fn mmap_loop(dir: &Path, reopen: bool) -> Res {
    use std::os::fd::AsRawFd;
    let open = |truncate: bool| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(dir.join("map"))
            .map_err(|x| format!("open: {x}"))
    };
    let map = |f: &fs::File| {
        // PROT_READ|PROT_WRITE, MAP_SHARED
        let page = unsafe { mmap(std::ptr::null_mut(), 4096, 0x1 | 0x2, 0x01, f.as_raw_fd(), 0) };
        if page as isize == -1 {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(page)
    };
    let f = open(true)?;
    f.set_len(64).map_err(|x| format!("truncate: {x}"))?;
    // With `reopen`, not kept open: the file is open nowhere between rounds.
    let mut kept = if reopen {
        drop(f);
        None
    } else {
        Some((map(&f)?, f))
    };
    let marker = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("marker"))
        .map_err(|x| format!("open: {x}"))?;
    for round in 0u64.. {
        let (page, f) = match kept.take() {
            Some(k) => k,
            None => {
                let f = open(false)?;
                (map(&f)?, f)
            }
        };
        // One aligned 8-byte store a round: a process frozen between
        // the byte stores of a longer text would leave it torn (seen:
        // 316159 → 316160 frozen after five digits read 316169).
        // SAFETY: the mapping is page-aligned, 4096 bytes, and lives
        // until unmapped below.
        let counter = unsafe { &*page.cast::<std::sync::atomic::AtomicU64>() };
        counter.store(round.to_le(), std::sync::atomic::Ordering::SeqCst);
        if reopen {
            // SAFETY: the mapping made above, not used again.
            check(unsafe { munmap(page, 4096) }, "munmap")?;
            drop(f);
        } else {
            kept = Some((page, f));
        }
        let text = format!("{round:020}\n");
        // One write of a fixed width at 0: never empty, never torn.
        std::os::unix::fs::FileExt::write_all_at(&marker, text.as_bytes(), 0)
            .map_err(|x| format!("write: {x}"))?;
        if reopen {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lines: Vec<String> = match args.first().map(String::as_str) {
        Some("-f") => fs::read_to_string(&args[1])
            .unwrap_or_else(|e| panic!("{}: {e}", args[1]))
            .lines()
            .map(str::to_owned)
            .collect(),
        Some(_) => vec![args.join(" ")],
        None => {
            eprintln!("usage: fsop OP ARG… | fsop -f FILE");
            std::process::exit(2);
        }
    };
    for (no, line) in lines.iter().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Err(err) = run(&words) {
            eprintln!("fsop: line {}: {line}: {err}", no + 1);
            std::process::exit(1);
        }
    }
}
