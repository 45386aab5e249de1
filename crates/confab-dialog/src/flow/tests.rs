use super::*;
use crate::{Decision, Policy, TurnContext};
use confab_core::session::{ActionOutcome, DAY_MS, RecordedEvent, SessionState};
use confab_core::{Epoch, MessageId, Uid};

const LOTTERY: &str = r#"
[[intents]]
name = "draw"
keywords = ["抽奖"]

[slots.box]
type = "enum"
prompt = "which box?"
values = [{ value = "1" }, { value = "2" }]

[actions.pay]
kind = "http"
url = "http://127.0.0.1:1/pay"

[[steps]]
ask = "box"

[[steps]]
action = "pay"
args = ["box"]
daily_limit = 1
over_limit = "no more today ({limit.max})"

[[steps]]
branch = [{ when = { slot = "action.status", equals = "failed" }, reply = "sorry: {action.reason}" }]

[[steps]]
reply = "box {box}: {action.prize}"
clear = ["box"]
"#;

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.into(),
        text: text.into(),
    }
}

fn compile_one(text: &str) -> Result<PolicySet, FlowError> {
    PolicySet::compile(&[file("v1/flow.toml", text)])
}

fn error_of(text: &str) -> FlowError {
    compile_one(text).unwrap_err()
}

#[test]
fn errors_name_the_file_the_line_and_the_problem() {
    let syntax = error_of("[[intents]]\nname = \"x\"\nkeywords = [\"a\" \"b\"]\n");
    assert_eq!(
        (syntax.file.as_str(), syntax.line),
        ("v1/flow.toml", Some(3)),
        "{syntax}"
    );

    let unknown_key = error_of("[[intents]]\nname = \"x\"\nkeyword = [\"a\"]\n");
    assert_eq!(unknown_key.line, Some(3), "{unknown_key}");
    assert!(unknown_key.message.contains("keyword"), "{unknown_key}");

    let bad_regex =
        error_of("[[intents]]\nname = \"x\"\nregexes = ['(unclosed']\nreply = \"hi\"\n");
    assert_eq!(bad_regex.line, Some(3), "{bad_regex}");
    assert!(bad_regex.message.starts_with("bad regex"), "{bad_regex}");

    let unknown_slot = error_of(&LOTTERY.replace("ask = \"box\"", "ask = \"bux\""));
    assert!(
        unknown_slot.message.contains("unknown slot bux"),
        "{unknown_slot}"
    );
    // The line of the step's `[[steps]]` header.
    assert_eq!(unknown_slot.line, Some(15), "{unknown_slot}");

    let placeholder = error_of(&LOTTERY.replace("box {box}", "box {boxx}"));
    assert!(
        placeholder.message.contains("{boxx} names no slot"),
        "{placeholder}"
    );

    let no_action = error_of(&LOTTERY.replace("action = \"pay\"", "action = \"refund\""));
    assert!(
        no_action.message.contains("unknown action refund"),
        "{no_action}"
    );

    let rendered = format!("{bad_regex}");
    assert!(rendered.starts_with("v1/flow.toml:3:"), "{rendered}");
}

#[test]
fn a_flows_dir_must_hold_versions_and_only_flow_files() {
    let none = PolicySet::compile(&[file("filter.toml", "")]).unwrap_err();
    assert!(none.message.contains("no policy version"), "{none}");
    let stray = PolicySet::compile(&[file("v1/sub/x.toml", "")]).unwrap_err();
    assert!(stray.message.contains("not a flow file"), "{stray}");
    let dup = PolicySet::compile(&[
        file(
            "v1/a.toml",
            "[[intents]]\nname = \"hi\"\nkeywords = [\"hi\"]\nreply = \"a\"\n",
        ),
        file(
            "v1/b.toml",
            "[[intents]]\nname = \"hi\"\nkeywords = [\"yo\"]\nreply = \"b\"\n",
        ),
    ])
    .unwrap_err();
    assert_eq!(
        (dup.file.as_str(), dup.line),
        ("v1/b.toml", Some(2)),
        "{dup}"
    );
    let filter = PolicySet::compile(&[
        file("filter.toml", "[[block]]\nname = \"x\"\nregex = '('\n"),
        file("v1/a.toml", LOTTERY),
    ])
    .unwrap_err();
    assert_eq!(
        (filter.file.as_str(), filter.line),
        ("filter.toml", Some(3)),
        "{filter}"
    );
}

struct Session {
    uid: Uid,
    state: SessionState,
    log: Vec<RecordedEvent>,
    turns: u32,
}

impl Session {
    fn new() -> Self {
        Self {
            uid: Uid::new("10086").unwrap(),
            state: SessionState::default(),
            log: Vec::new(),
            turns: 0,
        }
    }

    fn apply(&mut self, events: &[RecordedEvent]) {
        for e in events {
            self.state.apply(e).unwrap();
            self.log.push(e.clone());
        }
    }

