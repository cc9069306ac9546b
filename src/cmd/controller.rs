//! `palisade controller run`: the Kubernetes controller.

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use palisade_ca::client::CaEndpoint;
use palisade_ca::{TrustBundle, TrustDomain};
use palisade_crds::controller::{self, CaAdmin, ControllerError, LeaseParams, LeaseTiming, Options, Output, Params};

use super::{shutdown_signal, UsageError};
use crate::cli::{ControllerCommand, ControllerRun};
use crate::exit;

pub async fn run(command: ControllerCommand) -> anyhow::Result<u8> {
    match command {
        ControllerCommand::Run(a) => controller_run(a).await,
    }
}

async fn controller_run(a: ControllerRun) -> anyhow::Result<u8> {
    let output = match (a.bundle_out, a.control_plane) {
        (Some(dir), _) => Output::BundleDir(dir),
        (None, Some(addr)) => Output::ControlPlane(addr),
        (None, None) => return Err(UsageError("pass --bundle-out DIR or --control-plane ADDR".into()).into()),
    };
    let td = TrustDomain::new(&a.trust_domain)?;
    let bundle = TrustBundle::load(td, &a.trust_bundle)?;
    let identity = match a.identity.or_else(host_name) {
        Some(identity) => identity,
        None => return Err(UsageError("cannot tell this replica's name; pass --identity NAME".into()).into()),
    };
    let mut config = kube_config(a.kubeconfig.as_deref()).await?;
    // The API server's audit log names the replica.
    let agent = format!("palisade-controller/{} ({identity})", env!("CARGO_PKG_VERSION"));
    if let Ok(agent) = http::HeaderValue::from_str(&agent) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let client = kube::Client::try_from(config).context("cannot make the Kubernetes client")?;
    let params = Params {
        client,
        output: output.clone(),
        ca: CaAdmin {
            endpoint: CaEndpoint::new(a.ca, bundle),
            token_file: a.admin_token_file,
        },
        lease: LeaseParams {
            namespace: a.namespace,
            name: a.lease_name,
            identity: identity.clone(),
            timing: LeaseTiming::default(),
        },
        cluster_domain: a.cluster_domain,
        options: Options::default(),
        progress: None,
    };
    if let Output::BundleDir(dir) = &output {
        println!(
            "palisade controller {identity} started; the bundle goes to {}/current",
            dir.display()
        );
    }
    match controller::run(params, shutdown_signal()).await {
        Ok(()) => Ok(exit::OK),
        Err(e @ ControllerError::ControlPlaneUnavailable { .. }) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// The kubeconfig given, else kube's usual inference ($KUBECONFIG, ~/.kube/config,
/// the in-cluster service account).
async fn kube_config(path: Option<&Path>) -> anyhow::Result<kube::Config> {
    match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| UsageError(format!("cannot read the kubeconfig `{}`: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| UsageError(format!("the kubeconfig `{}` is not usable: {e}", path.display())).into())
        }
        None => kube::Config::infer().await.map_err(|e| {
            UsageError(format!(
                "no Kubernetes configuration ({e}); pass --kubeconfig, set KUBECONFIG, or run in a pod"
            ))
            .into()
        }),
    }
}

/// `$HOSTNAME`, else the kernel's host name.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}
