//! `palisade crds`: the CustomResourceDefinitions of group palisade.dev.

use anyhow::Context;

use crate::cli::{CrdsCommand, CrdsGenerate};
use crate::exit;

pub fn run(command: CrdsCommand) -> anyhow::Result<u8> {
    match command {
        CrdsCommand::Generate(a) => generate(&a),
    }
}

fn generate(a: &CrdsGenerate) -> anyhow::Result<u8> {
    match &a.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
            for path in palisade_crds::manifests::write(dir)? {
                println!("wrote {}", path.display());
            }
        }
        None => {
            let documents: Vec<String> = palisade_crds::manifests::render()?
                .into_iter()
                .map(|(_, text)| text)
                .collect();
            print!("{}", documents.join("---\n"));
        }
    }
    Ok(exit::OK)
}
