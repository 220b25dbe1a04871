//! The `codeb` binary: thin; everything lives in the library.

fn main() -> std::process::ExitCode {
    codeb::cli::main()
}
