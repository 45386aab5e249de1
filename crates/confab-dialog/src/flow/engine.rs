//! The flow engine: a [`PolicyVersion`] as a [`Policy`].
//!
//! A turn goes like this:
//! 1. Slots: every slot's value found in the text (the awaited one read from
//!    the whole text), valid or refused.
//! 2. Intent: the best match among the version's intents (an example is 1.0,
//!    a keyword or regex gives the intent's confidence); below
//!    `min_confidence` it is not understood.
//! 3. Which flow runs: an intent's flow starts again from its first step (slots
//!    kept, so steps already answered are skipped); a one-shot intent answers
//!    and leaves the open flow as it was (a `cancel` one abandons it first);
//!    values alone continue the open flow, or re-run the last flow they belong
//!    to (a changed mind: "换成白色的"); nothing understood gets the fallback.
//! 4. The flow's steps run until one answers: a missing slot is asked, a refused
//!    value is answered with the slot's `invalid` text, a confirmation is asked
//!    once, an action is requested, a branch or reply answers.
//!
//! Where the flow stands is kept in the session's `dialog` map, recorded with
//! every reply, so that a session rebuilt from its events continues exactly:
//! `flow` (the open flow), `step` (where it waits), `awaiting` (a slot, or
//! `confirm`), `confirmed` (the steps confirmed in this run), `last_flow`.

use super::slots::Found;
use super::template::Vars;
use super::{Flow, PolicyVersion, Step, Then, fold};
use crate::{Decision, Policy, TurnContext, Understanding};
use confab_core::session::{
    ActionOutcome, ActionTurn, DAY_MS, PendingAction, ReplyDecision, Slots, TurnDecision,
};
use std::collections::BTreeMap;

const FLOW: &str = "flow";
const STEP: &str = "step";
const AWAITING: &str = "awaiting";
const CONFIRMED: &str = "confirmed";
const LAST_FLOW: &str = "last_flow";
const AWAIT_CONFIRM: &str = "confirm";

/// Steps one turn may run, at most (a `goto` loop ends here).
const STEPS_PER_TURN_MAX: usize = 64;

/// What running a flow came to.
enum Ran {
    Reply {
        text: String,
        clear: Vec<String>,
        dialog: Slots,
    },
    Action {
        name: String,
        args: Slots,
        dialog: Slots,
    },
}

/// Everything a flow run reads.
struct Run<'a> {
    flow_index: usize,
    /// The slots as they stand in this turn.
    slots: Slots,
    /// Values refused in this turn.
    refused: &'a Slots,
    /// The text, folded, for yes and no.
    folded: String,
    /// `action.*` and `limit.*`.
    extra: BTreeMap<String, String>,
    /// Confirmations already given in this run of the flow.
    confirmed: Vec<usize>,
    /// Whether this turn answers the flow's open confirmation.
    answering_confirm: Option<usize>,
    ctx: TurnContext<'a>,
}

impl PolicyVersion {
    fn flow_of(&self, name: &str) -> Option<usize> {
        self.flows.iter().position(|f| f.name == name)
    }

