//! The command line: `palisade <noun> <verb>`, as kubectl, istioctl and linkerd do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Zero-trust security for service meshes: SPIFFE identities, mTLS sidecars, Cedar authorization on both ends of every call, a tamper-evident audit log",
    after_help = "Exit codes: 0 success; 1 the operation failed or was refused (or a check found a problem); 2 bad usage or input; 3 a Palisade service could not be reached.\n\nSet RUST_LOG (e.g. RUST_LOG=debug) for more detail in logs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The certificate authority: trust domain, SVIDs, join tokens, revocation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Policy bundles: validate, format, explain a request, run policy tests, analyze.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The control plane: validates the policy bundle and streams each proxy its snapshot.
    #[command(subcommand)]
    ControlPlane(ControlPlaneCommand),
    /// The sidecar: mTLS between workloads, egress and ingress decisions on every request.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// The audit log: the ingest service, chain verification, queries and compliance reports.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Kubernetes: the CustomResourceDefinitions of group palisade.dev.
    #[command(subcommand)]
    Crds(CrdsCommand),
    /// Kubernetes: the controller that builds the policy bundle from the cluster.
    #[command(subcommand)]
    Controller(ControllerCommand),
    /// The whole mesh on this machine in one command, playing the shop's story.
    ///
    /// Starts the CA, the control plane, the audit service (SQLite), the four shop apps
    /// behind their sidecars and stand-ins for api.stripe.com and an unlisted host, all
    /// on loopback; then makes the calls of the story and checks each decision against
    /// the audit log. Exits 1 on any unexpected outcome. Every process it starts is
    /// stopped at the end (or on Ctrl-C); logs are in DIR/logs/.
    Demo(Demo),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Receive audit records from sidecars, the CA and the control plane over mTLS.
    ///
    /// Only mesh identities (valid, unrevoked SVIDs of the trust bundle) may write, and
    /// each record is stamped with the sender's verified SPIFFE ID. Records are stored
    /// in one hash-chained total order; a batch resent after a lost answer is stored
    /// once. Several replicas may share one PostgreSQL database and keep one chain.
    ///
    /// The service's own SVID (spiffe://TD/ns/palisade-system/sa/palisade-audit) comes
    /// from the CA with a join token: `palisade ca token create --spiffe-id ...`.
    Serve(AuditServe),
    /// Check the whole hash chain; exit 1 naming the first broken record if any was
    /// edited, deleted, inserted or moved.
    Verify(AuditVerify),
    /// Print stored records that match filters (newest last).
    Query(AuditQuery),
    /// Write a compliance report: totals, denials by edge and policy, dual-approval
    /// coverage, external traffic, identity events, policy changes and the chain check.
    Report(AuditReport),
}

/// Where the audit records are.
#[derive(Debug, Args)]
pub struct AuditDatabase {
    /// `sqlite://FILE` (created on first use) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "PALISADE_AUDIT_DATABASE", default_value = "sqlite://palisade-audit.db")]
    pub database: String,
}

#[derive(Debug, Args)]
pub struct AuditServe {
    #[command(flatten)]
    pub database: AuditDatabase,
    /// Address senders connect to; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15020")]
    pub listen: SocketAddr,
    /// The CA's address (host:port).
    #[arg(long, env = "PALISADE_CA_ADDR")]
    pub ca: String,
    /// The trust bundle (PEM roots), e.g. the CA directory's bundle.pem.
    #[arg(long)]
    pub trust_bundle: PathBuf,
    /// The trust domain of the mesh, e.g. shop.example.
    #[arg(long)]
    pub trust_domain: String,
    #[command(flatten)]
    pub first_svid: FirstSvidArgs,
    /// The admin port (plain HTTP, keep it on loopback): /ready, /metrics.
    #[arg(long, default_value = "127.0.0.1:15021")]
    pub admin: SocketAddr,
}

