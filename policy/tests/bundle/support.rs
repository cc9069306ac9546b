//! Bundles in temporary directories, built from the shop example or from scratch.

use std::path::{Path, PathBuf};

use palisade_policy::Diagnostics;
use tempfile::TempDir;

/// `examples/shop`.
pub fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

/// A minimal valid bundle in a temporary directory, to be changed file by file.
pub struct TempBundle {
    pub dir: TempDir,
}

pub const MESH: &str = "trustDomain: shop.example\n";

pub const WORKLOADS: &str = "\
- spiffeId: spiffe://shop.example/ns/web/sa/frontend
  labels: { app: frontend }
- spiffeId: spiffe://shop.example/ns/payments/sa/payments
  labels: { pci: \"true\" }
";

pub const SERVICES: &str = "\
- namespace: payments
  name: payments
  hosts: [payments.shop]
  ports: [8080]
  servedBy: [spiffe://shop.example/ns/payments/sa/payments]
";

impl TempBundle {
    /// mesh.yaml, workloads.yaml and services.yaml of a tiny valid bundle.
    pub fn new() -> Self {
        let bundle = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        bundle
            .write("mesh.yaml", MESH)
            .write("workloads.yaml", WORKLOADS)
            .write("services.yaml", SERVICES)
    }

    /// A copy of the shop example.
    pub fn shop() -> Self {
        let bundle = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        copy(&shop(), bundle.dir.path());
        bundle
    }

    /// Writes (or overwrites) `relative` with `text`.
    pub fn write(self, relative: &str, text: &str) -> Self {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The diagnostics of loading it; panics when it loads.
    pub fn errors(&self) -> Diagnostics {
        match palisade_policy::load(self.path()) {
            Ok(_) => panic!("the bundle loaded, but it should not"),
            Err(errors) => errors,
        }
    }
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
