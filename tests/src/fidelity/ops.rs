//! Change scripts run inside a test container: `sh` lines and `fsop`
//! operations (see `tests/fsop/fsop.rs`) whose byte arguments are hex, so
//! that any name can be written down. And a generator of random trees and
//! random changes to them.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A script: one line per step, run by `sh -e`.
#[derive(Debug, Clone, Default)]
pub struct Script {
    lines: Vec<String>,
}

/// Hex of a byte argument (`-` for none).
fn x(b: impl AsRef<[u8]>) -> String {
    let b = b.as_ref();
    if b.is_empty() {
        "-".into()
    } else {
        hex::encode(b)
    }
}

impl Script {
    pub fn text(&self) -> String {
        let mut t = self.lines.join("\n");
        t.push('\n');
        t
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn extend(&mut self, other: &Script) {
        self.lines.extend(other.lines.iter().cloned());
    }

    /// A shell line, as it is.
    pub fn sh(&mut self, line: &str) -> &mut Self {
        self.lines.push(line.to_string());
        self
    }

    fn op(&mut self, words: &[String]) -> &mut Self {
        self.lines.push(format!("fsop {}", words.join(" ")));
        self
    }

    pub fn mkdir(&mut self, p: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        self.op(&["mkdir".into(), x(p), format!("{mode:o}")])
    }
    pub fn mkdirs(&mut self, p: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["mkdirs".into(), x(p)])
    }
    /// A file of `size` deterministic bytes from `seed`.
    pub fn write(&mut self, p: impl AsRef<[u8]>, size: u64, seed: u64) -> &mut Self {
        self.op(&["write".into(), x(p), size.to_string(), seed.to_string()])
    }
    pub fn put(&mut self, p: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["put".into(), x(p), x(data)])
    }
    pub fn append(&mut self, p: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["append".into(), x(p), x(data)])
    }
    pub fn truncate(&mut self, p: impl AsRef<[u8]>, size: u64) -> &mut Self {
        self.op(&["truncate".into(), x(p), size.to_string()])
    }
    pub fn rm(&mut self, p: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["rm".into(), x(p)])
    }
    pub fn rmdir(&mut self, p: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["rmdir".into(), x(p)])
    }
    pub fn rmrf(&mut self, p: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["rmrf".into(), x(p)])
    }
    /// rename(2): files only (a lower directory needs `mv`'s copy).
    pub fn rename(&mut self, a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["rename".into(), x(a), x(b)])
    }
    pub fn symlink(&mut self, target: impl AsRef<[u8]>, p: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["symlink".into(), x(target), x(p)])
    }
    /// A hard link (to a symlink: the symlink itself).
    pub fn link(&mut self, a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["link".into(), x(a), x(b)])
    }
    pub fn mkfifo(&mut self, p: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        self.op(&["mkfifo".into(), x(p), format!("{mode:o}")])
    }
    pub fn mknod(
        &mut self,
        p: impl AsRef<[u8]>,
        kind: char,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        self.op(&[
            "mknod".into(),
            x(p),
            kind.to_string(),
            major.to_string(),
            minor.to_string(),
            format!("{mode:o}"),
        ])
    }
    pub fn chmod(&mut self, p: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        self.op(&["chmod".into(), x(p), format!("{mode:o}")])
    }
    pub fn chown(&mut self, p: impl AsRef<[u8]>, uid: u32, gid: u32) -> &mut Self {
        self.op(&["chown".into(), x(p), uid.to_string(), gid.to_string()])
    }
    /// Modification (and access) time, without following a symlink.
    pub fn utime(&mut self, p: impl AsRef<[u8]>, sec: i64, nsec: u32) -> &mut Self {
        self.op(&["utime".into(), x(p), sec.to_string(), nsec.to_string()])
    }
    pub fn setx(
        &mut self,
        p: impl AsRef<[u8]>,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> &mut Self {
        self.op(&["setx".into(), x(p), x(name), x(value)])
    }
    pub fn rmx(&mut self, p: impl AsRef<[u8]>, name: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["rmx".into(), x(p), x(name)])
    }
    pub fn socket(&mut self, p: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["socket".into(), x(p)])
    }
    /// `depth` nested directories `name` below `p`, a file `f` at the bottom.
    pub fn deep(&mut self, p: impl AsRef<[u8]>, depth: u32, name: impl AsRef<[u8]>) -> &mut Self {
        self.op(&["deep".into(), x(p), depth.to_string(), x(name)])
    }
    /// `count` files `fNNNNN` of `size` bytes in `p`.
    pub fn many(&mut self, p: impl AsRef<[u8]>, count: u32, size: u64) -> &mut Self {
        self.op(&["many".into(), x(p), count.to_string(), size.to_string()])
    }
}

