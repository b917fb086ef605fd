//! Every YAML example in the README and docs/ is a file eastwatch
//! accepts: baselines lint, configs load, inventories parse. Other YAML
//! (Kubernetes snippets) is named here, so a new example cannot slip by.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use eastwatch_policy::{baseline::validate, config};

use crate::identity::inventory::Inventory;

/// Each ```yaml block of `text`, with the line it starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((index + 2, String::new())),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_yaml_example_in_the_docs_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, block) in yaml_blocks(&text) {
            let at = format!("{}:{line}", doc.display());
            if block.contains("kind: Baseline") {
                let path = dir.path().join("baseline.yaml");
                std::fs::write(&path, &block).unwrap();
                validate::load(&path, SystemTime::now())
                    .unwrap_or_else(|e| panic!("{at}: baseline rejected: {e}"));
            } else if block.contains("kind: AgentConfig") {
                config::from_str(&block, &dir.path().join("config.yaml"))
                    .unwrap_or_else(|e| panic!("{at}: config rejected: {e}"));
            } else if block.contains("workloads:") {
                Inventory::parse(Path::new("inventory.yaml"), &block, "default")
                    .unwrap_or_else(|e| panic!("{at}: inventory rejected: {e}"));
            } else if block.starts_with("env:") {
                // A Kubernetes container's env, not an eastwatch file.
                continue;
            } else {
                panic!("{at}: a YAML example of no known kind:\n{block}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} examples found");
}
