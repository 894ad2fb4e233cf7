//! The `tessera` binary: see [`tessera::cli`].

/// mimalloc instead of glibc's allocator: a request allocates and frees many small buffers
/// across two worker threads, and under load glibc's `malloc`/`free` (with its arena
/// consolidation) is the largest single item of the worker threads' profile without it
/// (docs/benchmarks-history.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match tessera::cli::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tessera::cli::shown(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
