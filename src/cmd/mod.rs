//! One module per noun; each verb is a function taking its parsed arguments.

mod ca;
mod policy;

use crate::cli::Command;
use crate::exit;

/// Runs a command; the `u8` is the exit code of a command that ran to its end.
pub async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Ca(c) => ca::run(c).await,
        Command::Policy(c) => policy::run(c).await,
    }
}

/// The exit code for an error (see `palisade --help`).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use palisade_ca::client::ClientError;
    for cause in e.chain() {
        if let Some(ClientError::Connect { .. }) = cause.downcast_ref::<ClientError>() {
            return exit::UNREACHABLE;
        }
        if cause.is::<palisade_ca::SpiffeIdError>()
            || cause.is::<palisade_ca::serial::SerialError>()
            || cause.is::<UsageError>()
        {
            return exit::USAGE;
        }
    }
    exit::FAILED
}

/// The user's input was wrong in a way clap cannot see.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
