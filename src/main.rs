//! The `tessera` binary: see [`tessera::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match tessera::cli::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
