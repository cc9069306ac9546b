//! A whole mesh of real processes for the end-to-end tests: `palisade ca serve`,
//! `palisade control-plane serve` over a copy of `examples/shop` whose endpoints
//! point at this test's ports, one `palisade proxy run` per workload, and a real
//! app behind each proxy. Clients talk to the proxies' outbound ports the way apps
//! do.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::app::App;
use super::{ok, s, CaDirFixture, Server};

/// The shop's workloads: name, namespace.
pub const SHOP: [(&str, &str); 4] = [
    ("frontend", "web"),
    ("checkout", "checkout"),
    ("reviews", "reviews"),
    ("payments", "payments"),
];

/// A loopback address of its own for each mesh (127.0.0.10, .11, …): ports picked
/// for a mesh are bound on that address only, so processes of other tests binding
/// port 0 on 127.0.0.1 can never take them between the pick and the bind.
pub fn mesh_ip() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(10);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::net::IpAddr::from([127, 0, 0, n])
}

/// A free port on `ip` (bound and released), never one handed out before in this
/// test process: two picks released in between could otherwise get the same port
/// (seen in CI: a sidecar's admin port taken by another of the same mesh).
pub fn free_port(ip: std::net::IpAddr) -> SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<SocketAddr>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let addr = TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap();
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(addr)
        {
            return addr;
        }
    }
}

/// One workload: its app and its sidecar.
pub struct Workload {
    pub id: String,
    pub app: App,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub sidecar: Option<Server>,
}

/// Fields drop in order: sidecars first, then the control plane, then the CA, so
/// nothing logs the loss of a service it no longer needs.
pub struct Mesh {
    pub workloads: HashMap<&'static str, Workload>,
    pub control_plane: Option<Server>,
    pub audit: Option<Audit>,
    pub ca_server: Server,
    pub ca: CaDirFixture,
    pub bundle: PathBuf,
    pub control_plane_addr: SocketAddr,
    pub control_plane_admin: SocketAddr,
    _tmp: tempfile::TempDir,
}

/// How a test's mesh differs from the plain shop.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra `proxy run` flags per workload name.
    pub flags: &'a [(&'a str, &'a [&'a str])],
    /// `(service, workload)`: the service's endpoint is that workload's inbound port.
    pub endpoint_of: &'a [(&'a str, &'a str)],
    /// Files added to (or replacing) the bundle before the control plane starts.
    pub files: &'a [(&'a str, &'a str)],
    /// Only these workloads get a sidecar (all when empty).
    pub only: &'a [&'a str],
    /// Run an audit service (SQLite in the mesh's temp dir) that the CA, the control
    /// plane and every sidecar send their records to.
    pub audit: bool,
    /// The audit database instead of SQLite (a `postgres://` URL).
    pub audit_database: Option<String>,
    /// More audit services on the same database; sidecars are spread over all of them.
    pub audit_replicas: usize,
}

/// The mesh's audit service.
pub struct Audit {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub database: String,
    pub server: Option<Server>,
    /// Further services on the same database: address and process.
    pub replicas: Vec<(SocketAddr, Server)>,
}

impl Mesh {
    /// The shop with every workload behind a sidecar.
    pub async fn shop() -> Self {
        Self::start(Options::default()).await
    }

    /// The shop, changed by `options`.
    pub async fn start(options: Options<'_>) -> Self {
        let ip = mesh_ip();
        let ca = CaDirFixture::init("shop.example");
        let tmp = tempfile::tempdir().unwrap();
        let audit = options.audit.then(|| Audit {
            addr: free_port(ip),
            admin: free_port(ip),
            database: options
                .audit_database
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", s(&tmp.path().join("audit.db")))),
            server: None,
            replicas: Vec::new(),
        });
        let ca_server = match &audit {
            Some(audit) => {
                let spool = tmp.path().join("ca.spool");
                ca.serve_with(&["--audit", &audit.addr.to_string(), "--audit-spool", s(&spool)])
            }
            None => ca.serve(),
        };
        let bundle = tmp.path().join("shop");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop"), &bundle);

        let mut workloads = HashMap::new();
        for (name, namespace) in SHOP {
            let app = App::start_on(name, ip).await;
            workloads.insert(
                name,
                Workload {
                    id: format!("spiffe://shop.example/ns/{namespace}/sa/{name}"),
                    app,
                    inbound: free_port(ip),
                    outbound: free_port(ip),
                    admin: free_port(ip),
                    sidecar: None,
                },
            );
        }
        let services = std::fs::read_to_string(bundle.join("services.yaml")).unwrap();
        let services = SHOP.iter().enumerate().fold(services, |text, (i, (name, _))| {
            let served_by = options
                .endpoint_of
                .iter()
                .find(|(service, _)| service == name)
                .map_or(*name, |(_, workload)| *workload);
            text.replace(
                &format!("127.0.0.1:{}", 15001 + i),
                &workloads[served_by].inbound.to_string(),
            )
        });
        std::fs::write(bundle.join("services.yaml"), services).unwrap();
        for (path, text) in options.files {
            let path = bundle.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        let control_plane_addr = free_port(ip);
        let control_plane_admin = free_port(ip);
        let mut mesh = Self {
            ca,
            ca_server,
            bundle,
            control_plane: None,
            audit,
            control_plane_addr,
            control_plane_admin,
            workloads,
            _tmp: tmp,
        };
        if mesh.audit.is_some() {
            mesh.start_audit();
            for _ in 0..options.audit_replicas {
                let addr = free_port(ip);
                let server = mesh.audit_server(addr, free_port(ip));
                mesh.audit.as_mut().unwrap().replicas.push((addr, server));
            }
        }
        mesh.start_control_plane();
        let started: Vec<&str> = SHOP
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| options.only.is_empty() || options.only.contains(name))
            .collect();
        for name in &started {
            let flags = options
                .flags
                .iter()
                .find(|(n, _)| n == name)
                .map_or(&[][..], |(_, f)| *f);
            mesh.start_sidecar(name, flags);
        }
        for name in &started {
            mesh.wait_ready(name).await;
        }
        mesh
    }

