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
            eprintln!("error: {}", describe(&e));
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose words the
/// message before already holds (many errors say their source in their own
/// message too, and `{:#}` would print it twice).
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod describe_tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("the CA refused: the join token is unknown")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot get an SVID from the CA: {0}")]
    struct Identity(#[from] Refused);

    #[derive(Debug, thiserror::Error)]
    #[error("low level")]
    struct Low;

    #[derive(Debug, thiserror::Error)]
    #[error("high level")]
    struct High(#[source] Low);

    #[test]
    fn a_cause_is_said_once() {
        let e = anyhow::Error::from(Identity(Refused));
        assert_eq!(
            describe(&e),
            "cannot get an SVID from the CA: the CA refused: the join token is unknown"
        );
        let e = anyhow::Error::from(High(Low)).context("while starting");
        assert_eq!(describe(&e), "while starting: high level: low level");
    }
}