#[derive(Debug, Args)]
pub struct AuditVerify {
    #[command(flatten)]
    pub database: AuditDatabase,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct AuditQuery {
    #[command(flatten)]
    pub database: AuditDatabase,
    /// Only records since this long ago (`90s`, `10m`, `1h`, `2d`) or this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records until this long ago or this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only decisions with this effect: allow, deny, dry_run_deny.
    #[arg(long)]
    pub effect: Option<String>,
    /// Only decisions of this side: egress (the caller's) or ingress (the callee's).
    #[arg(long)]
    pub side: Option<String>,
    /// Only records whose caller (or sender) is this SPIFFE ID.
    #[arg(long)]
    pub source: Option<String>,
    /// Only records for this destination: a service (`NS/NAME`) or an external host.
    #[arg(long)]
    pub dest: Option<String>,
    /// Only records of this kind: blackhole, passthrough, allowlisted, external (any
    /// external), decision, identity, policy.
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(long, short, value_enum, default_value_t = QueryOutput::Table)]
    pub output: QueryOutput,
}

/// How `audit query` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryOutput {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct AuditReport {
    #[command(flatten)]
    pub database: AuditDatabase,
    /// The window: records since this long ago (`24h`, `7d`) or this time (RFC 3339).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// The end of the window (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// html (one self-contained file with charts), json, csv or md.
    #[arg(long, default_value = "html")]
    pub format: String,
    /// The file to write; `-` for standard output.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Demo {
    #[command(subcommand)]
    pub command: Option<DemoCommand>,
    #[command(flatten)]
    pub run: DemoRun,
}

/// `palisade demo` without a subcommand: the whole story.
#[derive(Debug, Args)]
pub struct DemoRun {
    /// Where the demo keeps its state: the CA, the bundle copy, the audit database,
    /// logs and reports. A previous run's state there is removed first.
    #[arg(long, default_value = "palisade-demo")]
    pub dir: PathBuf,
    /// Leave the mesh running after the story, print `curl` commands to explore it,
    /// and stop everything on Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// A small HTTP app (HTTP/1.1 and h2c) that answers every request with what it saw.
    ///
    /// The answer is JSON: the app's name, the method and target it received, the caller
    /// from `x-forwarded-client-cert` and the `x-request-id`. gRPC requests (content-type
    /// application/grpc) get that JSON as one gRPC message and `grpc-status: 0`. Used by
    /// the demo and the proxy benchmark as the workload behind a sidecar.
    App(DemoApp),
}

