//! The node's dialog: which policy versions are loaded, which one serves each
//! uid, and how both change without a restart.
//!
//! - **Hot reload.** The flows dir is read and compiled whole; a good set
//!   replaces the old one atomically (one `Arc` swap: a turn uses the set it
//!   started with), a bad one is refused with its file and line and the old one
//!   keeps serving. A reload happens when the dir's files change (polled every
//!   `reload_poll`), on `confabctl policy reload`, and when another node of the
//!   cluster was asked to reload (a generation counter in the store's settings).
//! - **Canary.** The split ([`Rollout`]) lives in the store's settings, changed
//!   by compare-and-set, so every node that shares the store serves the same
//!   split; a node adopts a newer revision within one poll.
//!
//! [`Dialog::fixed`] serves one policy that never changes (tests, benches).

use crate::now_ms;
use confab_dialog::canary::{Rollout, RolloutError, check_loaded};
use confab_dialog::flow::{ActionSpec, FlowError, PolicySet, SourceFile};
use confab_dialog::{InputFilter, Pipeline, Policy};
use confab_store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{info, warn};

/// The store setting that holds the canary split.
pub const ROLLOUT_SETTING: &str = "dialog.rollout";
/// The store setting whose revision asks every node to reload its flows.
pub const RELOAD_SETTING: &str = "dialog.reload";
/// Compare-and-set attempts on a setting before giving up.
const SETTING_CAS_ATTEMPTS: u32 = 8;

/// Where the flows come from and how often they are checked.
#[derive(Debug, Clone)]
pub struct DialogConfig {
    /// The flows dir: `filter.toml` and one folder per version.
    pub flows_dir: PathBuf,
    /// The stable version until the store says otherwise.
    pub stable_version: String,
    /// How often the dir and the store's settings are checked.
    pub reload_poll: Duration,
}

/// One loaded set of versions.
pub struct Loaded {
    /// Each version's policy, by name.
    pub policies: BTreeMap<String, Arc<dyn Policy>>,
    /// Each version's actions, by version then action name.
    pub actions: BTreeMap<String, Arc<BTreeMap<String, ActionSpec>>>,
    /// Each version's flows and digest, for status.
    pub info: Vec<confab_proto::admin::PolicyVersionInfo>,
    /// The input filter.
    pub filter: Arc<dyn InputFilter>,
    /// Slots masked wherever they leave a session, beyond the fixed names:
    /// every version's phone and address slots.
    pub sensitive: Arc<std::collections::BTreeSet<String>>,
    /// When it was loaded, ms since the Unix epoch.
    pub loaded_ms: u64,
    /// The dir's fingerprint when read (names, sizes, mtimes).
    fingerprint: String,
}

impl Loaded {
    fn from_set(set: &PolicySet, fingerprint: String) -> Self {
        let mut policies = BTreeMap::new();
        let mut actions = BTreeMap::new();
        let mut info = Vec::new();
        let mut sensitive = std::collections::BTreeSet::new();
        for (name, version) in set.versions() {
            sensitive.extend(version.sensitive_slots());
            policies.insert(name.clone(), Arc::clone(version) as Arc<dyn Policy>);
            actions.insert(name.clone(), Arc::new(version.actions().clone()));
            info.push(confab_proto::admin::PolicyVersionInfo {
                version: name.clone(),
                flows: version.flow_names(),
                digest: version.digest().to_owned(),
            });
        }
        Self {
            policies,
            actions,
            info,
            filter: Arc::clone(set.filter()) as Arc<dyn InputFilter>,
            sensitive: Arc::new(sensitive),
            loaded_ms: now_ms(),
            fingerprint,
        }
    }
}

/// The policy that serves one turn, with what it needs.
#[derive(Clone)]
pub struct Chosen {
    /// Filter and policy.
    pub pipeline: Pipeline,
    /// The version's actions.
    pub actions: Arc<BTreeMap<String, ActionSpec>>,
}

