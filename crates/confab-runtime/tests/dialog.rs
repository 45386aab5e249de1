//! The node's dialog registry on a real flows dir: a reload that would strand
//! users is refused and the old set keeps serving.

use confab_runtime::dialog::{Dialog, DialogConfig, DialogError};
use std::path::Path;
use std::time::Duration;

fn write(dir: &Path, version: &str, greeting: &str) {
    std::fs::create_dir_all(dir.join(version)).unwrap();
    std::fs::write(
        dir.join(version).join("common.toml"),
        format!("[[intents]]\nname = \"greet\"\nkeywords = [\"hi\"]\nreply = \"{greeting}\"\n"),
    )
    .unwrap();
}

#[test]
fn a_reload_without_the_version_users_are_on_is_refused_and_the_old_set_serves() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "v1", "hello from v1");
    let dialog = Dialog::open(DialogConfig {
        flows_dir: dir.path().to_owned(),
        stable_version: "v1".into(),
        reload_poll: Duration::from_secs(3600),
    })
    .unwrap();
    // v1's folder replaced by v2's: everyone is still on v1.
    std::fs::remove_dir_all(dir.path().join("v1")).unwrap();
    write(dir.path(), "v2", "hello from v2");
    let refused = dialog.reload().unwrap_err();
    assert!(
        matches!(&refused, DialogError::Flows(e) if e.message.contains("version v1 serves users")),
        "{refused}"
    );
    let status = dialog.status();
    assert_eq!(status.versions.len(), 1, "the old set still serves");
    assert_eq!(status.versions[0].version, "v1");
    assert!(status.last_error.is_some());
    // Restored: the reload goes through and both versions load.
    write(dir.path(), "v1", "hello from v1");
    dialog.reload().unwrap();
    assert_eq!(dialog.status().versions.len(), 2);
    assert!(dialog.status().last_error.is_none());
}
