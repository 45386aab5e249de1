//! Conversation scripts played by simulated users (`[workload] conversations`
//! and `flows`): the scripts testers write for `cargo test`
//! (`confab_dialog::script`), and the flows the nodes run instead of the
//! hand-written shoe shop. User `i` plays script `i % n` (scripts sorted by file
//! name), one turn per message; every answer it gets is checked against that
//! turn with [`check_turn`], duplicates included.

use confab_core::Uid;
use confab_core::session::{ActionOutcome, PendingAction};
use confab_dialog::actions::{idempotency_key, run_builtin};
use confab_dialog::flow::{ActionSpec, PolicySet, PolicyVersion, SourceFile};
use confab_dialog::script::{Heard, Script, ScriptTurn, check_turn};
use confab_dialog::{Pipeline, Policy};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Script files read from a conversations dir, at most.
pub const SCRIPT_FILES_MAX: usize = 1_024;
/// Flow files read from a flows dir, at most (as the runtime reads them).
const FLOW_FILES_MAX: usize = 1_024;

/// One script file.
#[derive(Debug)]
pub struct ScriptFile {
    /// Its file name (`lottery.toml`): how violations name it.
    pub name: String,
    /// The script.
    pub script: Script,
}

/// One policy version the scripts run against.
struct Version {
    /// The flows' input filter and this version.
    pipeline: Pipeline,
    /// The version itself, for its actions.
    policy: Arc<PolicyVersion>,
}

/// The scripts and the compiled flows of a conversations scenario.
pub struct Conversations {
    scripts: Vec<ScriptFile>,
    /// By name: every version a script names.
    versions: BTreeMap<String, Version>,
    /// Where the scripts were read.
    pub scripts_dir: PathBuf,
    /// Where the flows were read.
    pub flows_dir: PathBuf,
}

impl fmt::Debug for Conversations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversations")
            .field("scripts_dir", &self.scripts_dir)
            .field("flows_dir", &self.flows_dir)
            .field("scripts", &self.scripts.len())
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The workspace root: where relative `conversations` and `flows` paths are
/// read from, whatever the current dir (as scenario names are looked up in the
/// checkout confab-sim was built from).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A scenario's path: absolute as given, relative from [`workspace_root`].
pub fn resolve(path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace_root().join(path)
    }
}

impl Conversations {
    /// Reads every `*.toml` script in `scripts_dir` and compiles the flows dir
    /// (`filter.toml` and `VERSION/NAME.toml`, as a node reads it). Every
    /// script's version must be among the flows'.
    pub fn load(scripts_dir: &Path, flows_dir: &Path) -> Result<Self, String> {
        let scripts = read_scripts(scripts_dir)?;
        let set = compile_flows(flows_dir)?;
        let mut versions = BTreeMap::new();
        for file in &scripts {
            let name = &file.script.version;
            if versions.contains_key(name) {
                continue;
            }
            let Some(policy) = set.version(name) else {
                let known: Vec<&str> = set.versions().keys().map(String::as_str).collect();
                return Err(format!(
                    "{}: policy version {name} is not in {} (it has {})",
                    scripts_dir.join(&file.name).display(),
                    flows_dir.display(),
                    known.join(", ")
                ));
            };
            let pipeline = Pipeline::new(
                Arc::clone(set.filter()) as _,
                Arc::clone(policy) as Arc<dyn Policy>,
            );
            let version = Version {
                pipeline,
                policy: Arc::clone(policy),
            };
            versions.insert(name.clone(), version);
        }
        Ok(Self {
            scripts,
            versions,
            scripts_dir: scripts_dir.to_path_buf(),
            flows_dir: flows_dir.to_path_buf(),
        })
    }

    /// The scripts, sorted by file name.
    pub fn scripts(&self) -> &[ScriptFile] {
        &self.scripts
    }

    /// The script session `s` plays.
    pub fn script_of(&self, s: u32) -> &ScriptFile {
        &self.scripts[s as usize % self.scripts.len()]
    }

