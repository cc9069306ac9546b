//! A small DSL over real `palisade` processes: run a command, start a server, wait
//! for what it prints. Every process is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn palisade() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_palisade"));
    c.env("RUST_LOG", "warn")
        .env_remove("PALISADE_CA_DIR")
        .env_remove("PALISADE_CA_ADDR");
    c
}

/// Runs `palisade ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    palisade()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the palisade binary runs")
}

/// Runs `palisade ARGS` and insists on exit 0; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "`palisade {}` failed with {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `palisade ARGS`, insists on exit `code`; returns stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "`palisade {}` should exit {code}\nstdout: {}\nstderr: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A long-running `palisade` process.
pub struct Server {
    child: Child,
    pub addr: String,
    /// Its stderr lines, when it was spawned with stderr piped.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `palisade ARGS` and waits (≤ 30 s) for a stdout line containing
    /// "listening on ADDR".
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(palisade().args(args), "listening on ")
    }

    /// Starts `command` and waits (≤ 30 s) for a stdout line containing `marker`;
    /// [`Server::addr`] is the rest of that line. When `command` pipes stderr, its
    /// lines are echoed and kept for [`Server::logged`].
    pub fn spawn(command: &mut Command, marker: &'static str) -> Self {
        let what = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the palisade binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.split(marker).nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let kept = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    kept.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("`palisade {what}` exited before printing {marker:?} (its stderr is above)")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("`palisade {what}` did not print {marker:?} within 30 s")
            }
        };
        Self { child, addr, stderr }
    }

    /// How many lines it wrote to its (piped) stderr containing `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.stderr.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh CA directory made by `palisade ca init`.
pub struct CaDirFixture {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub trust_domain: &'static str,
}

impl CaDirFixture {
    pub fn init(trust_domain: &'static str) -> Self {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().join("ca");
        ok(&["ca", "init", "--trust-domain", trust_domain, "--dir", s(&dir)]);
        Self {
            _tmp: tmp,
            dir,
            trust_domain,
        }
    }

    pub fn path(&self) -> &str {
        s(&self.dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `palisade ca serve` on a free loopback port.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// `palisade ca serve` on a free loopback port, with `extra` flags.
    pub fn serve_with(&self, extra: &[&str]) -> Server {
        let mut args = vec!["ca", "serve", "--dir", self.path(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    pub fn bundle(&self) -> palisade_ca::TrustBundle {
        let td = palisade_ca::TrustDomain::new(self.trust_domain).expect("a valid trust domain");
        palisade_ca::TrustBundle::load(td, &self.file("bundle.pem")).expect("the bundle loads")
    }

    pub fn endpoint(&self, server: &Server) -> palisade_ca::client::CaEndpoint {
        palisade_ca::client::CaEndpoint::new(server.addr.clone(), self.bundle())
    }

    pub fn id(&self, ns: &str, sa: &str) -> palisade_ca::SpiffeId {
        palisade_ca::SpiffeId::parse(&format!("spiffe://{}/ns/{ns}/sa/{sa}", self.trust_domain)).expect("a valid ID")
    }

    /// `palisade ca token create` → the token.
    pub fn token(&self, id: &palisade_ca::SpiffeId) -> String {
        ok(&[
            "ca",
            "token",
            "create",
            "--spiffe-id",
            id.as_str(),
            "--dir",
            self.path(),
        ])
        .trim()
        .to_string()
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the `openssl` command is here (checks that need it are skipped, loudly, without it).
pub fn has_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: openssl is not installed; the openssl cross-checks did not run");
    }
    found
}

pub mod app;
pub mod client;
pub mod external;
pub mod kubernetes;
pub mod mesh;
pub mod push;
pub mod shop_cluster;
pub mod webhook;
