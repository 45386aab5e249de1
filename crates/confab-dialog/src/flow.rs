//! Flows as config: a policy version is a folder of TOML files, one flow each,
//! compiled here into a [`PolicyVersion`] that the engine ([`engine`]) runs.
//!
//! ```text
//! flows/
//!   filter.toml          the input filter's rules (every version)
//!   v1/
//!     policy.toml        the version's fallback reply and yes/no words
//!     shoe_shop.toml     one flow: intents, slots, steps, actions
//!     ...
//!   v2/ ...
//! ```
//!
//! Loading is pure: the caller reads the files and hands over their paths and
//! texts ([`PolicySet::compile`]); a problem is a [`FlowError`] naming the file,
//! the line and what is wrong. `docs/dialog.md` teaches the format.

pub mod engine;
mod slots;
pub(crate) mod spec;
mod template;

pub use spec::ActionSpec;

use crate::filter::ConfigFilter;
use slots::Slot;
use spec::{Condition, FlowFile, Outcome, PolicyFile, StepSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use template::Template;
use toml::Spanned;

/// Flow files read per version, at most.
pub const FLOW_FILES_MAX: usize = 64;
/// Bytes of one flow file, at most.
pub const FLOW_FILE_BYTES_MAX: usize = 256 * 1024;

/// Why a set of flow files was refused: the first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct FlowError {
    /// The file, relative to the flows dir.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl FlowError {
    fn render(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", self.file, self.message),
            _ => format!("{}: {}", self.file, self.message),
        }
    }

    pub(crate) fn whole(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        Self {
            file: file.to_owned(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// One file handed to [`PolicySet::compile`].
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Its path relative to the flows dir, `/`-separated: `v1/shoe_shop.toml`,
    /// `filter.toml`.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Every policy version and the input filter, compiled from one flows dir.
#[derive(Debug)]
pub struct PolicySet {
    versions: BTreeMap<String, Arc<PolicyVersion>>,
    filter: Arc<ConfigFilter>,
}

impl PolicySet {
    /// Compiles a flows dir's files. Files are taken in path order; anything
    /// that is not `filter.toml` or `VERSION/NAME.toml` is refused.
    pub fn compile(files: &[SourceFile]) -> Result<Self, FlowError> {
        let mut by_version: BTreeMap<&str, Vec<&SourceFile>> = BTreeMap::new();
        let mut filter = ConfigFilter::default();
        let mut sorted: Vec<&SourceFile> = files.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for file in sorted {
            if file.text.len() > FLOW_FILE_BYTES_MAX {
                return Err(FlowError::whole(
                    &file.path,
                    format!("file is over {FLOW_FILE_BYTES_MAX} bytes"),
                ));
            }
            match file.path.split('/').collect::<Vec<_>>()[..] {
                ["filter.toml"] => filter = ConfigFilter::compile(&file.path, &file.text)?,
                [version, name] if name.ends_with(".toml") => {
                    check_name(&file.path, version, "version folder")?;
                    by_version.entry(version).or_default().push(file);
                }
                _ => {
                    return Err(FlowError::whole(
                        &file.path,
                        "not a flow file: expected filter.toml or VERSION/NAME.toml",
                    ));
                }
            }
        }
        if by_version.is_empty() {
            return Err(FlowError::whole(
                ".",
                "no policy version: add a folder such as v1/ holding flow files",
            ));
        }
        let mut versions = BTreeMap::new();
        for (version, files) in by_version {
            if files.len() > FLOW_FILES_MAX {
                return Err(FlowError::whole(
                    version,
                    format!("more than {FLOW_FILES_MAX} flow files"),
                ));
            }
            let compiled = PolicyVersion::compile(version, &files)?;
            versions.insert(version.to_owned(), Arc::new(compiled));
        }
        Ok(Self {
            versions,
            filter: Arc::new(filter),
        })
    }

    /// The versions, by name.
    pub fn versions(&self) -> &BTreeMap<String, Arc<PolicyVersion>> {
        &self.versions
    }

    /// One version.
    pub fn version(&self, name: &str) -> Option<&Arc<PolicyVersion>> {
        self.versions.get(name)
    }

    /// The input filter.
    pub fn filter(&self) -> &Arc<ConfigFilter> {
        &self.filter
    }
}

fn check_name(file: &str, name: &str, what: &str) -> Result<(), FlowError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FlowError::whole(
            file,
            format!("{what} {name:?}: use 1 to 64 of a-z A-Z 0-9 - _ ."),
        ))
    }
}

