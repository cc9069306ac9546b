//! `palisade proxy run`: the sidecar.

use palisade_proxy::config::{AppProtocol, ConfigLayer};
use palisade_proxy::run::{run as run_proxy, Bound};

use super::{shutdown_signal, UsageError};
use crate::cli::{AppProtocolArg, ProxyCommand, ProxyRun};
use crate::exit;

pub async fn run(command: ProxyCommand) -> anyhow::Result<u8> {
    match command {
        ProxyCommand::Run(a) => proxy_run(*a).await,
    }
}

async fn proxy_run(a: ProxyRun) -> anyhow::Result<u8> {
    let file = match &a.config {
        Some(path) => ConfigLayer::read(path).map_err(|e| UsageError(e.to_string()))?,
        None => ConfigLayer::default(),
    };
    let config = file
        .overridden_by(flags(a)?)
        .resolve()
        .map_err(|e| UsageError(e.to_string()))?;
    let id = config.id.clone();
    let on_listening = |bound: Bound| {
        println!("palisade proxy for {id}: inbound (mTLS) listening on {}", bound.inbound);
        println!(
            "palisade proxy for {id}: outbound (app) listening on {}",
            bound.outbound
        );
        println!("palisade proxy for {id}: admin listening on {}", bound.admin);
    };
    match run_proxy(config, on_listening, shutdown_signal()).await {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.is_unreachable() => {
            eprintln!("error: {e}");
            Ok(exit::UNREACHABLE)
        }
        Err(e) => Err(e.into()),
    }
}

fn flags(a: ProxyRun) -> Result<ConfigLayer, UsageError> {
    let resolve = ConfigLayer::resolve_flags(&a.resolve).map_err(|e| UsageError(e.to_string()))?;
    Ok(ConfigLayer {
        id: a.id,
        join_token: a.join_token,
        service_account_token_file: a.service_account_token_file,
        svid_cert: a.svid_cert,
        svid_key: a.svid_key,
        trust_bundle: a.trust_bundle,
        ca: a.ca,
        control_plane: a.control_plane,
        inbound: a.inbound,
        app: a.app,
        app_protocol: a.app_protocol.map(|p| match p {
            AppProtocolArg::Auto => AppProtocol::Auto,
            AppProtocolArg::Http1 => AppProtocol::Http1,
            AppProtocolArg::H2 => AppProtocol::H2,
        }),
        outbound: a.outbound,
        admin: a.admin,
        svid_ttl: a.svid_ttl,
        resolve,
        audit: a.audit,
        audit_strict: a.audit_strict.then_some(true),
        audit_spool: a.audit_spool,
        audit_spool_max_bytes: a.audit_spool_max_bytes,
    })
}