    /// The turn message number `msg` (from 1) of session `s` says.
    pub fn turn(&self, s: u32, msg: u32) -> Option<&ScriptTurn> {
        let index = usize::try_from(msg).ok()?.checked_sub(1)?;
        self.script_of(s).script.turns.get(index)
    }

    /// Whether session `s` has said every turn of its script after `msg` messages.
    pub fn finished(&self, s: u32, msg: u32) -> bool {
        msg as usize >= self.script_of(s).script.turns.len()
    }

    /// The pipeline session `s` runs: the flows' filter and its script's version.
    pub fn pipeline(&self, s: u32) -> &Pipeline {
        &self.versions[&self.script_of(s).script.version].pipeline
    }

    /// The clock of session `s`'s turns at a node's local time `local_ms`: its
    /// script's `start_ms` on, so that daily limits and relative dates mean what
    /// they mean in the pure run.
    pub fn turn_ms(&self, s: u32, local_ms: u64) -> u64 {
        self.script_of(s).script.start_ms + local_ms
    }

    /// Runs session `s`'s pending action at once: a builtin under its
    /// idempotency key; an `http` action cannot run here and fails.
    pub fn run_action(&self, s: u32, uid: &Uid, pending: &PendingAction) -> ActionOutcome {
        let version = &self.versions[&self.script_of(s).script.version];
        run_action(version.policy.actions(), uid, pending)
    }

    /// Checks what session `s` heard for message `msg` against its turn; the
    /// error names the script, the turn and what differs.
    pub fn check(&self, s: u32, msg: u32, heard: &Heard) -> Result<(), String> {
        let file = self.script_of(s);
        let Some(turn) = self.turn(s, msg) else {
            return Err(format!(
                "u{s}: {}: m{msg} is past the script's {} turns",
                file.name,
                file.script.turns.len()
            ));
        };
        check_turn(msg as usize - 1, turn, heard).map_err(|e| format!("u{s}: {}: {e}", file.name))
    }
}

/// Runs an action the way the simulator can: a builtin at once, under the
/// action's idempotency key; anything else (an `http` action, an action the
/// policy's version does not declare) fails, as it would past its retries.
pub fn run_action(
    actions: &BTreeMap<String, ActionSpec>,
    uid: &Uid,
    pending: &PendingAction,
) -> ActionOutcome {
    let failed = |reason: String| ActionOutcome::Failed {
        reason,
        attempts: 1,
    };
    match actions.get(&pending.action) {
        Some(ActionSpec::Builtin { builtin }) => {
            let key = idempotency_key(uid.as_str(), pending.requested.0);
            run_builtin(builtin, &key, &pending.args).map_or_else(failed, ActionOutcome::Succeeded)
        }
        Some(ActionSpec::Http { .. }) => failed(format!(
            "{} is an http action: the simulator does not call it",
            pending.action
        )),
        None => failed(format!("no action {} is declared", pending.action)),
    }
}

/// The `*.toml` files of a dir (not its subdirs, not dotfiles), sorted by name.
fn toml_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            (name.ends_with(".toml") && !name.starts_with('.')).then_some((name, p))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_scripts(dir: &Path) -> Result<Vec<ScriptFile>, String> {
    let files = toml_files(dir)?;
    if files.is_empty() {
        return Err(format!("{}: no *.toml script in it", dir.display()));
    }
    if files.len() > SCRIPT_FILES_MAX {
        return Err(format!(
            "{}: more than {SCRIPT_FILES_MAX} scripts",
            dir.display()
        ));
    }
    files
        .into_iter()
        .map(|(name, path)| {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let script = Script::parse(&path.display().to_string(), &text)?;
            Ok(ScriptFile { name, script })
        })
        .collect()
}