/// One intent, compiled.
#[derive(Debug)]
pub(crate) struct Intent {
    pub(crate) name: String,
    /// The flow it starts; `None` for a one-shot intent.
    pub(crate) flow: Option<usize>,
    pub(crate) priority: i32,
    pub(crate) examples: Vec<String>,
    pub(crate) keywords: Vec<String>,
    pub(crate) regexes: Vec<regex::Regex>,
    pub(crate) confidence: f32,
    pub(crate) reply: Option<Template>,
    pub(crate) cancel: bool,
}

/// One flow, compiled.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) name: String,
    /// The intent named in replies while this flow runs (its first).
    pub(crate) intent: String,
    pub(crate) steps: Vec<Step>,
    /// Slots this flow asks for or reads: a text giving only values for
    /// them re-runs the flow after it ended (a changed mind).
    pub(crate) slots: BTreeSet<String>,
}

#[derive(Debug)]
pub(crate) enum Step {
    Ask(String),
    Confirm {
        question: Template,
        on_no: Then,
    },
    Action {
        name: String,
        args: Vec<String>,
        daily_limit: Option<u32>,
        over_limit: Option<Template>,
    },
    Branch(Vec<(Condition, Then)>),
    Reply {
        text: Template,
        clear: Vec<String>,
        keep_open: bool,
    },
}

/// What a branch or a refused confirmation does.
#[derive(Debug)]
pub(crate) struct Then {
    pub(crate) reply: Option<Template>,
    pub(crate) goto: Option<usize>,
    pub(crate) clear: Vec<String>,
}

/// One policy version: its flows, slots, intents and actions.
#[derive(Debug)]
pub struct PolicyVersion {
    pub(crate) version: String,
    pub(crate) flows: Vec<Flow>,
    /// Checked in order: higher priority first, then file order.
    pub(crate) intents: Vec<Intent>,
    pub(crate) slots: BTreeMap<String, Slot>,
    pub(crate) actions: BTreeMap<String, ActionSpec>,
    pub(crate) fallback: Template,
    pub(crate) min_confidence: f32,
    pub(crate) yes: Vec<String>,
    pub(crate) no: Vec<String>,
    digest: String,
}

