use super::*;
use crate::{BasicInputFilter, Policy, Understanding};
use confab_core::session::{ActionTurn, TurnDecision};
use std::sync::Arc;

/// Replies to everything, except `order`, which calls the action `lookup`.
struct Orders;

impl Policy for Orders {
    fn version(&self) -> &str {
        "orders-v1"
    }

    fn understand(&self, _ctx: TurnContext<'_>, text: &str) -> Understanding {
        Understanding {
            intent: if text == "order" { "order" } else { "chat" }.into(),
            confidence: 1.0,
            slots: Slots::new(),
            refused: Slots::new(),
        }
    }

    fn decide(&self, _ctx: TurnContext<'_>, text: &str, u: &Understanding) -> Decision {
        if text == "order" {
            Decision::Action(ActionTurn {
                intent: u.intent.clone(),
                confidence: 1.0,
                slots_filled: Slots::new(),
                action: "lookup".into(),
                args: Slots::from([("order".into(), "7".into())]),
                policy: self.version().into(),
                dialog: Slots::new(),
            })
        } else {
            Decision::Reply(TurnDecision {
                intent: u.intent.clone(),
                confidence: 1.0,
                slots_filled: Slots::new(),
                slots_cleared: vec![],
                reply_text: format!("you said {text}"),
                policy: self.version().into(),
                dialog: Slots::new(),
            })
        }
    }

    fn resume(
        &self,
        _ctx: TurnContext<'_>,
        pending: &PendingAction,
        outcome: &ActionOutcome,
    ) -> ReplyDecision {
        let reply_text = match outcome {
            ActionOutcome::Succeeded(_) => format!("{} done", pending.action),
            ActionOutcome::Failed { .. } => format!("{} failed", pending.action),
        };
        ReplyDecision {
            intent: "order".into(),
            reply_text,
            policy: self.version().into(),
            slots_cleared: vec![],
            dialog: Slots::new(),
        }
    }
}

fn pipeline() -> Pipeline {
    Pipeline::new(Arc::new(BasicInputFilter), Arc::new(Orders))
}

fn uid() -> Uid {
    Uid::new("u1").unwrap()
}

fn id(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

/// Drives a flow, answering every ask with `answer`; the answer and the asks.
fn drive(
    flow: &mut TurnFlow,
    state: &mut Option<SessionState>,
    mut answer: impl FnMut(&Ask) -> TurnInput,
) -> (Option<TurnAnswer>, Vec<Ask>) {
    let choose = |_: Option<&str>| pipeline();
    let mut step = flow.start(1_000, state, &choose);
    let mut answers = vec![];
    let mut asks = vec![];
    loop {
        answers.extend(step.answer.take());
        let Some(next) = step.ask.take() else { break };
        let input = answer(&next);
        asks.push(next);
        step = flow.handle(1_000, state, &choose, input);
    }
    assert!(flow.is_over());
    assert!(answers.len() <= 1, "answered more than once: {answers:?}");
    (answers.pop(), asks)
}

/// Answers stages with their text unchanged, commits, actions and dead letters
/// as told.
fn world(commits: Vec<Committed>, action: ActionOutcome) -> impl FnMut(&Ask) -> TurnInput {
    let mut commits = commits.into_iter();
    move |ask| match ask {
        Ask::Stage { text, .. } => TurnInput::Staged(Ok(text.clone())),
        Ask::Commit { .. } => TurnInput::Committed(commits.next().unwrap_or(Committed::Ok)),
        Ask::Confirm { .. } => TurnInput::Confirmed {
            result: Committed::Ok,
            took_ms: 3,
        },
        Ask::RunAction { .. } => TurnInput::Acted(action.clone()),
        Ask::DeadLetter { .. } => TurnInput::DeadLettered(Ok(())),
        Ask::ReadEvent { .. } => TurnInput::Event(Ok(None)),
    }
}

fn commits(asks: &[Ask]) -> Vec<Vec<RecordedEvent>> {
    asks.iter()
        .filter_map(|a| match a {
            Ask::Commit { events } => Some(events.clone()),
            _ => None,
        })
        .collect()
}

fn ok() -> ActionOutcome {
    ActionOutcome::Succeeded(Slots::new())
}

#[test]
fn a_reply_turn_commits_three_events_and_answers_after_the_commit() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "hi".into());
    let (answer, asks) = drive(&mut flow, &mut state, world(vec![], ok()));
    let replied = answer.unwrap().unwrap();
    assert_eq!((replied.ack_seq, replied.reply_seq), (Seq(1), Seq(3)));
    assert_eq!(replied.text, "you said hi");
    assert!(!replied.duplicate);
    assert_eq!(commits(&asks).len(), 1);
    assert_eq!(state.unwrap().seq(), Seq(3));
}

