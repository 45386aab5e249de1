//! A dialog turn on a node: the events an action turn commits, and a reply as
//! the user hears it.

use super::*;
use confab_core::session::{ActionOutcome, ActionTurn, PendingAction, Slots};
use confab_dialog::{Policy, masked};

/// The events of a turn whose policy called an action, whole: received,
/// understood and requested; the action run at once under its key (`run`); its
/// outcome and the reply the policy resumes with. The simulator commits the
/// five together, so no action is ever found pending. `first` is what
/// `record_action_turn` takes: uid, epoch, time, message id, text.
pub(super) fn action_turn(
    state: &SessionState,
    policy: &dyn Policy,
    (uid, epoch, now_ms, message_id, text): (&Uid, Epoch, u64, MessageId, String),
    action: ActionTurn,
    run: impl FnOnce(&PendingAction) -> ActionOutcome,
) -> Result<Vec<RecordedEvent>, String> {
    let first = state.record_action_turn(uid, epoch, now_ms, message_id, text, action);
    let mut requested = state.clone();
    for event in &first {
        requested.apply(event).map_err(|e| e.to_string())?;
    }
    let pending = requested
        .pending_action()
        .cloned()
        .ok_or("no action pending after its request")?;
    let outcome = run(&pending);
    let ctx = TurnContext {
        state: &requested,
        now_ms,
    };
    let decision = policy.resume(ctx, &pending, &outcome);
    let done = requested
        .record_action_outcome(uid, epoch, now_ms, outcome)
        .ok_or("no action pending for its outcome")?;
    let reply = requested
        .record_reply(uid, epoch, now_ms, done.seq, decision)
        .ok_or("no turn open for the reply")?;
    let mut events = first.to_vec();
    events.extend([done, reply]);
    Ok(events)
}

/// The answer to a committed turn: its first event is the one acked, its last
/// the reply (a turn is three events, or five with an action).
pub(super) fn done_answer(events: &[RecordedEvent], scripted: bool) -> Answer {
    Answer::Done {
        turn_seq: events[0].seq.0,
        reply_seq: events[events.len() - 1].seq.0,
        reply: heard_of(scripted, events.last()),
    }
}

/// A reply as a client hears it, slots masked as in a `reply` frame.
pub(super) fn heard(intent: &str, text: &str, slots: &Slots) -> Box<Heard> {
    Box::new(Heard::Reply {
        intent: intent.to_owned(),
        text: text.to_owned(),
        slots: masked(slots),
    })
}

/// The reply a reply event carries, when users play scripts (`None` otherwise,
/// or for an event that is no reply: the script check then says so).
pub(super) fn heard_of(scripted: bool, event: Option<&RecordedEvent>) -> Option<Box<Heard>> {
    match event.map(|e| &e.event) {
        Some(Event::ReplyProduced {
            intent,
            text,
            slots,
            ..
        }) if scripted => Some(heard(intent, text, slots)),
        _ => None,
    }
}
