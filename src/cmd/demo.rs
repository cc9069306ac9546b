//! `palisade demo`: the whole mesh on this machine in one command, playing the
//! shop's story; and `palisade demo app`, the small HTTP app behind each sidecar.
//!
//! The demo is an orchestrator of real processes, the way an operator would run
//! them (see docs/operations.md): [`mesh`] starts them, [`procs`] owns them and
//! stops them whatever happens, [`story`] makes the calls and checks each outcome
//! against the audit log, [`net`] holds the app-side client and the stand-ins for
//! external hosts. Then the demo checks the audit chain, writes the compliance
//! report and prints `policy analyze`'s mismatch table.

mod mesh;
mod net;
mod procs;
mod story;

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::shutdown_signal;
use crate::cli::{Demo, DemoApp, DemoCommand, DemoRun};
use crate::exit;
use mesh::{Mesh, MeshError};
use story::{heading, Story, StoryError};

pub async fn run(demo: Demo) -> anyhow::Result<u8> {
    match demo.command {
        Some(DemoCommand::App(a)) => app(a).await,
        None => whole(demo.run).await,
    }
}

/// The whole demo: start, play, check the log, report; stop everything on the way out.
async fn whole(run: DemoRun) -> anyhow::Result<u8> {
    let started = Instant::now();
    println!(
        "Palisade demo: the shop mesh on loopback, state and logs in {}",
        run.dir.display()
    );
    let played = tokio::select! {
        played = play(&run.dir) => played,
        () = shutdown_signal() => {
            eprintln!("interrupted: every process the demo started is stopped");
            return Ok(exit::FAILED);
        }
    };
    let mesh = match played {
        Ok(mesh) => mesh,
        Err(e) => {
            // The mesh (and its processes) is gone by now: dropped with the error's scope.
            eprintln!("\n✗ the demo stopped: {e}");
            eprintln!(
                "  every process it started is stopped; logs: {}",
                run.dir.join("logs").display()
            );
            return Ok(exit::FAILED);
        }
    };
    println!("\nThe demo took {:.1} s.", started.elapsed().as_secs_f64());
    if run.keep_running {
        keep_running(&mesh).await?;
    }
    drop(mesh);
    Ok(exit::OK)
}

/// Starts the mesh, plays the story and the audit epilogue; the mesh is returned
/// running (dropping it stops it).
async fn play(dir: &Path) -> Result<Mesh, StoryError> {
    heading("Starting the mesh:");
    let t = Instant::now();
    let mesh = Mesh::start(dir).await?;
    println!(
        "  ({} processes up in {:.1} s)",
        mesh.procs.len(),
        t.elapsed().as_secs_f64()
    );
    Story::new(&mesh).play().await?;
    epilogue(&mesh).await?;
    Ok(mesh)
}

/// `audit verify`, `audit report` (HTML and Markdown) and `policy analyze`.
async fn epilogue(mesh: &Mesh) -> Result<(), StoryError> {
    let db = mesh.database.as_str();
    heading("The audit log:");
    let verified = mesh.palisade(&["audit", "verify", "--database", db]).await?;
    if !verified.contains("chain intact") {
        return Err(MeshError::Unexpected(format!("`audit verify` did not find the chain intact: {verified}")).into());
    }
    println!("  $ palisade audit verify\n  {}", verified.trim());
    let html = mesh.dir.join("report.html").display().to_string();
    let md = mesh.dir.join("report.md").display().to_string();
    let mut summary = String::new();
    for (format, out) in [("html", &html), ("md", &md)] {
        let args = [
            "audit",
            "report",
            "--database",
            db,
            "--since",
            "1h",
            "--format",
            format,
            "--out",
            out,
        ];
        let finished = mesh
            .procs
            .output(&args.map(str::to_owned), &[])
            .await
            .map_err(MeshError::from)?;
        if finished.code != Some(0) {
            return Err(MeshError::Unexpected(format!(
                "`audit report --format {format}` failed: {}",
                finished.stderr.trim()
            ))
            .into());
        }
        summary = finished.stderr;
    }
    println!("  $ palisade audit report --format html|md");
    for l in summary.lines().filter(|l| !l.starts_with("report written")) {
        println!("  {l}");
    }
    println!("  report: {html} (and {md})");

    heading("Policy analysis: calls the caller may make but the callee refuses, found without any traffic:");
    let bundle = mesh.bundle.display().to_string();
    let analysis = mesh.palisade(&["policy", "analyze", &bundle]).await?;
    println!("  $ palisade policy analyze {bundle}   (egress-only mismatches)");
    let mut lines = analysis.lines();
    if let Some(header) = lines.next() {
        println!("  {header}");
    }
    for l in lines.filter(|l| l.starts_with("egress-only mismatch")) {
        println!("  {l}");
    }
    Ok(())
}