/// Compiles a flows dir read as a node reads it: `filter.toml` at the top and
/// `VERSION/NAME.toml` below; other files are ignored.
fn compile_flows(dir: &Path) -> Result<PolicySet, String> {
    let mut files = Vec::new();
    for (name, path) in toml_files(dir)? {
        if name == "filter.toml" {
            files.push((name, path));
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut versions: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    versions.sort();
    for version in versions {
        let Some(folder) = version.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if folder.starts_with('.') {
            continue;
        }
        for (name, path) in toml_files(&version)? {
            files.push((format!("{folder}/{name}"), path));
        }
    }
    if files.len() > FLOW_FILES_MAX {
        return Err(format!(
            "{}: more than {FLOW_FILES_MAX} flow files",
            dir.display()
        ));
    }
    let sources = files
        .into_iter()
        .map(|(relative, path)| {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(SourceFile {
                path: relative,
                text,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    PolicySet::compile(&sources).map_err(|e| format!("{}/{e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Conversations {
        Conversations::load(&resolve("config/conversations"), &resolve("config/flows"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_shipped_scripts_and_flows_load_sorted_by_file_name() {
        let c = shipped();
        let names: Vec<&str> = c.scripts().iter().map(|f| f.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(names.len() >= 8, "{names:?}");
        assert_eq!(c.script_of(0).name, names[0]);
        assert_eq!(c.script_of(names.len() as u32 + 1).name, names[1]);
        assert_eq!(
            c.turn(0, 1).map(|t| t.say.as_str()),
            Some(c.script_of(0).script.turns[0].say.as_str())
        );
        assert!(c.turn(0, 0).is_none());
    }

    #[test]
    fn a_wrong_heard_reply_names_the_script_and_the_turn() {
        let c = shipped();
        let s = c
            .scripts()
            .iter()
            .position(|f| f.name == "filter.toml")
            .unwrap() as u32;
        assert_eq!(c.check(s, 1, &Heard::Rejected), Ok(()));
        let heard = Heard::Reply {
            intent: "greet".into(),
            text: "您好".into(),
            slots: Default::default(),
        };
        let err = c.check(s, 1, &heard).unwrap_err();
        assert!(
            err.starts_with(&format!("u{s}: filter.toml: turn 1 ")),
            "{err}"
        );
    }

    #[test]
    fn an_http_action_fails_and_a_builtin_runs_under_its_key() {
        let uid = Uid::new("u1").unwrap();
        let pending = |action: &str| PendingAction {
            requested: confab_core::Seq(9),
            action: action.into(),
            args: Default::default(),
            policy: "v1".into(),
            message_id: confab_core::MessageId::new("m1").unwrap(),
        };
        let actions: BTreeMap<String, ActionSpec> = [
            (
                "draw".to_owned(),
                ActionSpec::Builtin {
                    builtin: "lottery_draw".into(),
                },
            ),
            (
                "post".to_owned(),
                ActionSpec::Http {
                    url: "http://x.invalid/".into(),
                    timeout_ms: 10,
                },
            ),
        ]
        .into();
        let drawn = run_action(&actions, &uid, &pending("draw"));
        let expected = run_builtin("lottery_draw", "u1:9", &Default::default()).unwrap();
        assert_eq!(drawn, ActionOutcome::Succeeded(expected));
        assert!(matches!(
            run_action(&actions, &uid, &pending("post")),
            ActionOutcome::Failed { reason, .. } if reason.contains("http")
        ));
        assert!(matches!(
            run_action(&actions, &uid, &pending("nope")),
            ActionOutcome::Failed { .. }
        ));
    }

    #[test]
    fn a_missing_dir_or_version_is_named() {
        let err = Conversations::load(&resolve("config/no-such-dir"), &resolve("config/flows"))
            .unwrap_err();
        assert!(err.contains("no-such-dir"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "uid = \"1\"\nversion = \"v9\"\n[[turns]]\nsay = \"hi\"\n",
        )
        .unwrap();
        let err = Conversations::load(dir.path(), &resolve("config/flows")).unwrap_err();
        assert!(err.contains("v9") && err.contains("a.toml"), "{err}");
    }
}