    fn awaited<'a>(&self, dialog: &'a Slots) -> Option<&'a str> {
        dialog
            .get(AWAITING)
            .map(String::as_str)
            .filter(|a| *a != AWAIT_CONFIRM)
    }

    fn render(
        &self,
        template: &super::template::Template,
        slots: &Slots,
        extra: &BTreeMap<String, String>,
    ) -> String {
        template.render(&Vars {
            slots,
            defs: &self.slots,
            extra,
        })
    }

    fn fallback(&self, ctx: TurnContext<'_>, understanding: &Understanding) -> Decision {
        Decision::Reply(TurnDecision {
            intent: understanding.intent.clone(),
            confidence: understanding.confidence,
            slots_filled: understanding.slots.clone(),
            slots_cleared: Vec::new(),
            reply_text: self.render(&self.fallback, ctx.state.slots(), &BTreeMap::new()),
            policy: self.version.clone(),
            dialog: ctx.state.dialog().clone(),
        })
    }

    fn run_flow(&self, run: &mut Run<'_>, mut step: usize) -> Ran {
        let flow: &Flow = &self.flows[run.flow_index];
        let mut budget = STEPS_PER_TURN_MAX;
        while let Some(current) = flow.steps.get(step) {
            budget -= 1;
            if budget == 0 {
                break;
            }
            match current {
                Step::Ask(slot) => {
                    let def = &self.slots[slot];
                    if let Some(value) = run.refused.get(slot) {
                        let mut extra = run.extra.clone();
                        let shown = if def.sensitive() {
                            crate::mask(value)
                        } else {
                            crate::mask_value(slot, value)
                        };
                        extra.insert("value".into(), shown);
                        let text = match &def.invalid {
                            Some(invalid) => self.render(invalid, &run.slots, &extra),
                            None => self.render(&def.prompt, &run.slots, &extra),
                        };
                        return self.waiting(run, step, slot, text);
                    }
                    if !run.slots.contains_key(slot) {
                        let text = self.render(&def.prompt, &run.slots, &run.extra);
                        return self.waiting(run, step, slot, text);
                    }
                }
                Step::Confirm { question, on_no } => {
                    if !run.confirmed.contains(&step) {
                        if run.answering_confirm == Some(step) {
                            let said = |words: &[String]| {
                                words.iter().any(|w| answers_with(&run.folded, w))
                            };
                            // "不" is in "不是" and "是" too: a no wins.
                            if said(&self.no) {
                                run.answering_confirm = None;
                                match self.then(run, on_no) {
                                    Ok(ran) => return ran,
                                    Err(next) => {
                                        step = next;
                                        continue;
                                    }
                                }
                            }
                            if said(&self.yes) {
                                run.confirmed.push(step);
                                step += 1;
                                continue;
                            }
                        }
                        let text = self.render(question, &run.slots, &run.extra);
                        return self.waiting(run, step, AWAIT_CONFIRM, text);
                    }
                }
                Step::Action {
                    name,
                    args,
                    daily_limit,
                    over_limit,
                } => {
                    if let (Some(limit), Some(over)) = (daily_limit, over_limit) {
                        let day = run.ctx.now_ms / DAY_MS;
                        let used = run.ctx.state.actions_on_day(name, day);
                        run.extra.insert("limit.max".into(), limit.to_string());
                        run.extra.insert("limit.used".into(), used.to_string());
                        run.extra
                            .insert("limit.left".into(), limit.saturating_sub(used).to_string());
                        if used >= *limit {
                            let text = self.render(over, &run.slots, &run.extra);
                            return self.ended(run, text, args.clone());
                        }
                        // This call is one more.
                        run.extra.insert(
                            "limit.left".into(),
                            limit.saturating_sub(used + 1).to_string(),
                        );
                    }
                    let args = args
                        .iter()
                        .filter_map(|a| run.slots.get(a).map(|v| (a.clone(), v.clone())))
                        .collect();
                    let mut dialog = self.position(run, step);
                    for (k, v) in &run.extra {
                        if k.starts_with("limit.") {
                            dialog.insert(k.clone(), v.clone());
                        }
                    }
                    return Ran::Action {
                        name: name.clone(),
                        args,
                        dialog,
                    };
                }
                Step::Branch(arms) => {
                    let vars = self.vars(run);
                    if let Some((_, then)) = arms.iter().find(|(cond, _)| holds(cond, &vars)) {
                        match self.then(run, then) {
                            Ok(ran) => return ran,
                            Err(next) => {
                                step = next;
                                continue;
                            }
                        }
                    }
                }
                Step::Reply {
                    text,
                    clear,
                    keep_open,
                } => {
                    let rendered = self.render(text, &run.slots, &run.extra);
                    if *keep_open {
                        let dialog = self.position(run, step);
                        return Ran::Reply {
                            text: rendered,
                            clear: clear.clone(),
                            dialog,
                        };
                    }
                    return self.ended(run, rendered, clear.clone());
                }
            }
            step += 1;
        }
        let text = self.render(&self.fallback, &run.slots, &run.extra);
        self.ended(run, text, Vec::new())
    }

    /// A branch's or a refusal's outcome: a reply, or the step to go to.
    fn then(&self, run: &mut Run<'_>, then: &Then) -> Result<Ran, usize> {
        for slot in &then.clear {
            run.slots.remove(slot);
        }
        if let Some(goto) = then.goto {
            // Confirmations after the target are asked again.
            run.confirmed.retain(|s| *s < goto);
            return Err(goto);
        }
        let text = then
            .reply
            .as_ref()
            .map(|t| self.render(t, &run.slots, &run.extra))
            .unwrap_or_default();
        Ok(self.ended(run, text, then.clear.clone()))
    }

    fn vars(&self, run: &Run<'_>) -> Slots {
        let mut vars = run.slots.clone();
        vars.extend(run.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }

    fn position(&self, run: &Run<'_>, step: usize) -> Slots {
        let mut dialog = Slots::new();
        dialog.insert(FLOW.into(), self.flows[run.flow_index].name.clone());
        dialog.insert(STEP.into(), step.to_string());
        if !run.confirmed.is_empty() {
            let confirmed: Vec<String> = run.confirmed.iter().map(usize::to_string).collect();
            dialog.insert(CONFIRMED.into(), confirmed.join(","));
        }
        dialog
    }

    fn waiting(&self, run: &Run<'_>, step: usize, awaiting: &str, text: String) -> Ran {
        let mut dialog = self.position(run, step);
        dialog.insert(AWAITING.into(), awaiting.to_owned());
        Ran::Reply {
            text,
            clear: Vec::new(),
            dialog,
        }
    }

    fn ended(&self, run: &Run<'_>, text: String, clear: Vec<String>) -> Ran {
        let mut dialog = Slots::new();
        dialog.insert(LAST_FLOW.into(), self.flows[run.flow_index].name.clone());
        Ran::Reply {
            text,
            clear,
            dialog,
        }
    }

    fn new_run<'a>(
        &'a self,
        ctx: TurnContext<'a>,
        flow_index: usize,
        slots: Slots,
        refused: &'a Slots,
        text: &str,
    ) -> Run<'a> {
        Run {
            flow_index,
            slots,
            refused,
            folded: fold(text),
            extra: BTreeMap::new(),
            confirmed: Vec::new(),
            answering_confirm: None,
            ctx,
        }
    }
}