#[test]
fn a_retried_message_id_gets_its_first_answer_and_nothing_runs_again() {
    let mut state = Some(SessionState::default());
    let mut first = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let (answer, _) = drive(&mut first, &mut state, world(vec![], ok()));
    let original = answer.unwrap().unwrap();
    let mut again = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let (answer, asks) = drive(&mut again, &mut state, world(vec![], ok()));
    let replied = answer.unwrap().unwrap();
    assert!(asks.is_empty(), "a duplicate asks for nothing: {asks:?}");
    assert!(replied.duplicate);
    assert_eq!(
        (replied.ack_seq, replied.text),
        (original.ack_seq, original.text)
    );
}

#[test]
fn an_action_turn_commits_its_request_before_the_action_runs_then_outcome_and_reply() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let (answer, asks) = drive(&mut flow, &mut state, world(vec![], ok()));
    let kinds: Vec<&str> = asks
        .iter()
        .map(|a| match a {
            Ask::Commit { .. } => "commit",
            Ask::Confirm { .. } => "confirm",
            Ask::RunAction { .. } => "action",
            Ask::Stage { .. } => "stage",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["stage", "commit", "confirm", "action", "stage", "commit"]
    );
    let Ask::RunAction { key, .. } = &asks[3] else {
        unreachable!()
    };
    assert_eq!(key, "u1:3", "the key is the uid and the request's seq");
    let replied = answer.unwrap().unwrap();
    assert_eq!((replied.ack_seq, replied.reply_seq), (Seq(1), Seq(5)));
    assert_eq!(replied.text, "lookup done");
    assert!(state.unwrap().pending_action().is_none());
}

#[test]
fn an_outcome_commit_that_fails_drops_memory_and_the_retry_runs_the_action_once_more() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let failed = Committed::Failed("timed out".into());
    let (answer, _) = drive(
        &mut flow,
        &mut state,
        world(vec![Committed::Ok, failed], ok()),
    );
    assert!(matches!(answer, Some(Err(TurnFailure::Unfinished(_)))));
    assert!(
        state.is_none(),
        "a commit of unknown outcome drops the memory"
    );

    // Reloaded from a log that has only the request: the action is pending.
    let mut log = SessionState::default();
    let mut probe = Some(SessionState::default());
    let mut f = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let (_, asks) = drive(&mut f, &mut probe, world(vec![], ok()));
    for event in &commits(&asks)[0] {
        log.apply(event).unwrap();
    }
    assert!(log.pending_action().is_some());
    let mut state = Some(log);
    let mut retry = TurnFlow::turn(uid(), Epoch(2), id("m1"), "order".into());
    let (answer, asks) = drive(&mut retry, &mut state, world(vec![], ok()));
    let runs = asks
        .iter()
        .filter(|a| matches!(a, Ask::RunAction { key, .. } if key == "u1:3"))
        .count();
    assert_eq!(runs, 1, "the pending action runs again under its key");
    assert_eq!(answer.unwrap().unwrap().text, "lookup done");
    assert_eq!(state.unwrap().seq(), Seq(5));
}

#[test]
fn a_failed_action_is_dead_lettered_before_its_failure_is_recorded() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let failed = ActionOutcome::Failed {
        reason: "503".into(),
        attempts: 3,
    };
    let (answer, asks) = drive(&mut flow, &mut state, world(vec![], failed.clone()));
    let dead = asks
        .iter()
        .position(|a| matches!(a, Ask::DeadLetter { attempts: 3, .. }))
        .expect("dead-lettered");
    let recorded = asks
        .iter()
        .rposition(|a| matches!(a, Ask::Commit { .. }))
        .unwrap();
    assert!(dead < recorded);
    assert_eq!(answer.unwrap().unwrap().text, "lookup failed");

    // The queue fails: nothing recorded, the turn stays open for its retry.
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let mut inner = world(vec![], failed);
    let (answer, asks) = drive(&mut flow, &mut state, |ask| match ask {
        Ask::DeadLetter { .. } => TurnInput::DeadLettered(Err("down".into())),
        other => inner(other),
    });
    assert!(matches!(answer, Some(Err(TurnFailure::Unfinished(_)))));
    assert_eq!(commits(&asks).len(), 1, "only the request was committed");
    assert!(state.unwrap().pending_action().is_some());
}

