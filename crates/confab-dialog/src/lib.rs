//! confab's dialog pipeline: input filter → NLU → policy → reply. Pure: no I/O,
//! no clock, no randomness; the same input always gives the same reply.
//!
//! The stages are traits so that the config-driven flow engine can replace the
//! built-in shoe-shop stages without touching the runtime:
//! - [`InputFilter`] cleans or refuses the text before anything else sees it;
//! - [`Nlu`] finds the intent and the slots in the text;
//! - [`Policy`] decides the reply from the session's context and the NLU result.
//!
//! [`shoe_shop`] holds the first real policy: stock questions by size and colour,
//! order status by order number, and call-backs by phone number.

pub mod shoe_shop;

use confab_core::session::{Slots, TurnDecision};

/// Slots whose values are masked wherever they leave the session.
pub const SENSITIVE_SLOTS: &[&str] = &["phone", "address", "id_number"];

/// What the session knows when a turn arrives.
#[derive(Debug, Clone, Copy)]
pub struct DialogContext<'a> {
    /// The session's slots before the turn.
    pub slots: &'a Slots,
    /// The intent the previous turn served.
    pub last_intent: Option<&'a str>,
}

/// Why the input filter refused a text. Nothing is recorded for it.
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
    /// The intent found; `inform` when the text only gives slot values.
    pub intent: String,
    /// How sure, 0.0 to 1.0.
    pub confidence: f32,
    /// Slot values found in the text.
    pub slots: Slots,
}

/// Finds the intent and the slots in a text.
pub trait Nlu: Send + Sync {
    /// Understands one text.
    fn understand(&self, text: &str) -> Understanding;
}

/// The policy's answer to one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyReply {
    /// The intent the turn serves (an `inform` resolves to the task it fills).
    pub intent: String,
    /// The reply text, with sensitive values masked.
    pub text: String,
}

/// Decides the reply.
pub trait Policy: Send + Sync {
    /// The version named in every reply, so that canaries are visible per turn.
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

/// The three stages, run in order.
pub struct Pipeline {
    filter: Box<dyn InputFilter>,
    nlu: Box<dyn Nlu>,
    policy: Box<dyn Policy>,
}

/// The outcome of one turn through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutput {
    /// The text as filtered: what is recorded as the user's turn.
    pub text: String,
    /// The decision to record.
    pub decision: TurnDecision,
}

impl Pipeline {
    /// A pipeline of these stages.
    pub fn new(filter: Box<dyn InputFilter>, nlu: Box<dyn Nlu>, policy: Box<dyn Policy>) -> Self {
        Self {
            filter,
            nlu,
            policy,
        }
    }

    /// The built-in shoe-shop pipeline.
    pub fn shoe_shop() -> Self {
        Self::new(
            Box::new(BasicInputFilter),
            Box::new(shoe_shop::ShoeShopNlu::new()),
            Box::new(shoe_shop::ShoeShopPolicy),
        )
    }

    /// Runs one turn.
    pub fn run(&self, ctx: DialogContext<'_>, text: &str) -> Result<PipelineOutput, Rejection> {
        let text = self.filter.filter(text)?;
        let understanding = self.nlu.understand(&text);
        let mut slots = ctx.slots.clone();
        slots.extend(understanding.slots.clone());
        let reply = self.policy.decide(ctx, &text, &understanding, &slots);
        Ok(PipelineOutput {
            text,
            decision: TurnDecision {
                intent: reply.intent,
                confidence: understanding.confidence,
                slots_filled: understanding.slots,
                reply_text: reply.text,
                policy: self.policy.version().to_owned(),
            },
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
    if !SENSITIVE_SLOTS.contains(&slot) {
        return value.to_owned();
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 7 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
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