    /// Starts (or restarts) the audit service on its address and database.
    pub fn start_audit(&mut self) {
        let audit = self.audit.as_ref().expect("the mesh was started with an audit service");
        let server = self.audit_server(audit.addr, audit.admin);
        self.audit.as_mut().unwrap().server = Some(server);
    }

    /// `palisade audit serve` on `addr` over the mesh's audit database.
    fn audit_server(&self, addr: SocketAddr, admin: SocketAddr) -> Server {
        let id = "spiffe://shop.example/ns/palisade-system/sa/palisade-audit";
        let token = self.token(id);
        let trust = self.ca.file("bundle.pem");
        let audit = self.audit.as_ref().expect("the mesh was started with an audit service");
        let (listen, admin) = (addr.to_string(), admin.to_string());
        Server::start(&[
            "audit",
            "serve",
            "--database",
            &audit.database,
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--trust-domain",
            "shop.example",
            "--ca",
            &self.ca_server.addr,
            "--trust-bundle",
            s(&trust),
            "--join-token",
            &token,
        ])
    }

    /// The `--audit …` flags of a sender named `name`, when the mesh has an audit service.
    fn audit_flags(&self, name: &str) -> Vec<String> {
        self.audit.as_ref().map_or_else(Vec::new, |audit| {
            let spool = self.bundle.with_file_name(format!("{name}.spool"));
            // Sidecars spread over the replicas, in the shop's order.
            let n = SHOP.iter().position(|(w, _)| *w == name).unwrap_or(0) % (1 + audit.replicas.len());
            let addr = if n == 0 { audit.addr } else { audit.replicas[n - 1].0 };
            vec![
                "--audit".into(),
                addr.to_string(),
                "--audit-spool".into(),
                s(&spool).to_owned(),
            ]
        })
    }

    /// `palisade audit ARGS --database DB` against the mesh's audit database.
    pub fn audit_cli(&self, args: &[&str]) -> std::process::Output {
        let audit = self.audit.as_ref().expect("the mesh was started with an audit service");
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database", &audit.database]);
        super::run(&all)
    }

    pub fn start_control_plane(&mut self) {
        let id = "spiffe://shop.example/ns/palisade-system/sa/palisade-control-plane";
        let token = self.token(id);
        let listen = self.control_plane_addr.to_string();
        let admin = self.control_plane_admin.to_string();
        let trust = self.ca.file("bundle.pem");
        let audit = self.audit_flags("control-plane");
        let mut args = vec![
            "control-plane",
            "serve",
            "--bundle",
            s(&self.bundle),
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--ca",
            &self.ca_server.addr,
            "--trust-bundle",
            s(&trust),
            "--join-token",
            &token,
        ];
        args.extend(audit.iter().map(String::as_str));
        let server = Server::start(&args);
        self.control_plane = Some(server);
    }

    /// Starts `name`'s sidecar from a YAML config file (as operators run it), with
    /// the join token and `extra` as flags (flags override the file).
    pub fn start_sidecar(&mut self, name: &str, extra: &[&str]) {
        let w = &self.workloads[name];
        let token = self.token(&w.id);
        let config = format!(
            "id: {}\ntrustBundle: {}\nca: {}\ncontrolPlane: {}\ninbound: {}\noutbound: {}\nadmin: {}\napp: {}\n",
            w.id,
            s(&self.ca.file("bundle.pem")),
            self.ca_server.addr,
            self.control_plane_addr,
            w.inbound,
            w.outbound,
            w.admin,
            w.app.addr,
        );
        let file = self.bundle.with_file_name(format!("{name}-proxy.yaml"));
        std::fs::write(&file, config).unwrap();
        let audit = self.audit_flags(name);
        let mut args = vec!["proxy", "run", "--config", s(&file), "--join-token", &token];
        args.extend(audit.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        self.workloads.get_mut(name).unwrap().sidecar = Some(server);
    }

    fn token(&self, id: &str) -> String {
        ok(&["ca", "token", "create", "--spiffe-id", id, "--dir", self.ca.path()])
            .trim()
            .to_string()
    }

    /// Waits (≤ 20 s) until the sidecar's `/ready` answers 200.
    pub async fn wait_ready(&self, name: &str) {
        let admin = self.workloads[name].admin;
        super::eventually(
            Duration::from_secs(20),
            &format!("{name}'s sidecar to be ready"),
            || (admin_get(admin, "/ready").0 == 200).then_some(()),
        )
        .await;
    }

    pub fn workload(&self, name: &str) -> &Workload {
        &self.workloads[name]
    }

    /// `/metrics` of a sidecar.
    pub fn metrics(&self, name: &str) -> String {
        admin_get(self.workloads[name].admin, "/metrics").1
    }

    /// `/config` of a sidecar.
    pub fn config(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&admin_get(self.workloads[name].admin, "/config").1).unwrap()
    }
}

/// `GET path` on an admin port: status and body (0 when unreachable).
pub fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    if tcp.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
