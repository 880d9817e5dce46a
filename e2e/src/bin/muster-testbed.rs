//! The `engine` CLI with the test workflows registered (`slow`, `flaky`, `sleepy`).

fn main() -> std::process::ExitCode {
    engine::cli::main(e2e::workflows::all())
}
