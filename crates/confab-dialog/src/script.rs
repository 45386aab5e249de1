//! Conversation scripts: a conversation as a file of turns, each with what must
//! come back. Testers write them; `cargo test` runs them against the policy
//! (here, [`run_script`]) and against a real node over WebSocket, and
//! `confab-sim` plays them as simulated users of a faulty cluster.
//!
//! ```toml
//! description = "a second draw past the daily limit is refused"
//! uid = "10086"            # whose session (canary tails depend on it)
//! version = "v1"           # the policy version to run (pure runs)
//! start_ms = 1764547200000 # the clock at the first turn (daily limits, dates)
//!
//! [[turns]]
//! say = "我要抽奖"
//! intent = "lottery_draw"  # the reply's intent
//! reply = "哪个盒子"        # a regex the reply text must match
//! slots = { box = "2" }    # slots the reply must carry (as sent: masked)
//! absent = ["phone"]       # slots it must not carry
//!
//! [[turns]]
//! say = "<script>alert(1)</script>"
//! rejected = true          # the input filter refuses it
//!
//! [[turns]]
//! say = "再抽一次"
//! reconnect = true         # a new connection first (live runs)
//! ```
//!
//! A script means the same in both runs, so it holds nothing that only one of
//! them could do (moving the clock, failing an action): unit tests cover those.

use crate::flow::PolicySet;
use crate::{Decision, Pipeline, Policy, TurnContext, masked};
use confab_core::session::{ActionOutcome, Event, SessionState, Slots};
use confab_core::{Epoch, MessageId, Uid};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Turns per script, at most.
pub const SCRIPT_TURNS_MAX: usize = 256;

/// A conversation script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// What the conversation shows.
    #[serde(default)]
    pub description: String,
    /// Whose session.
    pub uid: String,
    /// The policy version it runs against, in pure runs.
    #[serde(default = "default_version")]
    pub version: String,
    /// The clock at the first turn, ms since the Unix epoch.
    #[serde(default = "default_start_ms")]
    pub start_ms: u64,
    /// The turns, in order.
    pub turns: Vec<ScriptTurn>,
}

fn default_version() -> String {
    "v1".into()
}

fn default_start_ms() -> u64 {
    // 2026-12-01T00:00:00Z.
    1_764_547_200_000
}

/// One turn of a script and what must come back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    /// What the user says.
    pub say: String,
    /// The reply's intent.
    #[serde(default)]
    pub intent: Option<String>,
    /// A regex the reply text must match.
    #[serde(default)]
    pub reply: Option<String>,
    /// Slots the reply must carry, as sent (sensitive ones masked).
    #[serde(default)]
    pub slots: BTreeMap<String, String>,
    /// Slots the reply must not carry.
    #[serde(default)]
    pub absent: Vec<String>,
    /// The input filter must refuse the text.
    #[serde(default)]
    pub rejected: bool,
    /// Reconnect before this turn (live runs; pure runs carry on as they are).
    #[serde(default)]
    pub reconnect: bool,
}

impl Script {
    /// Parses a script file; the error names the line.
    pub fn parse(path: &str, text: &str) -> Result<Self, String> {
        let script: Self = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(line) => format!("{path}:{line}: {}", e.message().trim()),
                None => format!("{path}: {}", e.message().trim()),
            }
        })?;
        if script.turns.is_empty() || script.turns.len() > SCRIPT_TURNS_MAX {
            return Err(format!(
                "{path}: a script has 1 to {SCRIPT_TURNS_MAX} turns"
            ));
        }
        for (i, turn) in script.turns.iter().enumerate() {
            if let Some(pattern) = &turn.reply {
                regex::Regex::new(pattern)
                    .map_err(|e| format!("{path}: turn {}: bad reply regex: {e}", i + 1))?;
            }
        }
        Ok(script)
    }
}

/// What came back for one turn, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// A reply.
    Reply {
        /// Its intent.
        intent: String,
        /// Its text.
        text: String,
        /// Its slots, masked.
        slots: Slots,
    },
    /// The input filter refused the text.
    Rejected,
}

/// Checks one turn's outcome against the script; the error says what differs.
pub fn check_turn(index: usize, turn: &ScriptTurn, heard: &Heard) -> Result<(), String> {
    let at = format!("turn {} ({:?})", index + 1, turn.say);
    let (intent, text, slots) = match heard {
        Heard::Rejected if turn.rejected => return Ok(()),
        Heard::Rejected => return Err(format!("{at}: refused by the input filter")),
        Heard::Reply { .. } if turn.rejected => {
            return Err(format!("{at}: expected a refusal, got {heard:?}"));
        }
        Heard::Reply {
            intent,
            text,
            slots,
        } => (intent, text, slots),
    };
    if let Some(expected) = &turn.intent
        && expected != intent
    {
        return Err(format!(
            "{at}: intent {intent:?}, expected {expected:?} (reply {text:?})"
        ));
    }
    if let Some(pattern) = &turn.reply {
        let re = regex::Regex::new(pattern).map_err(|e| format!("{at}: {e}"))?;
        if !re.is_match(text) {
            return Err(format!("{at}: reply {text:?} does not match {pattern:?}"));
        }
    }
    for (slot, value) in &turn.slots {
        if slots.get(slot) != Some(value) {
            return Err(format!(
                "{at}: slot {slot} is {:?}, expected {value:?} (slots {slots:?})",
                slots.get(slot)
            ));
        }
    }
    if let Some(slot) = turn.absent.iter().find(|s| slots.contains_key(*s)) {
        return Err(format!(
            "{at}: slot {slot} should be absent (slots {slots:?})"
        ));
    }
    Ok(())
}