impl PolicyVersion {
    /// Its name.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Its flows' names, sorted.
    pub fn flow_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.flows.iter().map(|f| f.name.clone()).collect();
        names.sort();
        names
    }

    /// Its slots whose values are masked wherever they leave the session (the
    /// phone and address slots, whatever their names).
    pub fn sensitive_slots(&self) -> std::collections::BTreeSet<String> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.sensitive())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The actions its flows call, by name.
    pub fn actions(&self) -> &BTreeMap<String, ActionSpec> {
        &self.actions
    }

    /// A digest of its files (hex SHA-256 over paths and texts).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn compile(version: &str, files: &[&SourceFile]) -> Result<Self, FlowError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut policy = PolicyFile::default();
        let mut parsed: Vec<(&SourceFile, FlowFile)> = Vec::new();
        for file in files {
            hasher.update(file.path.as_bytes());
            hasher.update([0]);
            hasher.update(file.text.as_bytes());
            hasher.update([0]);
            if file.path.ends_with("/policy.toml") {
                policy = parse(file)?;
            } else {
                parsed.push((file, parse(file)?));
            }
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();

        // Slots and actions first: steps refer to them.
        let mut slots = BTreeMap::new();
        let mut slot_homes: BTreeMap<&str, (&str, u32)> = BTreeMap::new();
        let mut actions = BTreeMap::new();
        for (file, flow) in &parsed {
            for (name, spec) in &flow.slots {
                check_name(&file.path, name, "slot name")?;
                let slot = Slot::compile(name, spec, file)?;
                let (line, _) = line_column(&file.text, spec.span().start);
                if let Some((first, first_line)) = slot_homes.get(name.as_str()) {
                    // Both files are named: which of the two is the newcomer is
                    // the operator's to say, not the order of file names.
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        spec.span().start,
                        format!(
                            "slot {name} is declared in two flow files of {version}: {first} line {first_line} and {} line {line}; declare it in one",
                            file.path
                        ),
                    ));
                }
                slot_homes.insert(name, (&file.path, line));
                slots.insert(name.clone(), slot);
            }
            for (name, spec) in &flow.actions {
                check_name(&file.path, name, "action name")?;
                if let ActionSpec::Builtin { builtin } = spec.get_ref()
                    && !crate::actions::BUILTINS.contains(&builtin.as_str())
                {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        spec.span().start,
                        format!(
                            "unknown builtin action {builtin:?}; known: {}",
                            crate::actions::BUILTINS.join(", ")
                        ),
                    ));
                }
                if actions
                    .insert(name.clone(), spec.get_ref().clone())
                    .is_some()
                {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        spec.span().start,
                        format!("action {name} is declared in two flow files of {version}"),
                    ));
                }
            }
        }

        let mut flows = Vec::new();
        let mut intents = Vec::new();
        let mut intent_names = BTreeSet::new();
        for (file, spec) in &parsed {
            let stem = file
                .path
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".toml"))
                .unwrap_or_default();
            check_name(&file.path, stem, "flow name")?;
            let flow_index = (!spec.steps.is_empty()).then_some(flows.len());
            let mut first_flow_intent = None;
            for intent in &spec.intents {
                let name = intent.name.get_ref();
                check_name(&file.path, name, "intent name")?;
                if !intent_names.insert(name.clone()) {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        intent.name.span().start,
                        format!("intent {name} is declared twice in {version}"),
                    ));
                }
                let confidence = *intent.confidence.get_ref();
                if !(0.0..=1.0).contains(&confidence) {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        intent.confidence.span().start,
                        "confidence must be between 0 and 1",
                    ));
                }
                let reply = intent
                    .reply
                    .as_deref()
                    .map(|t| Template::compile(t, &slots, file, intent.name.span().start))
                    .transpose()?;
                if reply.is_none() && flow_index.is_none() {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        intent.name.span().start,
                        format!("intent {name} has no reply and its file has no steps"),
                    ));
                }
                if intent.cancel && reply.is_none() {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        intent.name.span().start,
                        "a cancel intent needs a reply",
                    ));
                }
                if intent.examples.is_empty()
                    && intent.keywords.is_empty()
                    && intent.regexes.is_empty()
                {
                    return Err(FlowError::at(
                        &file.path,
                        &file.text,
                        intent.name.span().start,
                        format!("intent {name} has no examples, keywords or regexes"),
                    ));
                }
                let regexes = intent
                    .regexes
                    .iter()
                    .map(|r| compile_regex(r, file))
                    .collect::<Result<_, _>>()?;
                if reply.is_none() {
                    first_flow_intent.get_or_insert_with(|| name.clone());
                }
                intents.push(Intent {
                    name: name.clone(),
                    flow: if reply.is_some() { None } else { flow_index },
                    priority: spec.priority,
                    examples: intent.examples.iter().map(|e| fold(e)).collect(),
                    keywords: intent.keywords.iter().map(|k| fold(k)).collect(),
                    regexes,
                    confidence,
                    reply,
                    cancel: intent.cancel,
                });
            }
            if let Some(index) = flow_index {
                let Some(intent) = first_flow_intent else {
                    return Err(FlowError::whole(
                        &file.path,
                        "a flow with steps needs an intent without a reply to start it",
                    ));
                };
                let flow = compile_flow(stem, intent, spec, file, &slots, &actions)?;
                debug_assert_eq!(flows.len(), index);
                flows.push(flow);
            }
        }
        // Higher priority first; the sort is stable, so file order breaks ties.
        intents.sort_by_key(|i| std::cmp::Reverse(i.priority));

        let (fallback_text, fallback_at) = match &policy.fallback {
            Some(text) => (text.clone(), 0),
            None => ("sorry, I did not understand that".to_owned(), 0),
        };
        let policy_file = SourceFile {
            path: format!("{version}/policy.toml"),
            text: String::new(),
        };
        let fallback = Template::compile(&fallback_text, &slots, &policy_file, fallback_at)?;
        let words = |given: &[String], default: &[&str]| -> Vec<String> {
            if given.is_empty() {
                default.iter().map(|w| fold(w)).collect()
            } else {
                given.iter().map(|w| fold(w)).collect()
            }
        };
        Ok(Self {
            version: version.to_owned(),
            flows,
            intents,
            slots,
            actions,
            fallback,
            min_confidence: policy.min_confidence.unwrap_or(0.5),
            yes: words(
                &policy.yes,
                &["是", "好", "确认", "对", "可以", "yes", "ok", "sure"],
            ),
            no: words(&policy.no, &["不", "否", "取消", "算了", "no", "nope"]),
            digest,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(file: &SourceFile) -> Result<T, FlowError> {
    toml::from_str(&file.text).map_err(|e| {
        let message = e.message().trim().to_owned();
        match e.span() {
            Some(span) => FlowError::at(&file.path, &file.text, span.start, message),
            None => FlowError::whole(&file.path, message),
        }
    })
}

pub(crate) fn compile_regex(
    pattern: &Spanned<String>,
    file: &SourceFile,
) -> Result<regex::Regex, FlowError> {
    regex::RegexBuilder::new(pattern.get_ref())
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            FlowError::at(
                &file.path,
                &file.text,
                pattern.span().start,
                format!("bad regex: {}", e.to_string().lines().last().unwrap_or("")),
            )
        })
}