/// `--keep-running`: frontend's identity back, copy-paste commands, then wait for Ctrl-C.
async fn keep_running(mesh: &Mesh) -> anyhow::Result<()> {
    let frontend = mesh.workload("frontend")?;
    let before = mesh.revocations_version("reviews").await?;
    let ca_dir = mesh.ca_dir.display().to_string();
    mesh.palisade(&["ca", "unrevoke", "--spiffe-id", &frontend.id, "--dir", &ca_dir])
        .await?;
    mesh.wait_revocations_after("reviews", before).await?;
    let out = |name: &str| mesh.workload(name).map(|w| w.outbound.to_string());
    let (f, c, r) = (out("frontend")?, out("checkout")?, out("reviews")?);
    let exe = std::env::current_exe().map_or_else(|_| "palisade".to_owned(), |p| p.display().to_string());
    let (db, bundle) = (&mesh.database, mesh.bundle.display());
    let lines = [
        format!("curl -x http://{f} http://reviews.shop:8080/reviews/1               # frontend → reviews: 200"),
        format!("curl -x http://{f} -X POST http://payments.shop:8080/charge         # frontend → payments: 403 at ingress (PCI)"),
        format!("curl -x http://{c} -X POST http://payments.shop:8080/charge         # checkout → payments: 200"),
        format!("curl -x http://{r} -X POST http://payments.shop:8080/charge         # reviews → payments: 403 at egress"),
        format!("{exe} audit query --database {db} --effect deny"),
        format!(
            "{exe} policy explain {bundle} --from {} --to payments/payments --method POST --path /charge",
            frontend.id
        ),
        format!("curl http://{}/config                                          # frontend's sidecar", frontend.admin),
        format!("curl http://{}/proxies                                         # the control plane", mesh.control_plane_admin),
    ];
    println!("\nThe mesh keeps running (frontend unrevoked; mesh.yaml says ALLOW_ANY). From another terminal:\n");
    for l in lines {
        println!("  {l}");
    }
    println!(
        "\nEdit a file under {bundle}/policies and call again: the change is live without a restart.\nLogs: {}. Press Ctrl-C to stop everything.",
        mesh.dir.join("logs").display()
    );
    shutdown_signal().await;
    println!("stopping every process the demo started");
    Ok(())
}

async fn app(a: DemoApp) -> anyhow::Result<u8> {
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; is another process using it?", a.listen))?;
    println!("palisade demo app `{}` listening on {}", a.name, listener.local_addr()?);
    tokio::select! {
        () = serve_app(listener, a.name.into(), None) => {}
        () = shutdown_signal() => {}
    }
    Ok(exit::OK)
}

/// Serves the echo app on `listener` forever, counting connections in `hits`.
async fn serve_app(listener: tokio::net::TcpListener, name: Arc<str>, hits: Option<Arc<AtomicUsize>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        if let Some(hits) = &hits {
            hits.fetch_add(1, Ordering::SeqCst);
        }
        let _ = tcp.set_nodelay(true);
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let name = Arc::clone(&name);
                async move { Ok::<_, Infallible>(answer(&name, request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Echoes what the app saw; gRPC-shaped requests get a gRPC answer.
async fn answer(name: &str, request: Request<Incoming>) -> Response<GrpcOrJson> {
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let caller = header("x-forwarded-client-cert").and_then(|x| x.split(";URI=").nth(1));
    let text = serde_json::json!({
        "app": name,
        "method": parts.method.as_str(),
        "target": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "caller": caller,
        "requestId": header("x-request-id"),
    })
    .to_string();
    let grpc = header("content-type").is_some_and(|v| v.starts_with("application/grpc"));
    let mut response = Response::new(GrpcOrJson::new(text, grpc));
    let content_type = if grpc { "application/grpc" } else { "application/json" };
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON body, or the same JSON as one gRPC message followed by `grpc-status: 0`.
#[derive(Debug)]
struct GrpcOrJson {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl GrpcOrJson {
    fn new(text: String, grpc: bool) -> Self {
        if !grpc {
            return Self {
                data: Some(Bytes::from(text)),
                trailers: None,
            };
        }
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        let mut frame = Vec::with_capacity(text.len() + 5);
        frame.push(0);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(text.as_bytes());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Self {
            data: Some(Bytes::from(frame)),
            trailers: Some(trailers),
        }
    }
}

impl hyper::body::Body for GrpcOrJson {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let frame = match (self.data.take(), self.trailers.take()) {
            (Some(data), trailers) => {
                self.trailers = trailers;
                Some(hyper::body::Frame::data(data))
            }
            (None, Some(trailers)) => Some(hyper::body::Frame::trailers(trailers)),
            (None, None) => None,
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.data, &self.trailers) {
            (Some(data), None) => hyper::body::SizeHint::with_exact(data.len() as u64),
            _ => hyper::body::SizeHint::default(),
        }
    }
}
