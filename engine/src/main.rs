//! The `engine` binary: everything happens in [`engine::cli::main`].

fn main() -> std::process::ExitCode {
    engine::cli::main(Vec::new())
}
