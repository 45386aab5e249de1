//! confab's dialog pipeline: input filter → NLU → policy → (action) → reply.
//! Pure: no I/O, no clock, no randomness; time comes in with the turn, and the
//! same input always gives the same decision.
//!
//! - [`flow`]: flows as config. A policy version is a folder of TOML flow files
//!   (intents, typed slots, steps, replies, actions), compiled into a
//!   [`flow::PolicyVersion`] that implements [`Policy`].
//! - [`canary`]: which version serves a uid (stable, or a canary by uid tail).
//! - [`filter`]: the input filter's block and allow rules, from config.
//! - [`actions`]: the builtin actions' pure parts (the results they compute).
//! - [`script`]: conversation scripts for testers, run against a policy.
//! - [`turn`]: one turn of a session as a sans-IO machine (dedupe, stages,
//!   policy, the two-step action commit, dead letters), driven by the
//!   production session actor and the simulator alike.
//! - [`shoe_shop`]: the first, hand-written policy; the simulator and the
//!   dialog bench still drive it.
//!
//! A policy never performs a side effect: it asks for an action
//! ([`Decision::Action`]); the runtime runs it, records its outcome, and asks
//! the policy for the reply ([`Policy::resume`]).

pub mod actions;
pub mod canary;
pub mod filter;
pub mod flow;
pub mod script;
pub mod shoe_shop;
pub mod turn;

use confab_core::session::{
    ActionOutcome, ActionTurn, PendingAction, ReplyDecision, SessionState, Slots, TurnDecision,
};
use std::sync::Arc;

/// Slots whose values are masked wherever they leave the session.
pub const SENSITIVE_SLOTS: &[&str] = &["phone", "address", "id_number"];

/// What the session knows when a turn arrives.
#[derive(Debug, Clone, Copy)]
pub struct TurnContext<'a> {
    /// The session's state before the turn (slots, dialog position, counts).
    pub state: &'a SessionState,
    /// The turn's time, ms since the Unix epoch (daily limits, relative dates).
    pub now_ms: u64,
}

/// The hand-written policies' view of the session.
#[derive(Debug, Clone, Copy)]
pub struct DialogContext<'a> {
    /// The session's slots before the turn.
    pub slots: &'a Slots,
    /// The intent the previous turn served.
    pub last_intent: Option<&'a str>,
}

/// Why the input filter refused a text. Only an audit event is recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// What is wrong with the text, for the user.
    pub reason: String,
}

/// Cleans or refuses user text before the NLU sees it.
pub trait InputFilter: Send + Sync {
    /// The text to process, or why it is refused.
    fn filter(&self, text: &str) -> Result<String, Rejection>;
}

/// What the NLU made of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Understanding {
    /// The intent found; `inform` when the text only gives slot values,
    /// `unknown` when it gives nothing.
    pub intent: String,
    /// How sure, 0.0 to 1.0.
    pub confidence: f32,
    /// Valid slot values found in the text.
    pub slots: Slots,
    /// Values found for a slot but not valid for it (a size out of range).
    pub refused: Slots,
}

/// Finds the intent and the slots in a text (the hand-written policies).
pub trait Nlu: Send + Sync {
    /// Understands one text.
    fn understand(&self, text: &str) -> Understanding;
}

/// The hand-written policies' answer to one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyReply {
    /// The intent the turn serves (an `inform` resolves to the task it fills).
    pub intent: String,
    /// The reply text, with sensitive values masked.
    pub text: String,
}

/// The hand-written policies' decision step, after their [`Nlu`].
pub trait ReplyPolicy: Send + Sync {
    /// The version named in replies.
    fn version(&self) -> &str;
    /// Decides the reply to `text`. `slots` already holds the session's slots
    /// merged with the ones of this turn.
    fn decide(
        &self,
        ctx: DialogContext<'_>,
        text: &str,
        understanding: &Understanding,
        slots: &Slots,
    ) -> PolicyReply;
}

/// What the policy decided for a turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer now.
    Reply(TurnDecision),
    /// Run an action first; the reply comes from [`Policy::resume`].
    Action(ActionTurn),
}

