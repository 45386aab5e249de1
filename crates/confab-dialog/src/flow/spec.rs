//! The flow file's schema, as read from TOML. Every value that a later check may
//! refuse keeps its span, so that the error names its line.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// One flow file: intents, slots, steps and the actions it calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowFile {
    /// For people reading the file.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: String,
    /// Checked before this flow's own intents (0 by default; higher first).
    #[serde(default)]
    pub(crate) priority: i32,
    #[serde(default)]
    pub(crate) intents: Vec<IntentSpec>,
    #[serde(default)]
    pub(crate) slots: BTreeMap<String, Spanned<SlotSpec>>,
    #[serde(default)]
    pub(crate) steps: Vec<Spanned<StepSpec>>,
    #[serde(default)]
    pub(crate) actions: BTreeMap<String, Spanned<ActionSpec>>,
}

/// The version-wide settings, `policy.toml` in the version's folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// The reply when no intent is understood and no flow is open.
    #[serde(default)]
    pub(crate) fallback: Option<String>,
    /// Intents under this confidence count as not understood.
    #[serde(default)]
    pub(crate) min_confidence: Option<f32>,
    /// Words that answer a confirmation with yes...
    #[serde(default)]
    pub(crate) yes: Vec<String>,
    /// ...and with no.
    #[serde(default)]
    pub(crate) no: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntentSpec {
    pub(crate) name: Spanned<String>,
    /// Whole texts that mean this intent (compared trimmed, case-folded).
    #[serde(default)]
    pub(crate) examples: Vec<String>,
    /// Words or phrases that, found anywhere in the text, mean this intent.
    #[serde(default)]
    pub(crate) keywords: Vec<String>,
    /// Regular expressions that, matching, mean this intent.
    #[serde(default)]
    pub(crate) regexes: Vec<Spanned<String>>,
    /// The confidence of a keyword or regex match (an example match is 1.0).
    #[serde(default = "default_confidence")]
    pub(crate) confidence: Spanned<f32>,
    /// A one-shot answer: the intent replies this (a template) and starts no
    /// flow; an open flow stays open.
    #[serde(default)]
    pub(crate) reply: Option<String>,
    /// With `reply`: the open flow is abandoned and its slots dropped first.
    #[serde(default)]
    pub(crate) cancel: bool,
}

fn default_confidence() -> Spanned<f32> {
    Spanned::new(0..0, 0.9)
}

/// A typed slot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlotSpec {
    #[serde(rename = "type")]
    pub(crate) kind: SlotKind,
    /// What to ask when the slot is missing.
    pub(crate) prompt: String,
    /// What to answer when the value given is not valid (`{value}` is it).
    #[serde(default)]
    pub(crate) invalid: Option<String>,
    /// Extra patterns, each with one capture group, that find the value in any text.
    #[serde(default)]
    pub(crate) patterns: Vec<Spanned<String>>,
    /// `number`: the smallest valid value.
    #[serde(default)]
    pub(crate) min: Option<f64>,
    /// `number`: the largest valid value.
    #[serde(default)]
    pub(crate) max: Option<f64>,
    /// `enum`: the values, each with its label and the words that name it.
    #[serde(default)]
    pub(crate) values: Vec<EnumValueSpec>,
    /// `text` and `address`: the fewest characters of a valid value.
    #[serde(default)]
    pub(crate) min_chars: Option<usize>,
    /// Values are read only while the flow asks for this slot, never picked out
    /// of other texts (a box number "3" is not the 3 of "39码").
    #[serde(default)]
    pub(crate) when_asked: bool,
    /// `text`: a regular expression the whole value must match.
    #[serde(default)]
    pub(crate) valid: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SlotKind {
    Number,
    Enum,
    Phone,
    Address,
    Date,
    Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnumValueSpec {
    pub(crate) value: String,
    #[serde(default)]
    pub(crate) label: Option<String>,
    #[serde(default)]
    pub(crate) synonyms: Vec<String>,
}

/// One step. Exactly one of `ask`, `confirm`, `action`, `branch`, `reply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepSpec {
    /// A name for `goto`.
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// Ask for this slot if it is missing.
    #[serde(default)]
    pub(crate) ask: Option<String>,
    /// Ask this yes/no question (a template) once per flow run.
    #[serde(default)]
    pub(crate) confirm: Option<String>,
    /// `confirm`: what a no does.
    #[serde(default)]
    pub(crate) on_no: Option<Outcome>,
    /// Call this action (declared under `[actions.NAME]`).
    #[serde(default)]
    pub(crate) action: Option<String>,
    /// `action`: the slots passed to it.
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// `action`: how many times a user may call it per UTC day.
    #[serde(default)]
    pub(crate) daily_limit: Option<u32>,
    /// `action`: the reply once the daily limit is reached.
    #[serde(default)]
    pub(crate) over_limit: Option<String>,
    /// Test these in order; the first that holds decides.
    #[serde(default)]
    pub(crate) branch: Vec<BranchSpec>,
    /// Answer this (a template) and end the flow.
    #[serde(default)]
    pub(crate) reply: Option<String>,
    /// `reply`: slots dropped as the flow ends.
    #[serde(default)]
    pub(crate) clear: Vec<String>,
    /// `reply`: the flow stays open (its slots and place kept) instead of ending.
    #[serde(default)]
    pub(crate) keep_open: bool,
}

/// What a branch or a refused confirmation does: reply, or go to a step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outcome {
    #[serde(default)]
    pub(crate) reply: Option<String>,
    #[serde(default)]
    pub(crate) goto: Option<String>,
    #[serde(default)]
    pub(crate) clear: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BranchSpec {
    pub(crate) when: Condition,
    #[serde(flatten)]
    pub(crate) then: Outcome,
}

/// A test on a slot or on an action's result (`action.NAME`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Condition {
    pub(crate) slot: String,
    #[serde(default)]
    pub(crate) equals: Option<String>,
    #[serde(default, rename = "in")]
    pub(crate) one_of: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) min: Option<f64>,
    #[serde(default)]
    pub(crate) max: Option<f64>,
    #[serde(default)]
    pub(crate) present: Option<bool>,
}

/// How an action is carried out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum ActionSpec {
    /// Built into confab: `order_status` or `lottery_draw`.
    Builtin {
        /// Which one.
        builtin: String,
    },
    /// A POST to a URL with the idempotency key in `Idempotency-Key`.
    Http {
        /// Where.
        url: String,
        /// How long one attempt may take.
        #[serde(default = "default_action_timeout_ms")]
        timeout_ms: u64,
    },
}

fn default_action_timeout_ms() -> u64 {
    2_000
}

/// The input filter's rules, `filter.toml` at the top of the flows dir.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterFile {
    #[serde(default)]
    pub(crate) block: Vec<FilterRuleSpec>,
    /// Texts matching any of these pass whatever the block rules say.
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterRuleSpec {
    pub(crate) name: String,
    pub(crate) regex: Spanned<String>,
}