/// Runs a script against a compiled flows dir, the way a session runs turns:
/// filter, policy, builtin actions, events applied. `Err` names the first turn
/// that differs.
pub fn run_script(script: &Script, set: &PolicySet) -> Result<(), String> {
    let version = set
        .version(&script.version)
        .ok_or_else(|| format!("policy version {} is not loaded", script.version))?;
    let policy: Arc<dyn Policy> = Arc::clone(version) as Arc<dyn Policy>;
    let pipeline = Pipeline::new(Arc::clone(set.filter()) as _, Arc::clone(&policy));
    let uid = Uid::new(&script.uid).map_err(|e| format!("uid {:?}: {e}", script.uid))?;
    let mut state = SessionState::default();
    for (index, turn) in script.turns.iter().enumerate() {
        let now_ms = script.start_ms + u64::try_from(index).unwrap_or(0) * 1_000;
        let heard = play(
            &pipeline,
            version.actions(),
            &uid,
            &mut state,
            now_ms,
            index,
            turn,
        )?;
        check_turn(index, turn, &heard)?;
    }
    Ok(())
}

fn play(
    pipeline: &Pipeline,
    actions: &BTreeMap<String, crate::flow::ActionSpec>,
    uid: &Uid,
    state: &mut SessionState,
    now_ms: u64,
    index: usize,
    turn: &ScriptTurn,
) -> Result<Heard, String> {
    let message_id = MessageId::new(format!("script-{index}")).map_err(|e| e.to_string())?;
    let apply = |state: &mut SessionState, events: &[confab_core::session::RecordedEvent]| {
        for event in events {
            state
                .apply(event)
                .map_err(|e| format!("turn {}: {e}", index + 1))?;
        }
        Ok::<(), String>(())
    };
    let ctx = TurnContext { state, now_ms };
    let output = match pipeline.run(ctx, &turn.say) {
        Ok(output) => output,
        Err(rejection) => {
            let event = state.record_rejection(
                uid,
                Epoch(1),
                now_ms,
                message_id,
                rejection.reason,
                &turn.say,
            );
            apply(state, event.as_slice())?;
            return Ok(Heard::Rejected);
        }
    };
    let reply = match output.decision {
        Decision::Reply(decision) => {
            let events =
                state.record_turn(uid, Epoch(1), now_ms, message_id, output.text, decision);
            apply(state, &events)?;
            events[2].clone()
        }
        Decision::Action(action) => {
            let events =
                state.record_action_turn(uid, Epoch(1), now_ms, message_id, output.text, action);
            apply(state, &events)?;
            let pending = state.pending_action().cloned().ok_or("no pending action")?;
            let key = crate::actions::idempotency_key(uid.as_str(), pending.requested.0);
            let outcome = match actions.get(&pending.action) {
                Some(crate::flow::ActionSpec::Builtin { builtin }) => {
                    match crate::actions::run_builtin(builtin, &key, &pending.args) {
                        Ok(result) => ActionOutcome::Succeeded(result),
                        Err(reason) => ActionOutcome::Failed {
                            reason,
                            attempts: 1,
                        },
                    }
                }
                _ => ActionOutcome::Failed {
                    reason: format!(
                        "{} is not a builtin: pure runs cannot call it",
                        pending.action
                    ),
                    attempts: 1,
                },
            };
            let decision =
                pipeline
                    .policy()
                    .resume(TurnContext { state, now_ms }, &pending, &outcome);
            let outcome_event = state
                .record_action_outcome(uid, Epoch(1), now_ms, outcome)
                .ok_or("no pending action")?;
            let reply = state
                .record_reply(uid, Epoch(1), now_ms, outcome_event.seq, decision)
                .ok_or("no open turn")?;
            apply(state, &[outcome_event, reply.clone()])?;
            reply
        }
    };
    match reply.event {
        Event::ReplyProduced {
            intent,
            text,
            slots,
            ..
        } => Ok(Heard::Reply {
            intent,
            text,
            slots: masked(&slots),
        }),
        other => Err(format!("turn {}: not a reply: {other:?}", index + 1)),
    }
}