/// Whether an answer to a yes/no question opens with `word`: "不，换一个" is a
/// no, "我不知道" is neither; an ASCII word ends at a word boundary ("no" is
/// not "nothing").
pub(super) fn answers_with(folded: &str, word: &str) -> bool {
    let text = folded.trim_start_matches(|c: char| !c.is_alphanumeric());
    let Some(rest) = text.strip_prefix(word) else {
        return false;
    };
    let ascii_word = word
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    !ascii_word
        || !rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn holds(cond: &super::spec::Condition, vars: &Slots) -> bool {
    let value = vars.get(&cond.slot);
    if let Some(present) = cond.present {
        return value.is_some() == present;
    }
    let Some(value) = value else {
        return false;
    };
    if let Some(equals) = &cond.equals {
        return value == equals;
    }
    if let Some(one_of) = &cond.one_of {
        return one_of.contains(value);
    }
    if cond.min.is_some() || cond.max.is_some() {
        let Ok(n) = value.parse::<f64>() else {
            return false;
        };
        return cond.min.is_none_or(|m| n >= m) && cond.max.is_none_or(|m| n <= m);
    }
    true
}

impl Policy for PolicyVersion {
    fn version(&self) -> &str {
        &self.version
    }

    fn understand(&self, ctx: TurnContext<'_>, text: &str) -> Understanding {
        let today = i64::try_from(ctx.now_ms / DAY_MS).unwrap_or(0);
        let awaited = self.awaited(ctx.state.dialog());
        let mut slots = Slots::new();
        let mut refused = Slots::new();
        for (name, slot) in &self.slots {
            match slot.find(text, awaited == Some(name.as_str()), today) {
                Some(Found::Valid(v)) => {
                    slots.insert(name.clone(), v);
                }
                Some(Found::Refused(v)) => {
                    refused.insert(name.clone(), v);
                }
                None => {}
            }
        }
        let folded = fold(text);
        let mut best: Option<(&str, f32)> = None;
        for intent in &self.intents {
            let score = if intent.examples.contains(&folded) {
                1.0
            } else if intent.keywords.iter().any(|k| folded.contains(k.as_str()))
                || intent.regexes.iter().any(|r| r.is_match(text))
            {
                intent.confidence
            } else {
                continue;
            };
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((&intent.name, score));
            }
        }
        let (intent, confidence) = match best {
            Some((name, score)) if score >= self.min_confidence => (name.to_owned(), score),
            _ if !slots.is_empty() || !refused.is_empty() => ("inform".to_owned(), 0.6),
            _ => ("unknown".to_owned(), 0.0),
        };
        Understanding {
            intent,
            confidence,
            slots,
            refused,
        }
    }

    fn decide(&self, ctx: TurnContext<'_>, text: &str, understanding: &Understanding) -> Decision {
        let dialog = ctx.state.dialog();
        let open = dialog.get(FLOW).and_then(|f| self.flow_of(f));
        let mut slots = ctx.state.slots().clone();
        slots.extend(understanding.slots.clone());
        let intent = self.intents.iter().find(|i| i.name == understanding.intent);

        // A one-shot answer.
        if let Some(intent) = intent
            && let Some(reply) = &intent.reply
        {
            let mut cleared = Vec::new();
            let mut next_dialog = dialog.clone();
            if intent.cancel {
                if let Some(flow) = open {
                    cleared = self.flows[flow].slots.iter().cloned().collect();
                    for slot in &cleared {
                        slots.remove(slot);
                    }
                }
                next_dialog = Slots::new();
            }
            // A one-shot answer ("谢谢", "明白了") fills no slot: the white of
            // 明白 is not a colour.
            return Decision::Reply(TurnDecision {
                intent: intent.name.clone(),
                confidence: understanding.confidence,
                slots_filled: Slots::new(),
                slots_cleared: cleared,
                reply_text: self.render(reply, &slots, &BTreeMap::new()),
                policy: self.version.clone(),
                dialog: next_dialog,
            });
        }

        let (flow_index, start, resuming) = match intent.and_then(|i| i.flow) {
            Some(flow) => (flow, 0, false),
            None => match open {
                Some(flow) => {
                    let step = dialog.get(STEP).and_then(|s| s.parse().ok()).unwrap_or(0);
                    (flow, step, true)
                }
                None => {
                    let touched = |f: &Flow| {
                        understanding
                            .slots
                            .keys()
                            .chain(understanding.refused.keys())
                            .any(|s| f.slots.contains(s))
                    };
                    let last = dialog.get(LAST_FLOW).and_then(|f| self.flow_of(f));
                    match last.filter(|f| touched(&self.flows[*f])) {
                        Some(flow) => (flow, 0, false),
                        None => return self.fallback(ctx, understanding),
                    }
                }
            },
        };
        let mut run = self.new_run(ctx, flow_index, slots, &understanding.refused, text);
        if !resuming && let Some(ran) = self.spent(&mut run) {
            // The flow's action is spent for today: say so before asking anything.
            return self.reply_decision(ctx, understanding, flow_index, &run, ran);
        }
        if resuming {
            run.confirmed = dialog
                .get(CONFIRMED)
                .map(|c| c.split(',').filter_map(|s| s.parse().ok()).collect())
                .unwrap_or_default();
            if dialog.get(AWAITING).map(String::as_str) == Some(AWAIT_CONFIRM) {
                run.answering_confirm = Some(start);
            }
        }
        let ran = self.run_flow(&mut run, start);
        self.reply_decision(ctx, understanding, flow_index, &run, ran)
    }

    fn resume(
        &self,
        ctx: TurnContext<'_>,
        pending: &PendingAction,
        outcome: &ActionOutcome,
    ) -> ReplyDecision {
        self.resume_flow(ctx, pending, outcome)
    }
}

