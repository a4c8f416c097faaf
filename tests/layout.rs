//! The crate's layout, checked so that it cannot drift: every top-level module imports only
//! modules listed above it in `src/lib.rs`'s map (so the module graph has no cycles), the map
//! names every module, and no source file under `src/` grows far past 800 lines.

use std::fs;
use std::path::{Path, PathBuf};

/// The line count past which a file must be split; "about 800" leaves a little room.
const MAX_LINES: usize = 850;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).expect("read a source directory");
    for entry in entries {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules of `src/lib.rs`'s map, in its order (the `//! - [`name`]:` lines).
fn map_order() -> Vec<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The `crate::NAME` paths a file's code (not its comments) names.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn modules_import_only_modules_above_them_in_the_map() {
    let order = map_order();
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let mut sorted_order = order.clone();
    sorted_order.sort();
    assert_eq!(sorted_order, declared, "the map names every module, once");
    let mut upward = Vec::new();
    for (rank, module) in order.iter().enumerate() {
        let mut files = Vec::new();
        let dir = src().join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src().join(format!("{module}.rs")));
        }
        for file in files {
            let text = fs::read_to_string(&file).expect("read a source file");
            for dep in crate_paths(&text) {
                if let Some(dep_rank) = order.iter().position(|m| *m == dep)
                    && dep_rank > rank
                {
                    upward.push(format!("{} uses crate::{dep}", file.display()));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the map's order: {upward:#?}"
    );
}

#[test]
fn no_source_file_is_far_past_800_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    assert!(
        files.len() > 50,
        "found the sources ({} files)",
        files.len()
    );
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f)
                .expect("read a source file")
                .lines()
                .count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these: {long:#?}");
}

#[test]
fn the_import_check_sees_imports_and_skips_comments() {
    let text =
        "use crate::storage::VPath;\n// crate::actors in a comment\n  let x = crate::quota::X;";
    assert_eq!(crate_paths(text), ["storage", "quota"]);
}