#[derive(Debug, Args)]
pub struct DemoApp {
    /// The name the app answers with.
    #[arg(long, default_value = "app")]
    pub name: String,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum ControlPlaneCommand {
    /// Serve policy snapshots to proxies over mTLS, following edits of the bundle directory.
    ///
    /// Loads and validates DIR; refuses to start if it is invalid. Then watches DIR and
    /// publishes a new version only when the whole bundle is valid again: an invalid edit
    /// is logged with its errors and changes nothing. Each proxy, identified by its SVID,
    /// receives only what applies to it and ACKs or NACKs each version; `control-plane
    /// status` shows which proxy runs which version.
    ///
    /// In Kubernetes, `--from-controller --trust-domain TD` takes the bundle from the
    /// controller instead (`palisade controller run --control-plane ADDR`), which pushes
    /// the bundle it renders from the cluster; the same loader checks it, and only the
    /// controller's SVID (…/ns/palisade-system/sa/palisade-controller) may push.
    ///
    /// The control plane's own SVID (spiffe://TD/ns/palisade-system/sa/palisade-control-plane)
    /// comes from the CA with a join token: `palisade ca token create --spiffe-id ...`.
    Serve(Box<ControlPlaneServe>),
    /// Which proxy runs which snapshot version (from the control plane's admin port).
    Status(ControlPlaneStatus),
}

#[derive(Debug, Args)]
pub struct ControlPlaneServe {
    /// The policy bundle directory (mesh.yaml, workloads.yaml, services.yaml, egress.yaml, policies/),
    /// watched for changes. A symbolic link is followed anew on each read, so
    /// `palisade controller run --bundle-out DIR` can feed DIR/current.
    #[arg(long, required_unless_present = "from_controller")]
    pub bundle: Option<PathBuf>,
    /// Take the bundle from the Kubernetes controller instead of a directory: it pushes
    /// what it renders from the cluster (`palisade controller run --control-plane ADDR`).
    /// Until its first push it sends proxies nothing: they keep their last snapshot, and a
    /// new proxy denies everything.
    #[arg(long, conflicts_with = "bundle", requires = "trust_domain")]
    pub from_controller: bool,
    /// The trust domain, with --from-controller (a bundle directory names its own).
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Address proxies connect to; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub listen: SocketAddr,
    /// The CA's address (host:port).
    #[arg(long, env = "PALISADE_CA_ADDR")]
    pub ca: String,
    /// The trust bundle (PEM roots), e.g. the CA directory's bundle.pem.
    #[arg(long)]
    pub trust_bundle: PathBuf,
    #[command(flatten)]
    pub first_svid: FirstSvidArgs,
    /// The admin port (plain HTTP, keep it on loopback): /ready, /proxies, /metrics.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub admin: SocketAddr,
    #[command(flatten)]
    pub audit: AuditClient,
}

#[derive(Debug, Args)]
pub struct ControlPlaneStatus {
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub admin: SocketAddr,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Run a sidecar beside one workload.
    ///
    /// Settings come from --config (YAML, camelCase keys: id, joinToken,
    /// serviceAccountTokenFile, svidCert, svidKey, trustBundle, ca, controlPlane, inbound,
    /// app, appProtocol, outbound, admin, svidTtl, resolve, audit, auditStrict, auditSpool,
    /// auditSpoolMaxBytes);
    /// each flag below overrides its key. The app sends plain HTTP to --outbound (as a
    /// proxy, `http://SERVICE-HOST/path`, or with the service's Host); other sidecars
    /// reach this one on --inbound over mTLS; allowed requests reach the app at --app.
    /// Until the first policy snapshot arrives every request is denied and /ready is 503.
    Run(Box<ProxyRun>),
}

#[derive(Debug, Args)]
pub struct ProxyRun {
    /// A YAML file with the settings below (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The workload's SPIFFE ID, e.g. spiffe://shop.example/ns/web/sa/frontend.
    #[arg(long)]
    pub id: Option<String>,
    /// A join token for the first SVID (from `palisade ca token create`).
    #[arg(long, env = "PALISADE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// In Kubernetes, instead of a join token: the pod's projected ServiceAccount token
    /// (audience palisade-ca), e.g. /var/run/secrets/palisade/token. Read again at every
    /// attempt, as the kubelet rotates it; the CA must run with --kubernetes-attestation.
    #[arg(long)]
    pub service_account_token_file: Option<PathBuf>,
    /// An existing SVID chain (PEM) instead of a join token; renewed through the CA.
    #[arg(long, requires = "svid_key")]
    pub svid_cert: Option<PathBuf>,
    /// The key of --svid-cert (PKCS#8 PEM).
    #[arg(long, requires = "svid_cert")]
    pub svid_key: Option<PathBuf>,
    /// The trust bundle (PEM roots), e.g. the CA directory's bundle.pem.
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    /// The CA's address (host:port).
    #[arg(long)]
    pub ca: Option<String>,
    /// The control plane's address (host:port).
    #[arg(long)]
    pub control_plane: Option<String>,
    /// mTLS listener for other sidecars [default: 0.0.0.0:15006].
    #[arg(long)]
    pub inbound: Option<SocketAddr>,
    /// The app, on loopback, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub app: Option<SocketAddr>,
    /// How to speak to the app: auto (gRPC over h2c, the rest HTTP/1.1), http1 or h2.
    #[arg(long, value_enum)]
    pub app_protocol: Option<AppProtocolArg>,
    /// Plain-HTTP listener for the app, loopback only [default: 127.0.0.1:15001].
    #[arg(long)]
    pub outbound: Option<SocketAddr>,
    /// Admin listener: /ready, /live, /metrics, /config [default: 127.0.0.1:15000].
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Requested SVID lifetime, e.g. 30m or 1h (the CA caps it).
    #[arg(long)]
    pub svid_ttl: Option<String>,
    /// Map an external host name to addresses before DNS, e.g. api.stripe.com=127.0.0.2
    /// (repeatable); an IP:PORT also replaces the port the app asked for.
    #[arg(long, value_name = "HOST=IP[,IP]")]
    pub resolve: Vec<String>,
    /// The audit service (host:port) that gets a record of every decision and every
    /// external request. Without it, they are only logged.
    #[arg(long, env = "PALISADE_AUDIT_ADDR")]
    pub audit: Option<String>,
    /// Strict audit: answer 503 instead of forwarding while records cannot be kept
    /// (queue and spool full, or the spool unwritable).
    #[arg(long)]
    pub audit_strict: bool,
    /// Where records wait while the audit service is away (replayed in order when it
    /// returns) [default: a file per identity in the temp directory].
    #[arg(long)]
    pub audit_spool: Option<PathBuf>,
    /// The spool's bound in bytes; beyond it records are dropped, counted and logged
    /// [default: 67108864].
    #[arg(long)]
    pub audit_spool_max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppProtocolArg {
    Auto,
    Http1,
    H2,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA: a root (ECDSA P-256, 10 years) and an intermediate signing CA (1 year).
    ///
    /// Writes root.pem, root.key, intermediate.pem, intermediate.key, bundle.pem (the trust
    /// bundle to give every workload), admin.token (the credential for admin calls) and
    /// state.db into DIR. Keys and the token are written 0600. With --root-cert/--root-key
    /// an existing root signs the intermediate and its key is not copied.
    Init(CaInit),
    /// Run the CA's gRPC API over TLS (the CA presents its own SVID).
    ///
    /// Writes the address it listens on to DIR/ca.addr so the CLI's admin calls find it.
    /// A workload's first SVID is attested by a join token or, with
    /// --kubernetes-attestation, by its pod's ServiceAccount token; a renewal by the
    /// current SVID.
    Serve(CaServe),
    /// Join tokens: single-use credentials that bootstrap a workload's first SVID.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Mint a key and an SVID offline (for operators and tests; workloads use a join token).
    ///
    /// Writes leaf.pem, leaf.key (0600), chain.pem (leaf + intermediate) and bundle.pem
    /// into OUT. `openssl verify -CAfile OUT/bundle.pem -untrusted DIR/intermediate.pem
    /// OUT/leaf.pem` accepts the result.
    Issue(CaIssue),
    /// Revoke a certificate by serial or a whole identity by SPIFFE ID.
    ///
    /// Reaches the running CA through its admin API; the CA pushes the new revocation
    /// list to every proxy and refuses to issue to a revoked ID until it is unrevoked.
    Revoke(CaRevoke),
    /// Take back a revocation.
    Unrevoke(CaUnrevoke),
    /// The revocation list.
    #[command(subcommand)]
    Revocations(RevocationsCommand),
    /// Write the RFC 5280 CRL signed by the intermediate (for tools outside the mesh).
    ///
    /// A revoked SPIFFE ID is written as the serials of its still-valid certificates.
    Crl(CaCrl),
    /// Show a certificate's SPIFFE ID, serial, validity, chain and revocation status.
    ///
    /// Exits 1 when the certificate does not verify as an SVID of the trust bundle or is revoked.
    Inspect(CaInspect),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a bundle: Cedar syntax and schema (strict), the namespace rule, unique @ids,
    /// the registry and egress files. Prints every error with file:line:col; exit 0 or 1.
    Validate(PolicyDir),
    /// Format the bundle's Cedar files with the Cedar formatter.
    Fmt(PolicyFmt),
    /// Show how one request would be decided: egress, ingress and overall, with the
    /// policies that decided (file:line) and any errors.
    Explain(PolicyExplain),
    /// Run the bundle's policy tests (DIR/tests/*.yaml); ends with `N passed, N failed`.
    Test(PolicyDir),
    /// For every workload × service × method: edges both sides allow, egress-only
    /// mismatches (the caller may call, the callee refuses) and ingress-only grants.
    Analyze(PolicyAnalyze),
    /// Turn a bundle directory into the equivalent Kubernetes resources (one multi-document
    /// YAML on stdout, for `kubectl apply -f -`).
    ///
    /// Namespaces, the MeshConfig, one CedarPolicy per policy file (named by its stem;
    /// NAME.dry-run.cedar gives mode dry-run), one EgressAllowlist per egress entry, and
    /// per identity a ServiceAccount and a Deployment running the app beside the sidecar
    /// (which bootstraps with its ServiceAccount token); per service a Service whose
    /// `palisade.dev/hosts` annotation keeps its hosts. Applied to a cluster, they give the
    /// controller the same bundle, with the same digest. What has no Kubernetes form (a
    /// policy file name that is not a Kubernetes name, an egress entry across namespaces)
    /// is an error naming what to change.
    Export(PolicyExport),
}

#[derive(Debug, Args)]
pub struct PolicyExport {
    /// The bundle directory.
    pub dir: PathBuf,
    /// What to export to; `crds` is the only format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Crds)]
    pub format: ExportFormat,
    /// The image of the Palisade containers in the Deployments.
    #[arg(long, default_value = "ghcr.io/palisade-mesh/palisade:0.1.0")]
    pub image: String,
    /// The CA's address as sidecars in the cluster reach it.
    #[arg(long, default_value = "palisade-ca.palisade-system.svc:8443")]
    pub ca: String,
    /// The control plane's address as sidecars in the cluster reach it.
    #[arg(long, default_value = "palisade-control-plane.palisade-system.svc:15010")]
    pub control_plane: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Kubernetes resources: the palisade.dev CRDs, Services and Deployments.
    Crds,
}

#[derive(Debug, Args)]
pub struct PolicyDir {
    /// The bundle directory (mesh.yaml, services.yaml, workloads.yaml, egress.yaml, policies/).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct PolicyFmt {
    pub dir: PathBuf,
    /// Change nothing; exit 1 and list the files that are not formatted.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct PolicyExplain {
    pub dir: PathBuf,
    /// The calling workload's SPIFFE ID.
    #[arg(long)]
    pub from: String,
    /// The destination: NAMESPACE/SERVICE for a mesh service, HOST[:PORT] for an external host.
    #[arg(long)]
    pub to: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The request target: path and optional query, as the app sends it.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A request header, `NAME=VALUE`; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct PolicyAnalyze {
    pub dir: PathBuf,
    #[arg(long, short, value_enum, default_value_t = AnalyzeOutput::Table)]
    pub output: AnalyzeOutput,
}

/// Formats of `policy analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnalyzeOutput {
    Table,
    Json,
    /// Graphviz DOT (`| dot -Tsvg > mesh.svg`).
    Dot,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token for exactly one SPIFFE ID. Prints only the token on stdout.
    Create(TokenCreate),
}

#[derive(Debug, Subcommand)]
pub enum RevocationsCommand {
    /// List what is revoked.
    List(RevocationsList),
}

/// Where the CA's directory is.
#[derive(Debug, Args, Clone)]
pub struct DirArg {
    /// The CA directory.
    #[arg(long, env = "PALISADE_CA_DIR", default_value = "palisade-ca")]
    pub dir: PathBuf,
}

/// How to reach a running CA.
#[derive(Debug, Args, Clone)]
pub struct CaConn {
    #[command(flatten)]
    pub dir: DirArg,
    /// The CA's address (host:port); defaults to what `ca serve` wrote to DIR/ca.addr.
    #[arg(long = "ca", env = "PALISADE_CA_ADDR")]
    pub addr: Option<String>,
    /// The trust bundle to check the CA against; defaults to DIR/bundle.pem.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// The trust domain of --bundle; defaults to DIR's.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// The admin credential; defaults to DIR/admin.token. DIR/revoker.token is
    /// enough for `revoke`, `unrevoke` and `revocations list`.
    #[arg(long, env = "PALISADE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaInit {
    /// The trust domain, e.g. `example.org` (lower-case letters, digits, `.`, `-`, `_`).
    #[arg(long)]
    pub trust_domain: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// An existing root certificate (PEM) to sign the intermediate with.
    #[arg(long, requires = "root_key")]
    pub root_cert: Option<PathBuf>,
    /// The key of --root-cert (PKCS#8 PEM).
    #[arg(long, requires = "root_cert")]
    pub root_key: Option<PathBuf>,
    /// Replace an existing CA in DIR (every SVID it issued becomes untrusted).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CaServe {
    #[command(flatten)]
    pub dir: DirArg,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Lifetime of an SVID when the workload asks for none (at most 24h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub default_ttl: Duration,
    /// Also accept Kubernetes ServiceAccount tokens for first SVIDs: each is reviewed
    /// with the API server (TokenReview), and the token of system:serviceaccount:NS:SA
    /// gets only spiffe://TD/ns/NS/sa/SA. The CA's own identity towards the API server
    /// needs `create` on `tokenreviews` (authentication.k8s.io).
    #[arg(long)]
    pub kubernetes_attestation: bool,
    /// The kubeconfig to reach the API server with [default: the in-cluster config of
    /// the CA's pod].
    #[arg(long, requires = "kubernetes_attestation")]
    pub kubeconfig: Option<PathBuf>,
    /// The audience a ServiceAccount token must be projected for.
    #[arg(
        long,
        default_value = "palisade-ca",
        requires = "kubernetes_attestation",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub token_audience: String,
    #[command(flatten)]
    pub audit: AuditClient,
}

/// Sending audit records to `palisade audit serve`.
#[derive(Debug, Args)]
pub struct AuditClient {
    /// The audit service's address (host:port). Without it, events are only logged.
    #[arg(long = "audit", env = "PALISADE_AUDIT_ADDR")]
    pub address: Option<String>,
    /// Where records wait while the audit service is away (a file; replayed in order
    /// when it returns, also after a restart). Default: `audit.spool` beside the
    /// service's own state, or `palisade-audit.spool` in the working directory.
    #[arg(long = "audit-spool")]
    pub spool: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenCreate {
    /// The one identity the token bootstraps, e.g. spiffe://example.org/ns/shop/sa/web.
    #[arg(long)]
    pub spiffe_id: String,
    /// How long the token may be used (at most 24h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub conn: CaConn,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct CaIssue {
    #[arg(long)]
    pub spiffe_id: String,
    /// Directory to write leaf.pem, leaf.key, chain.pem and bundle.pem to.
    #[arg(long)]
    pub out: PathBuf,
    /// Lifetime (at most 24h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub dir: DirArg,
    /// Replace an SVID already in OUT.
    #[arg(long)]
    pub force: bool,
}

/// What to revoke: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A certificate serial in hex, as `ca inspect` prints it.
    #[arg(long)]
    pub serial: Option<String>,
    /// A SPIFFE ID: every certificate carrying it.
    #[arg(long)]
    pub spiffe_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CaRevoke {
    #[command(flatten)]
    pub target: Target,
    /// Why; `keyCompromise`, `superseded`, `cessationOfOperation`, `affiliationChanged` or
    /// `privilegeWithdrawn` also become the CRL reason code.
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub conn: CaConn,
    /// Write to DIR's state directly, for when no CA is running (a running CA picks it up
    /// within seconds).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct CaUnrevoke {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub conn: CaConn,
    /// Write to DIR's state directly, for when no CA is running.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct RevocationsList {
    #[command(flatten)]
    pub conn: CaConn,
    /// Ask the running CA instead of reading DIR's state.
    #[arg(long)]
    pub remote: bool,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct CaCrl {
    /// File to write the DER CRL to (`.pem` writes PEM).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub dir: DirArg,
}

#[derive(Debug, Args)]
pub struct CaInspect {
    /// A PEM file: the leaf first, then any intermediates.
    pub file: PathBuf,
    #[command(flatten)]
    pub dir: DirArg,
    /// Check against this bundle instead of DIR/bundle.pem.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// Aligned columns.
    Table,
    /// JSON, for scripts.
    Json,
}

/// Reads `90s`, `10m`, `1h`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("`{s}` is not a duration; write e.g. `90s`, `10m`, `1h` or `1h30m`");
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(err()),
        };
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(err)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_flags() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "10", "m", "1x", "-1h", "0s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// Build the policy bundle from the cluster and write each resource's status back.
    ///
    /// Watches CedarPolicies, EgressAllowlists, the MeshConfig, CertificateRevocations,
    /// Services, EndpointSlices and Pods in every namespace, and builds the same bundle a
    /// directory of files would give, through the same loader and validator. An invalid
    /// CedarPolicy is marked Invalid with the validator's message and its namespace keeps
    /// its last valid policies; other namespaces update as usual. CertificateRevocations
    /// are applied through the CA's admin API; deleting one unrevokes.
    ///
    /// With --bundle-out DIR each new bundle is written into its own directory and
    /// DIR/current is switched to it atomically: run `palisade control-plane serve
    /// --bundle DIR/current`. Several replicas may run; the holder of the Lease is the
    /// only one that writes. Its RBAC: read what it watches, write only its resources'
    /// status and its Lease.
    Run(ControllerRun),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("output").required(true).args(["bundle_out", "control_plane"])))]
pub struct ControllerRun {
    /// A kubeconfig file; default: $KUBECONFIG or ~/.kube/config, else the in-cluster
    /// service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Write the bundle under this directory; the current version is DIR/current.
    #[arg(long, value_name = "DIR")]
    pub bundle_out: Option<PathBuf>,
    /// Push each bundle to a control plane started with `--from-controller` (host:port), over
    /// mTLS as spiffe://TD/ns/palisade-system/sa/palisade-controller: give that identity's
    /// --join-token or, in a pod, --service-account-token-file.
    #[arg(long, value_name = "ADDR", conflicts_with = "bundle_out")]
    pub control_plane: Option<String>,
    /// With --control-plane: a join token for the controller's identity.
    #[arg(
        long,
        env = "PALISADE_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "service_account_token_file"
    )]
    pub join_token: Option<String>,
    /// With --control-plane, in a pod: the projected ServiceAccount token (audience
    /// palisade-ca) the CA attests instead of a join token.
    #[arg(long, value_name = "FILE")]
    pub service_account_token_file: Option<PathBuf>,
    /// Serve the CedarPolicy validating admission webhook here (HTTPS), e.g. 0.0.0.0:9443.
    /// It refuses at `kubectl apply` what `palisade policy validate` would refuse.
    #[arg(long, value_name = "ADDR", requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_listen: Option<SocketAddr>,
    /// The webhook's certificate chain (PEM), for palisade-controller.palisade-system.svc:
    /// the API server checks that DNS name, which an SVID does not carry. Re-read when it
    /// changes (cert-manager rotates it).
    #[arg(long, value_name = "FILE", requires = "webhook_listen")]
    pub webhook_cert: Option<PathBuf>,
    /// The webhook certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "webhook_listen")]
    pub webhook_key: Option<PathBuf>,
    /// The CA's address (host:port), for CertificateRevocations.
    #[arg(long, env = "PALISADE_CA_ADDR")]
    pub ca: String,
    /// The trust bundle (PEM roots) the CA's certificate is checked against.
    #[arg(long)]
    pub trust_bundle: PathBuf,
    /// The mesh's trust domain (the CA's), e.g. shop.example.
    #[arg(long)]
    pub trust_domain: String,
    /// The CA's revoker credential (the CA directory's revoker.token, which may only
    /// revoke, unrevoke and list revocations), read at each connection. admin.token
    /// works too, but gives the controller the power to mint any identity.
    #[arg(long, env = "PALISADE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: PathBuf,
    /// The namespace of the controller's Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "palisade-system")]
    pub namespace: String,
    /// The Lease that elects the one replica that writes.
    #[arg(long, default_value = "palisade-controller")]
    pub lease_name: String,
    /// This replica's name in the Lease; default: $POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The cluster's DNS domain, for services' host names (NAME.NS.svc.DOMAIN).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

#[derive(Debug, Subcommand)]
pub enum CrdsCommand {
    /// Write the CRD manifests (CedarPolicy, EgressAllowlist, MeshConfig,
    /// CertificateRevocation) generated from Palisade's own types.
    ///
    /// Without --out, prints them to stdout as one multi-document YAML, ready for
    /// `kubectl apply -f -`. The committed copies are in crds/manifests/.
    Generate(CrdsGenerate),
}

#[derive(Debug, Args)]
pub struct CrdsGenerate {
    /// Write one file per CRD (NAME.yaml) into this directory instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// How a Palisade service gets its first SVID: one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct FirstSvidArgs {
    /// A join token for this service's identity (from `palisade ca token create`).
    #[arg(long, env = "PALISADE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// In Kubernetes: the projected ServiceAccount token (audience palisade-ca) instead of a
    /// join token; the CA checks it with TokenReview and issues the service account's ID.
    /// Re-read at each attempt (the kubelet rotates it).
    #[arg(long, value_name = "FILE")]
    pub service_account_token_file: Option<PathBuf>,
}
