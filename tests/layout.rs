//! The layout `src/lib.rs` promises: its table of layers, top to bottom, and no module using one
//! above it; and source files short enough to read in one sitting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The layer of each top-level module, 0 at the top, read from the table in `src/lib.rs`'s
/// doc (rows `//! | layer | [`a`], `b` | ... |`: a doc link, or a code span for a module hidden
/// from the docs).
fn layers() -> HashMap<String, usize> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let mut layers = HashMap::new();
    let rows = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter(|row| {
            row.split(" | ")
                .nth(1)
                .is_some_and(|m| m.starts_with(['`', '[']))
        });
    for (layer, row) in rows.enumerate() {
        let modules = row.split(" | ").nth(1).expect("a modules column");
        // Each entry is a doc link, [`name`] or [`name`](mod@name), or a code span `name`.
        for entry in modules.split(", ") {
            let name = entry.split('`').nth(1).expect("a module name in backticks");
            layers.insert(name.to_string(), layer);
        }
    }
    layers
}

/// The top-level module a file belongs to: `src/train/step.rs` → `train`.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib").then(|| name.to_string())
}

/// The top-level modules a file names in code (`crate::x` outside comments).
fn uses(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` and re-exported items at the root (`crate::Error`) are not modules.
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.push((n + 1, name));
            }
        }
        // `use crate::{model, loss, ...}` lists modules inside braces.
        if let Some(i) = code.find("crate::{") {
            let inner = &code[i + "crate::{".len()..];
            let inner = inner.split('}').next().unwrap_or("");
            for name in inner.split(',').map(str::trim) {
                if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    let name = name.split("::").next().unwrap_or(name);
                    found.push((n + 1, name.to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn every_module_is_in_the_layer_table() {
    let layers = layers();
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(!declared.is_empty());
    for m in &declared {
        assert!(
            layers.contains_key(*m),
            "module `{m}` is missing from the layer table in src/lib.rs"
        );
    }
    for m in layers.keys() {
        assert!(
            declared.contains(&m.as_str()),
            "the layer table names `{m}`, which lib.rs does not declare"
        );
    }
}

#[test]
fn no_module_uses_one_above_it() {
    let layers = layers();
    let mut wrong = Vec::new();
    for file in rust_files(&src_dir()) {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let own = layers[&module];
        for (line, used) in uses(&file) {
            let Some(&layer) = layers.get(&used) else {
                continue;
            };
            if layer < own {
                wrong.push(format!(
                    "{}:{line}: `{module}` uses `{used}`, a layer above it",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn source_files_stay_short() {
    const MAX_LINES: usize = 600;
    let long: Vec<String> = rust_files(&src_dir())
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by what they do):\n{}",
        long.join("\n")
    );
}