/// A POSIX ACL as the kernel stores it in `system.posix_acl_*`: version 2,
/// then (tag, perm, id) entries sorted by tag and id.
pub fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// `user::rw-,user:1000:r--,group::r--,mask::r--,other::---`.
pub fn sample_acl() -> Vec<u8> {
    const UNDEF: u32 = u32::MAX;
    acl(&[
        (1, 6, UNDEF),
        (2, 4, 1000),
        (4, 4, UNDEF),
        (0x10, 4, UNDEF),
        (0x20, 0, UNDEF),
    ])
}

/// A version 2 file capability: `cap_net_bind_service+ep`.
pub fn sample_capability() -> Vec<u8> {
    let mut out = 0x0200_0001u32.to_le_bytes().to_vec();
    for word in [1u32 << 10, 0, 0, 0] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// What the generator knows of a generated tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink,
    Fifo,
    Device,
    Socket,
}

/// Random trees (the lower stage) and random changes to them (the change
/// stage), each under its own root, reproducible from a seed.
pub struct Generator {
    rng: StdRng,
    root: Vec<u8>,
    nodes: BTreeMap<Vec<u8>, Node>,
    /// xattrs set, by path (so that some can be removed).
    xattrs: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    next: u32,
}

/// Times worth trying: whole seconds, nanoseconds, before the epoch, in
/// the 2242–2262 range only PAX can write, and beyond what an applier sets.
const TIMES: &[(i64, u32)] = &[
    (1_650_000_000, 0),
    (1_700_000_123, 456_789_012),
    (1_000_000_000, 1),
    (-86_400, 0),
    (-1, 500_000_000),
    (8_800_000_000, 5),
    (32_503_680_000, 0),
];
const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o000, 0o4755, 0o2711, 0o1777, 0o6750, 0o777, 0o444,
];
const IDS: &[u32] = &[0, 1, 1000, 65534, 3_000_000, 4_000_000_000];

