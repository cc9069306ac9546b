//! `palisade`: the one binary. Thin: parses arguments, calls the crates, maps errors
//! to exit codes (see `palisade --help`).

mod cli;
mod cmd;
mod output;

#[cfg(test)]
mod deploy_tests;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes scripts can rely on.
pub mod exit {
    pub const OK: u8 = 0;
    /// The operation failed or was refused, or a check found a problem.
    pub const FAILED: u8 = 1;
    /// Bad usage or input.
    pub const USAGE: u8 = 2;
    /// A Palisade service could not be reached.
    pub const UNREACHABLE: u8 = 3;
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}
