//! Writes a layer tar from an overlay upper directory: what Docker's
//! overlay2 driver does for `docker commit`, in OCI's words.
//!
//! Entries come in lexical order, each directory before its contents.
//! Overlay whiteouts (0/0 character devices) become `.wh.<name>` empty
//! files (mode 0600); an opaque directory (`trusted.overlay.opaque=y`) gets
//! a `.wh..wh..opq` entry right after its own. Hard links within the
//! directory become link entries to the first path. xattrs travel as PAX
//! `SCHILY.xattr.*` records, except overlay's own and the SELinux label.
//! Sockets are skipped, as Docker and containerd skip them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use crate::capture::{is_opaque, portable_xattr};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What the tar holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub entries: u64,
}

/// Writes the tar of everything below `root` into `out` (which should be
/// buffered), ending with the end-of-archive marker.
pub fn write_layer(root: &Path, out: impl Write) -> io::Result<Written> {
    let mut w = Walker {
        tar: tar::Builder::new(out),
        links: HashMap::new(),
        written: Written::default(),
    };
    w.tar.mode(tar::HeaderMode::Complete);
    w.tar.follow_symlinks(false);
    w.dir(root, "")?;
    w.tar.into_inner()?.flush()?;
    Ok(w.written)
}

struct Walker<W: Write> {
    tar: tar::Builder<W>,
    /// First tar path of each multiply linked inode.
    links: HashMap<(u64, u64), String>,
    written: Written,
}

impl<W: Write> Walker<W> {
    fn dir(&mut self, dir: &Path, prefix: &str) -> io::Result<()> {
        let mut names: Vec<OsString> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let name = String::from_utf8_lossy(name.as_bytes()).into_owned();
            let rel = format!("{prefix}{name}");
            let meta = std::fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            if ft.is_socket() {
                continue;
            }
            if ft.is_char_device() && meta.rdev() == 0 {
                let mut h = header(&meta, EntryType::Regular);
                h.set_mode(0o600);
                h.set_size(0);
                self.append(
                    &mut h,
                    &format!("{prefix}{WHITEOUT_PREFIX}{name}"),
                    io::empty(),
                )?;
                continue;
            }
            let xattrs = read_xattrs(&path)?;
            let pax = xattrs
                .iter()
                .filter(|(k, _)| portable_xattr(k))
                .map(|(k, v)| (format!("SCHILY.xattr.{}", k.to_string_lossy()), v.clone()))
                .collect::<Vec<_>>();
            // A hard link's xattrs are its first path's; it gets none.
            let repeat_link = ft.is_file()
                && meta.nlink() > 1
                && self.links.contains_key(&(meta.dev(), meta.ino()));
            if !pax.is_empty() && !repeat_link {
                self.tar
                    .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
            }
            if ft.is_dir() {
                let mut h = header(&meta, EntryType::Directory);
                h.set_size(0);
                let dir_name = format!("{rel}/");
                self.append(&mut h, &dir_name, io::empty())?;
                if is_opaque(&xattrs) {
                    let mut o = header(&meta, EntryType::Regular);
                    o.set_mode(meta.mode() & 0o777);
                    o.set_size(0);
                    self.append(&mut o, &format!("{dir_name}{OPAQUE_MARKER}"), io::empty())?;
                }
                self.dir(&path, &dir_name)?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        let mut h = header(&meta, EntryType::Link);
                        h.set_size(0);
                        self.written.entries += 1;
                        self.tar.append_link(&mut h, &rel, &first)?;
                        continue;
                    }
                    self.links.insert(key, rel.clone());
                }
                let mut h = header(&meta, EntryType::Regular);
                h.set_size(meta.len());
                self.append(&mut h, &rel, File::open(&path)?)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                let mut h = header(&meta, EntryType::Symlink);
                h.set_size(0);
                self.written.entries += 1;
                self.tar.append_link(&mut h, &rel, &target)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    EntryType::Char
                } else if ft.is_block_device() {
                    EntryType::Block
                } else {
                    EntryType::Fifo
                };
                let mut h = header(&meta, kind);
                h.set_size(0);
                if kind != EntryType::Fifo {
                    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
                    h.set_device_major(major)?;
                    h.set_device_minor(minor)?;
                }
                self.append(&mut h, &rel, io::empty())?;
            }
        }
        Ok(())
    }

    fn append(&mut self, h: &mut Header, path: &str, data: impl io::Read) -> io::Result<()> {
        self.written.entries += 1;
        self.tar.append_data(h, path, data)
    }
}

fn header(meta: &Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h
}

fn read_xattrs(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(v) = xattr::get(path, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, EntryType, u64, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let kind = e.header().entry_type();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                let size = e.header().size().unwrap();
                let pax: Vec<String> = e
                    .pax_extensions()
                    .unwrap()
                    .map(|exts| {
                        exts.map(|p| p.unwrap().key().unwrap().to_string())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|k| k.starts_with("SCHILY"))
                    .collect();
                (
                    path,
                    kind,
                    size,
                    if pax.is_empty() { link } else { pax.join(",") },
                )
            })
            .collect()
    }

    #[test]
    fn overlay_markers_become_oci_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/opq")).unwrap();
        std::fs::write(r.join("etc/opq/new"), b"x").unwrap();
        xattr::set(r.join("etc/opq"), "trusted.overlay.opaque", b"y").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::write(r.join("etc/f"), b"hello").unwrap();
        std::fs::hard_link(r.join("etc/f"), r.join("etc/h")).unwrap();
        symlink("f", r.join("etc/s")).unwrap();
        xattr::set(r.join("etc/f"), "user.k", b"v").unwrap();
        let mut out = Vec::new();
        let w = write_layer(r, &mut out).unwrap();
        let got = entries(&out);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        // Sorted by the names in the upper directory.
        assert_eq!(
            names,
            [
                "etc/",
                "etc/f",
                "etc/.wh.gone",
                "etc/h",
                "etc/opq/",
                "etc/opq/.wh..wh..opq",
                "etc/opq/new",
                "etc/s"
            ]
        );
        assert_eq!(w.entries, 8);
        assert_eq!(got[2].1, EntryType::Regular);
        assert_eq!(got[2].2, 0);
        assert_eq!(got[1].2, 5);
        assert_eq!(got[1].3, "SCHILY.xattr.user.k");
        assert_eq!(got[3].1, EntryType::Link);
        assert_eq!(got[3].3, "etc/f");
        assert_eq!(got[4].3, "", "opaque xattr not carried");
        assert_eq!(got[7].1, EntryType::Symlink);
        assert_eq!(got[7].3, "f");
    }

    #[test]
    fn empty_directory_gives_an_empty_tar() {
        let d = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        assert_eq!(write_layer(d.path(), &mut out).unwrap().entries, 0);
        assert_eq!(out, vec![0u8; 1024]);
    }

    #[test]
    fn long_names_survive() {
        let d = tempfile::tempdir().unwrap();
        let long = "n".repeat(120);
        std::fs::create_dir(d.path().join(&long)).unwrap();
        std::fs::write(d.path().join(&long).join(&long), b"1").unwrap();
        symlink(format!("/{long}/{long}/{long}"), d.path().join("l")).unwrap();
        let mut out = Vec::new();
        write_layer(d.path(), &mut out).unwrap();
        let got = entries(&out);
        assert_eq!(got[0].0, "l");
        assert_eq!(got[0].3, format!("/{long}/{long}/{long}"));
        assert_eq!(got[2].0, format!("{long}/{long}"));
    }
}
