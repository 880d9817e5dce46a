//! The `engine` binary: everything happens in [`engine::cli::main`].

/// mimalloc instead of glibc's malloc: the run path allocates and frees many small buffers (sled
/// copies a node on each write), and glibc's arenas spent about a tenth of the engine's CPU on
/// it and kept freed memory resident (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    engine::cli::main(Vec::new())
}
