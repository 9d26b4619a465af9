//! The `vigil` binary; everything lives in [`vigil::cli`].

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
