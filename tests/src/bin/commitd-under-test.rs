//! The commitd program, built inside this test package so the end-to-end
//! tests can run it (`CARGO_BIN_EXE_commitd-under-test`); it is the same
//! one-line `main` as `crates/commitd`.

fn main() -> std::process::ExitCode {
    commitd::main()
}