struct Current {
    loaded: Arc<Loaded>,
    rollout: Rollout,
    /// The store revision of `rollout` (0: never written).
    rollout_revision: u64,
    /// The reload generation seen.
    reload_generation: u64,
    last_error: Option<FlowError>,
    /// The fingerprint of the files last refused.
    refused_fingerprint: Option<String>,
}

/// The node's dialog. Cheap to clone.
#[derive(Clone)]
pub struct Dialog {
    current: Arc<RwLock<Current>>,
    /// Held while a reload reads and compiles.
    reloading: Arc<std::sync::Mutex<()>>,
    /// `None` for a fixed policy.
    source: Option<Arc<DialogConfig>>,
}

/// Why a dialog request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DialogError {
    /// The flows were refused: the old ones keep serving.
    #[error("{0}")]
    Flows(#[from] FlowError),
    /// A bad canary split.
    #[error("{0}")]
    Rollout(#[from] RolloutError),
    /// The store did not answer.
    #[error("the store failed: {0}; nothing changed, retry")]
    Store(String),
    /// Another writer kept winning.
    #[error("the split kept changing under this request; retry")]
    Contended,
    /// A fixed policy cannot change.
    #[error("this node serves a fixed policy; it cannot reload or split")]
    Fixed,
}

impl Dialog {
    /// One policy for every uid, never reloaded.
    pub fn fixed(pipeline: &Pipeline) -> Self {
        let policy = Arc::clone(pipeline.policy());
        let version = policy.version().to_owned();
        let loaded = Loaded {
            policies: [(version.clone(), policy)].into(),
            actions: [(version.clone(), Arc::default())].into(),
            info: vec![confab_proto::admin::PolicyVersionInfo {
                version: version.clone(),
                flows: Vec::new(),
                digest: String::new(),
            }],
            filter: Arc::clone(pipeline.filter()),
            sensitive: Arc::default(),
            loaded_ms: now_ms(),
            fingerprint: String::new(),
        };
        Self {
            current: Arc::new(RwLock::new(Current {
                loaded: Arc::new(loaded),
                rollout: Rollout::stable(version),
                rollout_revision: 0,
                reload_generation: 0,
                last_error: None,
                refused_fingerprint: None,
            })),
            reloading: Arc::default(),
            source: None,
        }
    }

    /// Loads the flows dir; a bad dir is an error (nothing to serve yet).
    pub fn open(config: DialogConfig) -> Result<Self, FlowError> {
        let fingerprint = fingerprint(&config.flows_dir)?;
        let files = read_flows_dir(&config.flows_dir)?;
        let set = PolicySet::compile(&files)?;
        let loaded = Loaded::from_set(&set, fingerprint);
        if !loaded.policies.contains_key(&config.stable_version) {
            let names: Vec<&str> = loaded.policies.keys().map(String::as_str).collect();
            return Err(FlowError {
                file: config.flows_dir.display().to_string(),
                line: None,
                column: None,
                message: format!(
                    "the stable version {} is not in the flows dir (found: {}); set dialog.stable_version",
                    config.stable_version,
                    names.join(", ")
                ),
            });
        }
        info!(
            flows_dir = %config.flows_dir.display(),
            versions = loaded.policies.len(),
            "flows loaded"
        );
        Ok(Self {
            current: Arc::new(RwLock::new(Current {
                loaded: Arc::new(loaded),
                rollout: Rollout::stable(config.stable_version.clone()),
                rollout_revision: 0,
                reload_generation: 0,
                last_error: None,
                refused_fingerprint: None,
            })),
            reloading: Arc::default(),
            source: Some(Arc::new(config)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The policy for `uid`, or for `version` when given and loaded (a turn
    /// finishing an action keeps the version that started it).
    pub fn choose(&self, uid: &str, version: Option<&str>) -> Chosen {
        let current = self.read();
        let loaded = &current.loaded;
        let wanted = version
            .filter(|v| loaded.policies.contains_key(*v))
            .unwrap_or_else(|| current.rollout.version_for(uid));
        // A split naming a version since removed serves the stable one, or any.
        let (name, policy) = loaded
            .policies
            .get_key_value(wanted)
            .or_else(|| loaded.policies.get_key_value(&current.rollout.stable))
            .or_else(|| loaded.policies.iter().next())
            .expect("a loaded set has a version");
        Chosen {
            pipeline: Pipeline::new(Arc::clone(&loaded.filter), Arc::clone(policy)),
            actions: loaded.actions.get(name).cloned().unwrap_or_default(),
        }
    }

    /// Slots masked wherever they leave a session, beyond the fixed names.
    pub fn sensitive(&self) -> Arc<std::collections::BTreeSet<String>> {
        Arc::clone(&self.read().loaded.sensitive)
    }

    /// `slots` as they may leave a session: every sensitive value masked.
    pub fn masked(&self, slots: &confab_core::session::Slots) -> confab_core::session::Slots {
        confab_dialog::masked_with(slots, &self.read().loaded.sensitive)
    }

    /// The policy status for the admin API.
    pub fn status(&self) -> confab_proto::admin::PolicyStatus {
        let current = self.read();
        confab_proto::admin::PolicyStatus {
            flows_dir: self
                .source
                .as_ref()
                .map(|s| s.flows_dir.display().to_string())
                .unwrap_or_default(),
            versions: current.loaded.info.clone(),
            canary: canary_status(&current),
            loaded_ms: current.loaded.loaded_ms,
            last_error: current.last_error.as_ref().map(error_body),
        }
    }

    /// The canary split in force.
    pub fn canary(&self) -> confab_proto::admin::CanaryStatus {
        canary_status(&self.read())
    }

    /// Reads and compiles the flows dir now. On success the new set serves
    /// from the next turn; on failure the old one keeps serving and the error
    /// is kept for status until a reload succeeds.
    pub fn reload(&self) -> Result<(), DialogError> {
        let source = self.source.as_ref().ok_or(DialogError::Fixed)?;
        // One reload at a time: an older compile never replaces a newer one.
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        // Taken before the files are read: a file changed while they are read
        // makes the next poll see a difference and read them again.
        let before = fingerprint(&source.flows_dir).unwrap_or_default();
        let compiled = read_flows_dir(&source.flows_dir)
            .and_then(|files| PolicySet::compile(&files))
            .and_then(|set| {
                let rollout = self.read().rollout.clone();
                for version in std::iter::once(&rollout.stable).chain(rollout.canary.as_ref()) {
                    if set.version(version).is_none() {
                        return Err(FlowError {
                            file: version.clone(),
                            line: None,
                            column: None,
                            message: format!(
                                "version {version} serves users (see canary status) but its folder is gone; \
                                 restore it, or move users off it first (canary rollback / promote)"
                            ),
                        });
                    }
                }
                Ok(set)
            });
        let mut current = self.write();
        match compiled {
            Ok(set) => {
                let loaded = Loaded::from_set(&set, before);
                info!(versions = loaded.policies.len(), "flows reloaded");
                metrics::counter!("confab_policy_reloads_total", "result" => "ok").increment(1);
                current.loaded = Arc::new(loaded);
                current.last_error = None;
                current.refused_fingerprint = None;
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "flows refused; the previous policy keeps serving");
                metrics::counter!("confab_policy_reloads_total", "result" => "refused")
                    .increment(1);
                // Remember what was refused, so that polling does not retry
                // the same bad files every tick.
                current.refused_fingerprint = Some(before);
                current.last_error = Some(e.clone());
                Err(DialogError::Flows(e))
            }
        }
    }

    /// Reloads here and asks every node sharing the store to reload too.
    pub async fn reload_everywhere(&self, store: &dyn Store) -> Result<(), DialogError> {
        self.reload()?;
        let generation = bump_setting(store, RELOAD_SETTING, |_| Ok(String::new())).await?;
        self.write().reload_generation = generation;
        Ok(())
    }

    /// Sends the users of `tails` to `version`, cluster-wide.
    pub async fn set_canary(
        &self,
        store: &dyn Store,
        version: &str,
        tails: &[u8],
    ) -> Result<confab_proto::admin::CanaryStatus, DialogError> {
        self.change_rollout(store, |rollout, loaded| {
            rollout.with_canary(version, tails, loaded.policies.keys())
        })
        .await
    }

    /// Every user back on the stable version, cluster-wide.
    pub async fn rollback(
        &self,
        store: &dyn Store,
    ) -> Result<confab_proto::admin::CanaryStatus, DialogError> {
        self.change_rollout(store, |rollout, _| Ok(rollout.rolled_back()))
            .await
    }

    /// The canary becomes the stable version for everyone, cluster-wide.
    pub async fn promote(
        &self,
        store: &dyn Store,
    ) -> Result<confab_proto::admin::CanaryStatus, DialogError> {
        self.change_rollout(store, |rollout, _| {
            rollout.promoted().ok_or(RolloutError::NoCanary)
        })
        .await
    }

    async fn change_rollout(
        &self,
        store: &dyn Store,
        change: impl Fn(&Rollout, &Loaded) -> Result<Rollout, RolloutError>,
    ) -> Result<confab_proto::admin::CanaryStatus, DialogError> {
        if self.source.is_none() {
            return Err(DialogError::Fixed);
        }
        let loaded = Arc::clone(&self.read().loaded);
        let fallback = self.read().rollout.clone();
        let mut adopted = None;
        let revision = bump_setting(store, ROLLOUT_SETTING, |stored| {
            let base = match stored {
                Some(body) => serde_json::from_str(body).unwrap_or_else(|_| fallback.clone()),
                None => fallback.clone(),
            };
            let next = change(&base, &loaded)?;
            if let Some(canary) = &next.canary {
                check_loaded(canary, loaded.policies.keys())?;
            }
            check_loaded(&next.stable, loaded.policies.keys())?;
            let body = serde_json::to_string(&next).expect("a rollout serializes");
            adopted = Some(next);
            Ok(body)
        })
        .await?;
        let mut current = self.write();
        if let Some(rollout) = adopted
            && revision > current.rollout_revision
        {
            info!(revision, ?rollout, "canary split changed");
            current.rollout = rollout;
            current.rollout_revision = revision;
        }
        Ok(canary_status(&current))
    }

    /// One poll: adopts a newer split, reloads when asked by another node or
    /// when the files changed. Errors are logged; the next poll tries again.
    pub async fn poll(&self, store: &dyn Store) {
        match store.setting(ROLLOUT_SETTING).await {
            Ok(Some(setting)) if setting.revision > self.read().rollout_revision => {
                match serde_json::from_str::<Rollout>(&setting.body) {
                    Ok(rollout) => {
                        info!(
                            revision = setting.revision,
                            ?rollout,
                            "canary split adopted"
                        );
                        let mut current = self.write();
                        current.rollout = rollout;
                        current.rollout_revision = setting.revision;
                    }
                    Err(e) => warn!(error = %e, "the stored canary split does not parse"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the canary split"),
        }
        let Some(source) = &self.source else {
            return;
        };
        let mut reload = false;
        match store.setting(RELOAD_SETTING).await {
            Ok(Some(setting)) if setting.revision > self.read().reload_generation => {
                self.write().reload_generation = setting.revision;
                reload = true;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the reload generation"),
        }
        let now = fingerprint(&source.flows_dir).ok();
        if let Some(fp) = &now {
            // The files are back to what serves (a broken file was deleted or
            // undone): the refusal no longer describes the dir.
            let mut current = self.write();
            if *fp == current.loaded.fingerprint && current.last_error.is_some() {
                info!("the refused flow files are gone; the loaded policy matches the dir again");
                current.last_error = None;
                current.refused_fingerprint = None;
            }
        }
        let changed = now.is_some_and(|fp| {
            let current = self.read();
            fp != current.loaded.fingerprint
                && current.refused_fingerprint.as_deref() != Some(fp.as_str())
        });
        if reload || changed {
            // A refusal is logged and kept for status by `reload` itself.
            let _ = self.reload();
        }
    }

    /// Polls until the process ends.
    pub fn spawn_polling(&self, store: Arc<dyn Store>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.source.as_ref()?.reload_poll;
        let dialog = self.clone();
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                dialog.poll(store.as_ref()).await;
            }
        }))
    }
}

fn canary_status(current: &Current) -> confab_proto::admin::CanaryStatus {
    let rollout = &current.rollout;
    confab_proto::admin::CanaryStatus {
        stable: rollout.stable.clone(),
        canary: rollout.canary.clone(),
        tails: rollout.tails.iter().copied().collect(),
        canary_percent: rollout.canary_percent(),
        revision: current.rollout_revision,
    }
}

/// The admin API's view of a flow error.
pub fn error_body(e: &FlowError) -> confab_proto::admin::PolicyErrorBody {
    confab_proto::admin::PolicyErrorBody {
        file: e.file.clone(),
        line: e.line,
        column: e.column,
        message: e.message.clone(),
    }
}

/// Writes a setting by compare-and-set: `next` computes the body from the
/// stored one; returns the new revision.
async fn bump_setting(
    store: &dyn Store,
    key: &str,
    mut next: impl FnMut(Option<&str>) -> Result<String, RolloutError>,
) -> Result<u64, DialogError> {
    let store_err = |e: confab_store::StoreError| DialogError::Store(e.to_string());
    for _ in 0..SETTING_CAS_ATTEMPTS {
        let stored = store.setting(key).await.map_err(store_err)?;
        let (expected, body) = match &stored {
            Some(s) => (s.revision, Some(s.body.as_str())),
            None => (0, None),
        };
        let body = next(body)?;
        if store
            .put_setting(key, expected, &body)
            .await
            .map_err(store_err)?
        {
            return Ok(expected + 1);
        }
    }
    Err(DialogError::Contended)
}

/// Flow files in a dir, at most.
const FLOWS_DIR_FILES_MAX: usize = 1024;

/// Reads `filter.toml` and every `VERSION/NAME.toml`, sorted. Other files are
/// ignored (editors leave backups).
pub fn read_flows_dir(dir: &Path) -> Result<Vec<SourceFile>, FlowError> {
    let mut files = Vec::new();
    for (relative, path) in flow_paths(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|e| FlowError {
            file: relative.clone(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        files.push(SourceFile {
            path: relative,
            text,
        });
    }
    Ok(files)
}

fn flow_paths(dir: &Path) -> Result<Vec<(String, PathBuf)>, FlowError> {
    let unreadable = |e: std::io::Error| FlowError {
        file: dir.display().to_string(),
        line: None,
        column: None,
        message: format!("cannot read the flows dir: {e}"),
    };
    let mut out = Vec::new();
    let mut top: Vec<_> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    top.sort();
    for path in top {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            let mut inner: Vec<_> = std::fs::read_dir(&path)
                .map_err(unreadable)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            inner.sort();
            for file in inner {
                let file_name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if file_name.ends_with(".toml") && !file_name.starts_with('.') {
                    out.push((format!("{name}/{file_name}"), file));
                }
            }
        } else if name == "filter.toml" {
            out.push((name, path));
        }
        if out.len() > FLOWS_DIR_FILES_MAX {
            return Err(FlowError {
                file: dir.display().to_string(),
                line: None,
                column: None,
                message: format!("more than {FLOWS_DIR_FILES_MAX} flow files"),
            });
        }
    }
    Ok(out)
}

/// Names, sizes and modification times of the flow files: a change to any of
/// them changes this.
fn fingerprint(dir: &Path) -> Result<String, FlowError> {
    let mut fp = String::new();
    for (relative, path) in flow_paths(dir)? {
        let meta = std::fs::metadata(&path).ok();
        let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
        let modified = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        fp.push_str(&format!("{relative}:{len}:{modified};"));
    }
    Ok(fp)
}