#[test]
fn a_refused_text_is_recorded_for_audit_and_refused() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "   ".into());
    let (answer, asks) = drive(&mut flow, &mut state, world(vec![], ok()));
    assert!(matches!(answer, Some(Err(TurnFailure::Rejected(_)))));
    let committed = commits(&asks);
    assert!(matches!(committed[0][0].event, Event::InputRejected { .. }));
}

#[test]
fn a_failing_stage_records_nothing_and_a_full_committer_keeps_memory() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "hi".into());
    let (answer, asks) = drive(&mut flow, &mut state, |ask| match ask {
        Ask::Stage { .. } => TurnInput::Staged(Err("stage down".into())),
        _ => TurnInput::Committed(Committed::Ok),
    });
    assert!(matches!(answer, Some(Err(TurnFailure::NotRecorded(_)))));
    assert!(commits(&asks).is_empty());

    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "hi".into());
    let (answer, _) = drive(
        &mut flow,
        &mut state,
        world(vec![Committed::NotTried("full".into())], ok()),
    );
    assert!(matches!(answer, Some(Err(TurnFailure::Overloaded(_)))));
    assert_eq!(state.as_ref().map(SessionState::seq), Some(Seq(0)));
}

#[test]
fn settling_a_session_with_nothing_pending_asks_and_answers_nothing() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::settle(uid(), Epoch(1));
    let (answer, asks) = drive(&mut flow, &mut state, world(vec![], ok()));
    assert!(answer.is_none() && asks.is_empty());
}

#[test]
fn a_stale_owner_never_runs_a_pending_action() {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let mut inner = world(vec![], ok());
    let (answer, asks) = drive(&mut flow, &mut state, |ask| match ask {
        Ask::Confirm { .. } => TurnInput::Confirmed {
            result: Committed::Fenced("epoch 2 owns it".into()),
            took_ms: 3,
        },
        other => inner(other),
    });
    assert!(matches!(answer, Some(Err(TurnFailure::Fenced(_)))));
    assert!(!asks.iter().any(|a| matches!(a, Ask::RunAction { .. })));
    assert!(state.is_none(), "a fenced owner drops the session");
}

/// Drives an action turn whose confirmations come back `late` ms after they
/// were asked (an owner paused between the store's answer and its use); every
/// other ask is answered at once. The answer and the asks.
fn drive_with_late_confirmations(late: &[u64]) -> (Option<TurnAnswer>, Vec<Ask>) {
    let mut state = Some(SessionState::default());
    let mut flow = TurnFlow::turn(uid(), Epoch(1), id("m1"), "order".into());
    let choose = |_: Option<&str>| pipeline();
    let mut inner = world(vec![], ok());
    let mut late = late.iter();
    let now = 1_000;
    let mut step = flow.start(now, &mut state, &choose);
    let (mut answer, mut asks) = (None, vec![]);
    loop {
        answer = answer.or(step.answer.take());
        let Some(next) = step.ask.take() else { break };
        let input = match next {
            Ask::Confirm { .. } => TurnInput::Confirmed {
                result: Committed::Ok,
                took_ms: late.next().copied().unwrap_or(0),
            },
            _ => inner(&next),
        };
        asks.push(next);
        step = flow.handle(now, &mut state, &choose, input);
    }
    (answer, asks)
}

#[test]
fn a_confirmation_that_comes_back_too_late_is_asked_again_before_the_action_runs() {
    let confirms = |asks: &[Ask]| {
        asks.iter()
            .filter(|a| matches!(a, Ask::Confirm { .. }))
            .count()
    };
    // One answer after a 3.2 s pause proves nothing now: asked again, then run.
    let (answer, asks) = drive_with_late_confirmations(&[3_200, 5]);
    assert_eq!(confirms(&asks), 2);
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    let run = asks
        .iter()
        .position(|a| matches!(a, Ask::RunAction { .. }))
        .unwrap();
    assert!(matches!(asks[run - 1], Ask::Confirm { .. }));
    // Just under the bound: good.
    let (_, asks) = drive_with_late_confirmations(&[CONFIRM_VALID_MS - 1]);
    assert_eq!(confirms(&asks), 1);
    // Late every time: given up after CONFIRM_TRIES, the action never run, the
    // client told to retry (the action stays pending).
    let late = [CONFIRM_VALID_MS; CONFIRM_TRIES as usize];
    let (answer, asks) = drive_with_late_confirmations(&late);
    assert_eq!(confirms(&asks), CONFIRM_TRIES as usize);
    assert!(!asks.iter().any(|a| matches!(a, Ask::RunAction { .. })));
    assert!(
        matches!(answer, Some(Err(TurnFailure::Unfinished(_)))),
        "{answer:?}"
    );
}