    /// One turn; an action gets `outcome`. Returns the reply text.
    fn say(
        &mut self,
        policy: &PolicyVersion,
        now_ms: u64,
        text: &str,
        outcome: ActionOutcome,
    ) -> String {
        self.turns += 1;
        let id = MessageId::new(format!("m-{}", self.turns)).unwrap();
        let ctx = TurnContext {
            state: &self.state,
            now_ms,
        };
        let understanding = policy.understand(ctx, text);
        match policy.decide(ctx, text, &understanding) {
            Decision::Reply(d) => {
                let reply = d.reply_text.clone();
                let events =
                    self.state
                        .record_turn(&self.uid, Epoch(1), now_ms, id, text.into(), d);
                self.apply(&events);
                reply
            }
            Decision::Action(a) => {
                let events =
                    self.state
                        .record_action_turn(&self.uid, Epoch(1), now_ms, id, text.into(), a);
                self.apply(&events);
                let pending = self.state.pending_action().unwrap().clone();
                let reply = policy.resume(
                    TurnContext {
                        state: &self.state,
                        now_ms,
                    },
                    &pending,
                    &outcome,
                );
                let done = self
                    .state
                    .record_action_outcome(&self.uid, Epoch(1), now_ms, outcome)
                    .unwrap();
                let text = reply.reply_text.clone();
                let reply = self
                    .state
                    .record_reply(&self.uid, Epoch(1), now_ms, done.seq, reply)
                    .unwrap();
                self.apply(&[done, reply]);
                text
            }
        }
    }
}

fn prize(name: &str) -> ActionOutcome {
    ActionOutcome::Succeeded([("prize".to_owned(), name.to_owned())].into())
}

#[test]
fn an_action_branches_on_its_outcome_and_the_daily_limit_resets_the_next_day() {
    let set = compile_one(LOTTERY).unwrap();
    let policy = set.version("v1").unwrap();
    let mut s = Session::new();
    let day = 20_000 * DAY_MS;
    assert_eq!(s.say(policy, day, "抽奖", prize("x")), "which box?");
    assert_eq!(
        s.say(policy, day, "2", prize("a coupon")),
        "box 2: a coupon"
    );
    // Past the limit the flow says so at once, before asking anything.
    assert_eq!(
        s.say(policy, day + 1, "抽奖", prize("x")),
        "no more today (1)"
    );
    let failed = ActionOutcome::Failed {
        reason: "prize service down".into(),
        attempts: 4,
    };
    assert_eq!(
        s.say(policy, day + DAY_MS, "抽奖", prize("x")),
        "which box?"
    );
    assert_eq!(
        s.say(policy, day + DAY_MS, "1", failed),
        "sorry: prize service down"
    );

    // The event-log property: replaying the log rebuilds the same state.
    let mut replayed = SessionState::default();
    for e in &s.log {
        replayed.apply(e).unwrap();
    }
    assert_eq!(replayed, s.state);
}

#[test]
fn a_pending_action_found_after_a_crash_resumes_where_the_flow_stood() {
    let set = compile_one(LOTTERY).unwrap();
    let policy = set.version("v1").unwrap();
    let mut s = Session::new();
    s.say(policy, 0, "抽奖", prize("x"));
    let ctx = TurnContext {
        state: &s.state,
        now_ms: 0,
    };
    let understanding = policy.understand(ctx, "2");
    let Decision::Action(action) = policy.decide(ctx, "2", &understanding) else {
        panic!("expected the action");
    };
    let id = MessageId::new("m-crash").unwrap();
    let events = s
        .state
        .record_action_turn(&s.uid, Epoch(1), 0, id, "2".into(), action);
    s.apply(&events);
    // Memory lost; the log read back by the next owner.
    let mut rebuilt = SessionState::default();
    for e in &s.log {
        rebuilt.apply(e).unwrap();
    }
    let pending = rebuilt.pending_action().unwrap().clone();
    assert_eq!(pending.args.get("box").map(String::as_str), Some("2"));
    let reply = policy.resume(
        TurnContext {
            state: &rebuilt,
            now_ms: 5,
        },
        &pending,
        &prize("socks"),
    );
    assert_eq!(reply.reply_text, "box 2: socks");
    assert!(reply.slots_cleared.contains(&"box".to_owned()));
}

proptest::proptest! {
    /// The event-log property, against the policy: a session rebuilt from its
    /// log before every turn (as after a crash or a move) decides exactly what a
    /// session kept in memory decides, event for event; and replaying the log
    /// rebuilds the same state.
    #[test]
    fn a_session_rebuilt_from_its_log_decides_what_it_would_have_in_memory(
        turns in proptest::collection::vec(
            (proptest::sample::select(vec!["抽奖", "1", "2", "3", "hello", "抽奖 2"]), proptest::bool::ANY, 0u64..3),
            1..30,
        )
    ) {
        let set = compile_one(LOTTERY).unwrap();
        let policy = set.version("v1").unwrap();
        let mut kept = Session::new();
        let mut rebuilt = Session::new();
        let mut now = 0;
        for (text, ok, days) in turns {
            now += days * DAY_MS / 2;
            let outcome = || if ok { prize("p") } else { ActionOutcome::Failed { reason: "down".into(), attempts: 1 } };
            let mut state = SessionState::default();
            for e in &rebuilt.log {
                state.apply(e).unwrap();
            }
            rebuilt.state = state;
            let a = kept.say(policy, now, text, outcome());
            let b = rebuilt.say(policy, now, text, outcome());
            proptest::prop_assert_eq!(a, b);
        }
        proptest::prop_assert_eq!(&kept.log, &rebuilt.log);
        let mut replayed = SessionState::default();
        for e in &kept.log {
            replayed.apply(e).unwrap();
        }
        proptest::prop_assert_eq!(replayed, kept.state);
    }
}

#[test]
fn a_confirmation_reads_the_answer_s_opening_word() {
    use super::engine::answers_with;
    assert!(answers_with("不，换一个", "不"));
    assert!(answers_with("“好的”", "好"));
    assert!(!answers_with("我不知道", "不"));
    assert!(answers_with("no thanks", "no"));
    assert!(!answers_with("nothing", "no"));
    assert!(!answers_with("i know", "no"));
}