impl PolicyVersion {
    /// The over-limit reply of the flow's first action step whose daily limit
    /// is spent, if any.
    fn spent(&self, run: &mut Run<'_>) -> Option<Ran> {
        let day = run.ctx.now_ms / DAY_MS;
        let (args, limit, over) =
            self.flows[run.flow_index]
                .steps
                .iter()
                .find_map(|step| match step {
                    Step::Action {
                        name,
                        args,
                        daily_limit: Some(limit),
                        over_limit: Some(over),
                    } if run.ctx.state.actions_on_day(name, day) >= *limit => {
                        Some((args, limit, over))
                    }
                    _ => None,
                })?;
        run.extra.insert("limit.max".into(), limit.to_string());
        run.extra.insert("limit.used".into(), limit.to_string());
        run.extra.insert("limit.left".into(), "0".into());
        let text = self.render(over, &run.slots, &run.extra);
        Some(self.ended(run, text, args.clone()))
    }

    /// A finished run of the flow as the turn's decision.
    fn reply_decision(
        &self,
        ctx: TurnContext<'_>,
        understanding: &Understanding,
        flow_index: usize,
        run: &Run<'_>,
        ran: Ran,
    ) -> Decision {
        let flow_intent = self.flows[flow_index].intent.clone();
        match ran {
            Ran::Reply {
                text,
                clear,
                dialog,
            } => {
                // Slots cleared by a branch or a refusal are dropped with the reply.
                let mut cleared = clear;
                for slot in ctx.state.slots().keys().chain(understanding.slots.keys()) {
                    if !run.slots.contains_key(slot) && !cleared.contains(slot) {
                        cleared.push(slot.clone());
                    }
                }
                Decision::Reply(TurnDecision {
                    intent: flow_intent,
                    confidence: understanding.confidence,
                    slots_filled: understanding.slots.clone(),
                    slots_cleared: cleared,
                    reply_text: text,
                    policy: self.version.clone(),
                    dialog,
                })
            }
            Ran::Action { name, args, dialog } => Decision::Action(ActionTurn {
                intent: flow_intent,
                confidence: understanding.confidence,
                slots_filled: understanding.slots.clone(),
                action: name,
                args,
                policy: self.version.clone(),
                dialog,
            }),
        }
    }

