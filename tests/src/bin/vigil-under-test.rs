//! The `vigil` program, built inside the test package so the tests can spawn
//! it as a real process (cargo only tells a package's tests where that same
//! package's binaries are).

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