/// A policy: understands texts and decides replies and actions.
pub trait Policy: Send + Sync {
    /// The version named in every reply, so that canaries are visible per turn.
    fn version(&self) -> &str;
    /// What the text says, in the session's context.
    fn understand(&self, ctx: TurnContext<'_>, text: &str) -> Understanding;
    /// The turn's decision.
    fn decide(&self, ctx: TurnContext<'_>, text: &str, understanding: &Understanding) -> Decision;
    /// The reply that closes a turn once its action has ended. `ctx.state` has
    /// the action requested (and pending).
    fn resume(
        &self,
        ctx: TurnContext<'_>,
        pending: &PendingAction,
        outcome: &ActionOutcome,
    ) -> ReplyDecision;
}

/// The filter and a policy, run in order.
#[derive(Clone)]
pub struct Pipeline {
    filter: Arc<dyn InputFilter>,
    policy: Arc<dyn Policy>,
}

/// The outcome of one turn through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutput {
    /// The text as filtered: what is recorded as the user's turn.
    pub text: String,
    /// What the NLU made of it.
    pub understanding: Understanding,
    /// The decision to record.
    pub decision: Decision,
}

impl Pipeline {
    /// A pipeline of these stages.
    pub fn new(filter: Arc<dyn InputFilter>, policy: Arc<dyn Policy>) -> Self {
        Self { filter, policy }
    }

    /// The hand-written shoe-shop pipeline.
    pub fn shoe_shop() -> Self {
        Self::new(
            Arc::new(BasicInputFilter),
            Arc::new(shoe_shop::ShoeShop::new()),
        )
    }

    /// The input filter.
    pub fn filter(&self) -> &Arc<dyn InputFilter> {
        &self.filter
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<dyn Policy> {
        &self.policy
    }

    /// Runs one turn.
    pub fn run(&self, ctx: TurnContext<'_>, text: &str) -> Result<PipelineOutput, Rejection> {
        let text = self.filter.filter(text)?;
        let understanding = self.policy.understand(ctx, &text);
        let decision = self.policy.decide(ctx, &text, &understanding);
        Ok(PipelineOutput {
            text,
            understanding,
            decision,
        })
    }
}

/// Trims the text and refuses control characters and blank text.
pub struct BasicInputFilter;

impl InputFilter for BasicInputFilter {
    fn filter(&self, text: &str) -> Result<String, Rejection> {
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        {
            return Err(Rejection {
                reason: format!("text holds the control character U+{:04X}", u32::from(c)),
            });
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Rejection {
                reason: "text is blank".into(),
            });
        }
        Ok(trimmed.to_owned())
    }
}

/// Masks a slot's value if the slot is sensitive: `13812345678` → `138****5678`.
pub fn mask_value(slot: &str, value: &str) -> String {
    if SENSITIVE_SLOTS.contains(&slot) {
        mask(value)
    } else {
        value.to_owned()
    }
}

/// Masks a value: the first three and last four characters stay.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 7 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// The slots as they may leave the session: values of [`SENSITIVE_SLOTS`] and
/// of the slots named in `sensitive` (a policy's phone and address slots) masked.
pub fn masked_with(slots: &Slots, sensitive: &std::collections::BTreeSet<String>) -> Slots {
    slots
        .iter()
        .map(|(k, v)| {
            let value = if sensitive.contains(k) {
                mask(v)
            } else {
                mask_value(k, v)
            };
            (k.clone(), value)
        })
        .collect()
}

/// The slots as they may leave the session: sensitive values masked.
pub fn masked(slots: &Slots) -> Slots {
    slots
        .iter()
        .map(|(k, v)| (k.clone(), mask_value(k, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked_and_other_slots_are_not() {
        assert_eq!(mask_value("phone", "13812345678"), "138****5678");
        assert_eq!(mask_value("phone", "12345"), "*****");
        assert_eq!(mask_value("size", "39"), "39");
    }

    #[test]
    fn the_filter_refuses_control_characters_and_blank_text() {
        assert!(BasicInputFilter.filter("hi\u{7}").is_err());
        assert!(BasicInputFilter.filter("  \n ").is_err());
        assert_eq!(BasicInputFilter.filter("  有货吗 \n").unwrap(), "有货吗");
    }
}
