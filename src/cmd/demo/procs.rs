//! The demo's child processes: every component is this same binary
//! (`std::env::current_exe()`) run with a subcommand, its output going to
//! `DIR/logs/NAME.log` rather than the terminal.
//!
//! [`Processes`] owns every long-running child: its `Drop` kills and reaps each
//! one, newest first (sidecars before the control plane before the CA), so an
//! error, a failed check or Ctrl-C (which drops the demo's future) all leave
//! nothing behind. Each child's pid is written to `DIR/pids` as it starts, for
//! anyone who wants to check.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a server may take to print "listening on".
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process did not do what the demo needs.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot find the palisade binary to start the components: {0}")]
    Exe(std::io::Error),
    #[error("cannot write {path}: {source}; is the demo directory writable?")]
    File { path: PathBuf, source: std::io::Error },
    #[error("cannot start `palisade {args}`: {source}")]
    Spawn { args: String, source: std::io::Error },
    #[error("{name} exited before it was listening; see {log}")]
    Exited { name: String, log: String },
    #[error("{name} did not start listening within {START_TIMEOUT:?}; see {log}")]
    Slow { name: String, log: String },
    #[error("`palisade {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
}

/// One finished command's output.
#[derive(Debug)]
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
}

/// The demo's running children; dropping it stops them all.
#[derive(Debug)]
pub struct Processes {
    exe: PathBuf,
    logs: PathBuf,
    pids: PathBuf,
    children: Vec<(String, Child)>,
}

impl Processes {
    /// Logs go to `logs/`, pids to the file `pids`.
    pub fn new(logs: &Path, pids: &Path) -> Result<Self, ProcessError> {
        let exe = std::env::current_exe().map_err(ProcessError::Exe)?;
        File::create(pids).map_err(|source| ProcessError::File {
            path: pids.to_owned(),
            source,
        })?;
        Ok(Self {
            exe,
            logs: logs.to_owned(),
            pids: pids.to_owned(),
            children: Vec::new(),
        })
    }

    /// The log file of `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn command(&self, args: &[String], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&self.exe);
        // Logs are files: no colour codes in them.
        command.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    /// Starts `palisade ARGS` as `name` and waits until it prints "listening on
    /// ADDR"; returns ADDR. Secrets go in `env`, never in `args` (other users can
    /// read a process's arguments).
    pub async fn server(&mut self, name: &str, args: &[String], env: &[(&str, &str)]) -> Result<String, ProcessError> {
        let log_path = self.log(name);
        let file_error = |source| ProcessError::File {
            path: log_path.clone(),
            source,
        };
        let log = File::create(&log_path).map_err(file_error)?;
        let stderr = log.try_clone().map_err(file_error)?;
        let mut child = self
            .command(args, env)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                args: args.join(" "),
                source,
            })?;
        let pid = child.id();
        let stdout = child.stdout.take();
        self.children.push((name.to_owned(), child));
        let mut pids = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.pids)
            .map_err(|source| ProcessError::File {
                path: self.pids.clone(),
                source,
            })?;
        let _ = writeln!(pids, "{pid} {name}");

        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || copy_until_listening(stdout, log, tx));
        }
        let shown = log_path.display().to_string();
        match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(_)) => Err(ProcessError::Exited {
                name: name.to_owned(),
                log: shown,
            }),
            Err(_) => Err(ProcessError::Slow {
                name: name.to_owned(),
                log: shown,
            }),
        }
    }

    /// Runs `palisade ARGS` to its end (on a blocking thread) and returns its output,
    /// whatever its exit code.
    pub async fn output(&self, args: &[String], env: &[(&str, &str)]) -> Result<Finished, ProcessError> {
        let mut command = self.command(args, env);
        let shown = args.join(" ");
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| ProcessError::Spawn {
                args: shown.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| ProcessError::Spawn { args: shown, source })?;
        Ok(Finished {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code(),
        })
    }

    /// Runs `palisade ARGS` and insists on exit 0; returns stdout.
    pub async fn ok(&self, args: &[String], env: &[(&str, &str)]) -> Result<String, ProcessError> {
        let out = self.output(args, env).await?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(ProcessError::Failed {
                args: args.join(" "),
                status: out.code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}")),
                stderr: out.stderr.trim().to_owned(),
            })
        }
    }

    /// How many children are running.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Kills and reaps every child, newest first.
    pub fn stop_all(&mut self) {
        while let Some((name, mut child)) = self.children.pop() {
            let _ = child.kill();
            if let Err(e) = child.wait() {
                eprintln!("warning: could not reap {name} (pid {}): {e}", child.id());
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Copies a child's stdout into its log, sending the address of its first
/// "listening on ADDR" line.
fn copy_until_listening(stdout: std::process::ChildStdout, mut log: File, tx: tokio::sync::oneshot::Sender<String>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let _ = writeln!(log, "{line}");
        if let Some(addr) = line.split("listening on ").nth(1) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    }
}
