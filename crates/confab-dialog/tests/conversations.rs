//! The shipped conversation scripts (`config/conversations/`) against the shipped
//! flows (`config/flows/`), run the way a session runs them. The same scripts run
//! against a real node over WebSocket in `crates/confab/tests/dialog.rs`.

use confab_dialog::flow::{PolicySet, SourceFile};
use confab_dialog::script::{Script, run_script};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.toml` below `dir`, with its path relative to `dir`.
fn toml_files(dir: &Path, prefix: &str, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            toml_files(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".toml") {
            out.push(SourceFile {
                path: format!("{prefix}{name}"),
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
}

fn shipped_flows() -> PolicySet {
    let mut files = Vec::new();
    toml_files(&workspace().join("config/flows"), "", &mut files);
    PolicySet::compile(&files).unwrap_or_else(|e| panic!("the shipped flows do not compile: {e}"))
}

#[test]
fn every_shipped_script_holds_against_the_shipped_flows() {
    let set = shipped_flows();
    let mut scripts = Vec::new();
    toml_files(&workspace().join("config/conversations"), "", &mut scripts);
    assert!(
        scripts.len() >= 8,
        "the scripts are missing: {}",
        scripts.len()
    );
    let failures: Vec<String> = scripts
        .iter()
        .filter_map(|file| {
            let script = Script::parse(&file.path, &file.text).unwrap();
            run_script(&script, &set)
                .err()
                .map(|e| format!("{}: {e}", file.path))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_script_that_expects_the_wrong_reply_fails_naming_the_turn() {
    let set = shipped_flows();
    let script = Script::parse(
        "wrong.toml",
        "uid = \"1\"\n[[turns]]\nsay = \"39码黑色有货吗\"\nintent = \"stock_query\"\nreply = \"没货\"\n",
    )
    .unwrap();
    let err = run_script(&script, &set).unwrap_err();
    assert!(
        err.contains("turn 1") && err.contains("does not match"),
        "{err}"
    );
    let bad = Script::parse("bad.toml", "uid = \"1\"\n[[turns]]\nsay = 3\n").unwrap_err();
    assert!(bad.starts_with("bad.toml:3:"), "{bad}");
}
