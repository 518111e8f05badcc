//! The commitd binary; everything is in the library (see `commitd::main`).

fn main() -> std::process::ExitCode {
    commitd::main()
}
