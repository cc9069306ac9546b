//! One module per noun; each verb is a function taking its parsed arguments.

mod audit;
mod audit_sink;
mod ca;
mod control_plane;
mod controller;
mod crds;
mod demo;
mod identity;
mod policy;
mod proxy;

use crate::cli::Command;
use crate::exit;

/// Runs a command; the `u8` is the exit code of a command that ran to its end.
pub async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Ca(c) => ca::run(c).await,
        Command::Policy(c) => policy::run(c).await,
        Command::ControlPlane(c) => control_plane::run(c).await,
        Command::Proxy(c) => proxy::run(c).await,
        Command::Audit(c) => audit::run(c).await,
        Command::Crds(c) => crds::run(c),
        Command::Controller(c) => controller::run(c).await,
        Command::Demo(c) => demo::run(c).await,
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
