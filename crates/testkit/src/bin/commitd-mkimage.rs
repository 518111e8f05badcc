//! Writes the testkit's busybox base image as an OCI image-layout archive, for
//! `ctr images import` (the demo script uses it).
//!
//! ```text
//! commitd-mkimage OUT.tar [--name NAME]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use commitd_testkit::{BUSYBOX_IMAGE, ImageBuilder};

const USAGE: &str = "usage: commitd-mkimage OUT.tar [--name NAME]";

fn main() -> ExitCode {
    let mut out: Option<PathBuf> = None;
    let mut name = BUSYBOX_IMAGE.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => match args.next() {
                Some(n) => name = n,
                None => return usage("--name needs a value"),
            },
            "-h" | "--help" => {
                println!(
                    "{USAGE}\nWrites a busybox-static base image (default name {BUSYBOX_IMAGE})."
                );
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with('-') => return usage(&format!("unknown option {arg}")),
            _ if out.is_none() => out = Some(arg.into()),
            _ => return usage(&format!("unexpected argument {arg}")),
        }
    }
    let Some(out) = out else {
        return usage("OUT.tar is missing");
    };
    match ImageBuilder::busybox().write_archive(&out, &name) {
        Ok(image) => {
            eprintln!(
                "commitd-mkimage: wrote {} ({}) to {}",
                image.name,
                image.manifest_digest,
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("commitd-mkimage: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("commitd-mkimage: {problem}\n{USAGE}");
    ExitCode::from(2)
}