/// Text as matched: trimmed and lowercased.
pub(crate) fn fold(text: &str) -> String {
    text.trim().to_lowercase()
}

fn compile_flow(
    name: &str,
    intent: String,
    spec: &FlowFile,
    file: &SourceFile,
    slots: &BTreeMap<String, Slot>,
    actions: &BTreeMap<String, ActionSpec>,
) -> Result<Flow, FlowError> {
    let ids: BTreeMap<&str, usize> = spec
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.get_ref().id.as_deref().map(|id| (id, i)))
        .collect();
    let mut used = BTreeSet::new();
    let mut steps = Vec::new();
    let mut after_action = false;
    for step in &spec.steps {
        let at = step.span().start;
        let err = |message: String| FlowError::at(&file.path, &file.text, at, message);
        let slot_known = |slot: &str, used: &mut BTreeSet<String>| {
            if slot.starts_with("action.") || slots.contains_key(slot) {
                if !slot.starts_with("action.") {
                    used.insert(slot.to_owned());
                }
                Ok(())
            } else {
                Err(err(format!(
                    "unknown slot {slot}; declare it under [slots.{slot}]"
                )))
            }
        };
        let then = |outcome: &Outcome, used: &mut BTreeSet<String>| -> Result<Then, FlowError> {
            for slot in &outcome.clear {
                slot_known(slot, used)?;
            }
            let goto = match &outcome.goto {
                Some(id) => Some(
                    *ids.get(id.as_str())
                        .ok_or_else(|| err(format!("goto {id}: no step has that id")))?,
                ),
                None => None,
            };
            if outcome.reply.is_none() && goto.is_none() {
                return Err(err("needs a reply or a goto".into()));
            }
            Ok(Then {
                reply: outcome
                    .reply
                    .as_deref()
                    .map(|t| Template::compile(t, slots, file, at))
                    .transpose()?,
                goto,
                clear: outcome.clear.clone(),
            })
        };
        let s: &StepSpec = step.get_ref();
        let kinds = [
            s.ask.is_some(),
            s.confirm.is_some(),
            s.action.is_some(),
            !s.branch.is_empty(),
            s.reply.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(err(
                "a step is exactly one of ask, confirm, action, branch, reply".into(),
            ));
        }
        let compiled = if let Some(slot) = &s.ask {
            slot_known(slot, &mut used)?;
            Step::Ask(slot.clone())
        } else if let Some(question) = &s.confirm {
            let on_no = match &s.on_no {
                Some(outcome) => then(outcome, &mut used)?,
                None => return Err(err("a confirm step needs on_no".into())),
            };
            Step::Confirm {
                question: Template::compile(question, slots, file, at)?,
                on_no,
            }
        } else if let Some(action) = &s.action {
            if !actions.contains_key(action) {
                return Err(err(format!(
                    "unknown action {action}; declare it under [actions.{action}]"
                )));
            }
            for arg in &s.args {
                slot_known(arg, &mut used)?;
            }
            if s.daily_limit.is_some() != s.over_limit.is_some() {
                return Err(err("daily_limit and over_limit go together".into()));
            }
            Step::Action {
                name: action.clone(),
                args: s.args.clone(),
                daily_limit: s.daily_limit,
                over_limit: s
                    .over_limit
                    .as_deref()
                    .map(|t| Template::compile(t, slots, file, at))
                    .transpose()?,
            }
        } else if !s.branch.is_empty() {
            let mut arms = Vec::new();
            for arm in &s.branch {
                slot_known(&arm.when.slot, &mut used)?;
                arms.push((arm.when.clone(), then(&arm.then, &mut used)?));
            }
            Step::Branch(arms)
        } else {
            for slot in &s.clear {
                slot_known(slot, &mut used)?;
            }
            Step::Reply {
                text: Template::compile(s.reply.as_deref().unwrap_or_default(), slots, file, at)?,
                clear: s.clear.clone(),
                keep_open: s.keep_open,
            }
        };
        if after_action
            && matches!(
                compiled,
                Step::Ask(_) | Step::Confirm { .. } | Step::Action { .. }
            )
        {
            return Err(err(
                "after an action only branch and reply steps may follow (one action per turn)"
                    .into(),
            ));
        }
        after_action |= matches!(compiled, Step::Action { .. });
        steps.push(compiled);
    }
    if !matches!(steps.last(), Some(Step::Reply { .. })) {
        return Err(FlowError::whole(
            &file.path,
            "a flow's last step must be a reply",
        ));
    }
    Ok(Flow {
        name: name.to_owned(),
        intent,
        steps,
        slots: used,
    })
}

#[cfg(test)]
mod tests;
