//! `palisade controller run`: the Kubernetes controller.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use palisade_ca::client::CaEndpoint;
use palisade_ca::{TrustBundle, TrustDomain};
use palisade_crds::controller::{self, CaAdmin, LeaseParams, LeaseTiming, Options, Output, Params};
use palisade_crds::webhook::{self, ReviewContext, WebhookLimits, WebhookMetrics, WebhookParams};
use palisade_policy::distribute::{controller_id, PushParams};

use super::identity::ServiceIdentity;
use super::{shutdown_signal, UsageError};
use crate::cli::{ControllerCommand, ControllerRun, FirstSvidArgs};
use crate::exit;

pub async fn run(command: ControllerCommand) -> anyhow::Result<u8> {
    match command {
        ControllerCommand::Run(a) => controller_run(a).await,
    }
}

async fn controller_run(a: ControllerRun) -> anyhow::Result<u8> {
    let td = TrustDomain::new(&a.trust_domain)?;
    let bundle = TrustBundle::load(td.clone(), &a.trust_bundle)?;
    // Kept alive for the controller's lifetime: its SVID, renewed.
    let mut identity_tasks = None;
    let output = match (a.bundle_out, &a.control_plane) {
        (Some(dir), _) => Output::BundleDir(dir),
        (None, Some(addr)) => {
            let first = FirstSvidArgs {
                join_token: a.join_token.clone(),
                service_account_token_file: a.service_account_token_file.clone(),
            };
            let id = controller_id(&td)?;
            let identity = ServiceIdentity::start(&a.ca, &a.trust_bundle, &td, id, &first).await?;
            let push = PushParams {
                addr: addr.clone(),
                trust: Arc::clone(&identity.trust),
                resolver: Arc::clone(&identity.resolver),
                trust_domain: td.clone(),
            };
            identity_tasks = Some(identity);
            Output::ControlPlane(push)
        }
        (None, None) => return Err(UsageError("pass --bundle-out DIR or --control-plane ADDR".into()).into()),
    };
    let (review, webhook) = match (&a.webhook_listen, &a.webhook_cert, &a.webhook_key) {
        (Some(listen), Some(cert), Some(key)) => {
            let (tx, rx) = tokio::sync::watch::channel(ReviewContext::new(td.clone()));
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {listen} (webhook): {e}; is another process using it?")
            })?;
            // Printed bound, so `--webhook-listen 127.0.0.1:0` says which port it got.
            let bound = listener.local_addr()?;
            let params = WebhookParams {
                listener,
                cert: cert.clone(),
                key: key.clone(),
                context: rx,
                limits: WebhookLimits::default(),
                metrics: Arc::new(WebhookMetrics::default()),
            };
            let task = tokio::spawn(async move {
                if let Err(e) = webhook::serve(params, std::future::pending()).await {
                    tracing::error!(error = %e, "the admission webhook stopped");
                }
            });
            println!("admission webhook on https://{bound}{}", webhook::server::PATH);
            (Some(tx), Some(task))
        }
        _ => (None, None),
    };
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
        options: match &output {
            // A restarted control plane waits for a push: resync often.
            Output::ControlPlane(_) => Options {
                resync: std::time::Duration::from_secs(30),
                ..Options::default()
            },
            Output::BundleDir(_) => Options::default(),
        },
        progress: None,
        review,
    };
    if let Output::BundleDir(dir) = &output {
        println!(
            "palisade controller {identity} started; the bundle goes to {}/current",
            dir.display()
        );
    }
    if let Output::ControlPlane(push) = &output {
        println!(
            "palisade controller {identity} started; the bundle goes to the control plane at {}",
            push.addr
        );
    }
    let result = controller::run(params, shutdown_signal()).await;
    if let Some(task) = webhook {
        task.abort();
    }
    drop(identity_tasks);
    result?;
    Ok(exit::OK)
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