    fn resume_flow(
        &self,
        ctx: TurnContext<'_>,
        pending: &PendingAction,
        outcome: &ActionOutcome,
    ) -> ReplyDecision {
        let dialog = ctx.state.dialog();
        let position = dialog
            .get(FLOW)
            .and_then(|f| self.flow_of(f))
            .zip(dialog.get(STEP).and_then(|s| s.parse::<usize>().ok()));
        let Some((flow_index, step)) = position else {
            // The flow is gone from this version: answer plainly.
            return ReplyDecision {
                intent: pending.action.clone(),
                reply_text: self.render(&self.fallback, ctx.state.slots(), &BTreeMap::new()),
                policy: self.version.clone(),
                slots_cleared: Vec::new(),
                dialog: Slots::new(),
            };
        };
        let no_refusals = Slots::new();
        let mut run = self.new_run(ctx, flow_index, ctx.state.slots().clone(), &no_refusals, "");
        for (k, v) in dialog {
            if k.starts_with("limit.") {
                run.extra.insert(k.clone(), v.clone());
            }
        }
        match outcome {
            ActionOutcome::Succeeded(result) => {
                run.extra.insert("action.status".into(), "ok".into());
                for (k, v) in result {
                    run.extra.insert(format!("action.{k}"), v.clone());
                }
            }
            ActionOutcome::Failed { reason, .. } => {
                run.extra.insert("action.status".into(), "failed".into());
                run.extra.insert("action.reason".into(), reason.clone());
            }
        }
        let intent = self.flows[flow_index].intent.clone();
        let (text, clear, dialog) = match self.run_flow(&mut run, step + 1) {
            Ran::Reply {
                text,
                clear,
                dialog,
            } => (text, clear, dialog),
            // A second action in one turn is refused at load; a goto back to
            // one ends the turn with the fallback rather than a stuck turn.
            Ran::Action { .. } => (
                self.render(&self.fallback, &run.slots, &run.extra),
                Vec::new(),
                Slots::new(),
            ),
        };
        let mut cleared = clear;
        for slot in ctx.state.slots().keys() {
            if !run.slots.contains_key(slot) && !cleared.contains(slot) {
                cleared.push(slot.clone());
            }
        }
        ReplyDecision {
            intent,
            reply_text: text,
            policy: self.version.clone(),
            slots_cleared: cleared,
            dialog,
        }
    }
}