impl Generator {
    pub fn new(seed: u64, root: &[u8]) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            root: root.to_vec(),
            nodes: BTreeMap::from([(root.to_vec(), Node::Dir)]),
            xattrs: BTreeMap::new(),
            next: 0,
        }
    }

    /// A fresh name: short and plain mostly, sometimes odd bytes, sometimes
    /// long; never `.wh.`-prefixed, `.` or `..`.
    fn name(&mut self) -> Vec<u8> {
        self.next += 1;
        let tag = self.next.to_string().into_bytes();
        const ODD: &[&[u8]] = &[
            b" ",
            b"\n",
            b"\"",
            b"'",
            b"\\",
            b"\xff",
            b"\xfe",
            b"\xc3\xa9",
            b"=",
            b"*",
            b"-",
            b":",
            b"\t",
        ];
        let mut n = Vec::new();
        match self.rng.random_range(0..10) {
            0 => n.extend(std::iter::repeat_n(b'L', self.rng.random_range(100..250))),
            1..=3 => {
                for _ in 0..self.rng.random_range(1..4) {
                    n.extend_from_slice(ODD[self.rng.random_range(0..ODD.len())]);
                    n.push(b'a' + self.rng.random_range(0..26u8));
                }
            }
            _ => {
                for _ in 0..self.rng.random_range(1..6) {
                    n.push(b'a' + self.rng.random_range(0..26u8));
                }
            }
        }
        n.extend_from_slice(&tag);
        n
    }

    fn pick(&mut self, want: &[Node]) -> Option<Vec<u8>> {
        let all: Vec<&Vec<u8>> = self
            .nodes
            .iter()
            .filter(|(p, k)| want.contains(k) && (**p != self.root || want == [Node::Dir]))
            .map(|(p, _)| p)
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(all[self.rng.random_range(0..all.len())].clone())
    }

    fn new_path(&mut self) -> Vec<u8> {
        let dir = self.pick(&[Node::Dir]).unwrap_or_else(|| self.root.clone());
        [dir.as_slice(), b"/", &self.name()].concat()
    }

    fn remove(&mut self, p: &[u8]) {
        let prefix = [p, b"/"].concat();
        self.nodes
            .retain(|k, _| k.as_slice() != p && !k.starts_with(&prefix));
        self.xattrs
            .retain(|k, _| k.as_slice() != p && !k.starts_with(&prefix));
    }

    fn has_socket_under(&self, p: &[u8]) -> bool {
        let prefix = [p, b"/"].concat();
        self.nodes
            .iter()
            .any(|(k, n)| *n == Node::Socket && (k.as_slice() == p || k.starts_with(&prefix)))
    }

    fn time(&mut self) -> (i64, u32) {
        TIMES[self.rng.random_range(0..TIMES.len())]
    }

    /// Creates something new somewhere in the tree.
    fn create(&mut self, s: &mut Script, stage_change: bool) {
        let p = self.new_path();
        let kinds = if stage_change { 7 } else { 5 };
        match self.rng.random_range(0..kinds) {
            0 => {
                let mode = MODES[self.rng.random_range(0..MODES.len())] | 0o700;
                s.mkdir(&p, mode);
                self.nodes.insert(p, Node::Dir);
            }
            1 => {
                let size = [0, 1, 100, 4096, 70_000][self.rng.random_range(0..5)];
                let seed = self.rng.random();
                s.write(&p, size, seed);
                self.nodes.insert(p, Node::File);
            }
            2 => {
                let target = match self.pick(&[Node::File, Node::Dir]) {
                    Some(t) if self.rng.random_bool(0.5) => [b"/", t.as_slice()].concat(),
                    _ => self.name(),
                };
                s.symlink(target, &p);
                self.nodes.insert(p, Node::Symlink);
            }
            3 => {
                s.mkfifo(&p, 0o640);
                self.nodes.insert(p, Node::Fifo);
            }
            4 => match self.pick(&[Node::File, Node::Symlink, Node::Fifo, Node::Device]) {
                Some(first) => {
                    s.link(&first, &p);
                    let kind = self.nodes[&first];
                    self.nodes.insert(p, kind);
                }
                None => {
                    s.write(&p, 10, 1);
                    self.nodes.insert(p, Node::File);
                }
            },
            5 => {
                s.mknod(&p, 'c', 1, self.rng.random_range(3..10), 0o660);
                self.nodes.insert(p, Node::Device);
            }
            _ => {
                // A socket's name fits a socket address.
                let dir = &p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0)];
                self.next += 1;
                let p = [dir, format!("/sock{}", self.next).as_bytes()].concat();
                s.socket(&p);
                self.nodes.insert(p, Node::Socket);
            }
        }
    }

    /// Changes metadata of something.
    fn touch(&mut self, s: &mut Script) {
        let Some(p) = self.pick(&[
            Node::Dir,
            Node::File,
            Node::Symlink,
            Node::Fifo,
            Node::Device,
        ]) else {
            return;
        };
        let kind = self.nodes[&p];
        match self.rng.random_range(0..5) {
            0 if kind != Node::Symlink => {
                let mode = MODES[self.rng.random_range(0..MODES.len())];
                // Directories keep their owner's access: the script goes on in them.
                s.chmod(
                    &p,
                    if kind == Node::Dir {
                        mode | 0o700
                    } else {
                        mode
                    },
                );
            }
            1 => {
                let (u, g) = (
                    IDS[self.rng.random_range(0..IDS.len())],
                    IDS[self.rng.random_range(0..IDS.len())],
                );
                s.chown(&p, u, g);
            }
            2 if matches!(kind, Node::File | Node::Dir) => {
                // ('=' cannot be in a PAX key: such a name is refused,
                // which the refusal test covers.)
                // An xattr name holds at most 255 bytes.
                let mut name: Vec<u8> = [b"user.".as_slice(), &self.name()]
                    .concat()
                    .into_iter()
                    .map(|b| if b == b'=' { b'_' } else { b })
                    .collect();
                if name.len() > 255 {
                    name.drain(5..name.len() - 250);
                }
                let value: Vec<u8> = (0..self.rng.random_range(0..40))
                    .map(|_| self.rng.random())
                    .collect();
                s.setx(&p, &name, value);
                self.xattrs.entry(p).or_default().push(name);
            }
            3 if self.xattrs.contains_key(&p) => {
                let names = self.xattrs.get_mut(&p).expect("checked");
                let name = names.remove(0);
                if names.is_empty() {
                    self.xattrs.remove(&p);
                }
                s.rmx(&p, name);
            }
            _ => {
                let (sec, nsec) = self.time();
                s.utime(&p, sec, nsec);
            }
        }
    }

    /// A random tree: the lower stage.
    pub fn lower(&mut self) -> Script {
        let mut s = Script::default();
        s.mkdirs(self.root.clone());
        for _ in 0..self.rng.random_range(8..30) {
            if self.rng.random_bool(0.75) {
                self.create(&mut s, false);
            } else {
                self.touch(&mut s);
            }
        }
        // Lower times last, so that nothing below bumps them afterwards.
        for _ in 0..4 {
            if let Some(p) = self.pick(&[Node::Dir, Node::File]) {
                let (sec, nsec) = self.time();
                s.utime(p, sec, nsec);
            }
        }
        s
    }

    /// Random changes to the tree [`Generator::lower`] made: the change
    /// stage, run in a container of the image that holds the lower tree.
    pub fn change(&mut self) -> Script {
        let mut s = Script::default();
        for _ in 0..self.rng.random_range(8..30) {
            match self.rng.random_range(0..10) {
                0..=2 => self.create(&mut s, true),
                3 | 4 => self.touch(&mut s),
                5 => {
                    // Rewrite a file: same size or not.
                    if let Some(p) = self.pick(&[Node::File]) {
                        if self.rng.random_bool(0.5) {
                            s.append(&p, b"more");
                        } else {
                            let size = self.rng.random_range(0..5000);
                            s.write(&p, size, self.rng.random());
                        }
                    }
                }
                6 => {
                    // Delete something (a whole directory too).
                    if let Some(p) = self.pick(&[
                        Node::File,
                        Node::Symlink,
                        Node::Fifo,
                        Node::Device,
                        Node::Socket,
                    ]) {
                        s.rm(&p);
                        self.remove(&p);
                    } else if let Some(p) = self.pick(&[Node::Dir]) {
                        s.rmrf(&p);
                        self.remove(&p);
                    }
                }
                7 => {
                    // Replace a directory by a new one (opaque), or swap a
                    // type (file ↔ dir ↔ symlink).
                    if let Some(p) = self.pick(&[Node::Dir, Node::File, Node::Symlink]) {
                        let was = self.nodes[&p];
                        if was == Node::Dir {
                            s.rmrf(&p);
                        } else {
                            s.rm(&p);
                        }
                        self.remove(&p);
                        match (was, self.rng.random_range(0..3)) {
                            (Node::Dir, 0) | (_, 1) => {
                                s.mkdir(&p, 0o755);
                                let child = [p.as_slice(), b"/", &self.name()].concat();
                                s.write(&child, 3, 3);
                                self.nodes.insert(p, Node::Dir);
                                self.nodes.insert(child, Node::File);
                            }
                            (_, 2) => {
                                s.symlink(b"elsewhere", &p);
                                self.nodes.insert(p, Node::Symlink);
                            }
                            _ => {
                                s.write(&p, 7, 7);
                                self.nodes.insert(p, Node::File);
                            }
                        }
                    }
                }
                8 => {
                    // Rename: rename(2) for what is not a directory, `mv`
                    // (overlay answers EXDEV, mv copies) for a directory.
                    if let Some(p) = self.pick(&[Node::File, Node::Symlink, Node::Fifo, Node::Dir])
                    {
                        let to = self.new_path();
                        if to.starts_with(&[p.as_slice(), b"/"].concat())
                            || self.has_socket_under(&p)
                        {
                            continue;
                        }
                        let kind = self.nodes[&p];
                        if kind == Node::Dir {
                            // Whatever mv's copy keeps, the container's
                            // view is the reference.
                            s.sh(&format!(
                                "mv \"$(printf '{}')\" \"$(printf '{}')\"",
                                printf_escape(&p),
                                printf_escape(&to)
                            ));
                        } else {
                            s.rename(&p, &to);
                        }
                        let prefix = [p.as_slice(), b"/"].concat();
                        let moved: Vec<(Vec<u8>, Node)> = self
                            .nodes
                            .iter()
                            .filter(|(k, _)| k.as_slice() == p.as_slice() || k.starts_with(&prefix))
                            .map(|(k, n)| ([to.as_slice(), &k[p.len()..]].concat(), *n))
                            .collect();
                        self.remove(&p);
                        self.nodes.extend(moved);
                    }
                }
                _ => {
                    // A hard link to something of the lower tree (copy-up).
                    if let Some(first) =
                        self.pick(&[Node::File, Node::Symlink, Node::Fifo, Node::Device])
                    {
                        let p = self.new_path();
                        s.link(&first, &p);
                        let kind = self.nodes[&first];
                        self.nodes.insert(p, kind);
                    }
                }
            }
        }
        s
    }
}

/// Bytes as a `printf` format that prints them: octal escapes for all but
/// plain characters (a trailing newline survives `$(…)` this way only if
/// it is not last: generated names end with a digit).
fn printf_escape(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || c == b'/' || c == b'.' || c == b'_' {
                (c as char).to_string()
            } else {
                format!("\\{c:03o}")
            }
        })
        .collect()
}
