//! `palisade policy fmt`: the Cedar formatter over every policy file of a bundle.

use std::path::{Path, PathBuf};

/// What formatting did to one file.
#[derive(Debug)]
pub enum FileFormat {
    /// Already formatted.
    Unchanged(PathBuf),
    /// Formatted (written back unless checking).
    Changed(PathBuf),
    /// Could not be formatted (it does not parse).
    Failed(PathBuf, String),
}

/// Formats every `policies/**/*.cedar` of `dir`; with `check`, writes nothing.
pub fn format_bundle(dir: &Path, check: bool) -> std::io::Result<Vec<FileFormat>> {
    let mut files = Vec::new();
    collect(&dir.join("policies"), &mut files)?;
    files.sort();
    let config = cedar_policy_formatter::Config::default();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        match cedar_policy_formatter::policies_str_to_pretty(&text, &config) {
            Err(e) => out.push(FileFormat::Failed(file, format!("{e}"))),
            Ok(pretty) if pretty == text => out.push(FileFormat::Unchanged(file)),
            Ok(pretty) => {
                if !check {
                    std::fs::write(&file, pretty)?;
                }
                out.push(FileFormat::Changed(file));
            }
        }
    }
    Ok(out)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "cedar") {
            files.push(path);
        }
    }
    Ok(())
}
