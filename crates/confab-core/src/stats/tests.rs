use super::*;
use crate::session::{Event, RecordedEvent, Slots};
use crate::{Epoch, MessageId, Seq, Uid};

fn recorded(seq: u64, event: Event) -> RecordedEvent {
    RecordedEvent {
        uid: Uid::new("zoe").unwrap(),
        seq: Seq(seq),
        at_ms: 0,
        epoch: Epoch(1),
        event,
    }
}

fn slots(names: &[&str]) -> Slots {
    names
        .iter()
        .map(|n| ((*n).to_owned(), "x".to_owned()))
        .collect()
}

/// The three events of one answered turn: received, understood, replied.
fn turn(first_seq: u64, intent: &str, filled: &[&str]) -> Vec<RecordedEvent> {
    vec![
        recorded(
            first_seq,
            Event::TurnReceived {
                message_id: MessageId::new("m-1").unwrap(),
                text: "hi".into(),
            },
        ),
        recorded(
            first_seq + 1,
            Event::NluResult {
                intent: intent.into(),
                confidence: 0.9,
                slots_filled: slots(filled),
            },
        ),
        recorded(
            first_seq + 2,
            Event::ReplyProduced {
                message_id: MessageId::new("m-1").unwrap(),
                text: "hello".into(),
                policy: "v1".into(),
                intent: intent.into(),
                slots: slots(filled),
                dialog: Slots::new(),
            },
        ),
    ]
}

#[test]
fn the_minute_window_counts_the_last_sixty_seconds_and_rolls_over() {
    let mut window = MinuteWindow::default();
    window.record(0, 1);
    window.record(999, 2);
    window.record(30_000, 4);
    assert_eq!(window.last_minute(30_500), 7);
    // 59.999 s: second 59, the window holds seconds 0..=59.
    assert_eq!(window.last_minute(59_999), 7);
    // Second 60: second 0 has left the window.
    assert_eq!(window.last_minute(60_000), 4);
    assert_eq!(window.last_minute(89_999), 4);
    assert_eq!(window.last_minute(90_000), 0);
    // A lap later the bucket of second 0 is reused for second 120: its old
    // count is dropped, not added.
    window.record(120_000, 8);
    assert_eq!(window.last_minute(120_000), 8);
    assert_eq!(window.last_minute(179_999), 8);
    assert_eq!(window.last_minute(180_000), 0);
}

#[test]
fn the_minute_window_ignores_seconds_after_now_and_survives_a_long_silence() {
    let mut window = MinuteWindow::default();
    window.record(10_000, 3);
    // Asked about an earlier time (a reader whose clock reading came first).
    assert_eq!(window.last_minute(9_999), 0);
    // Hours later every bucket is stale.
    assert_eq!(window.last_minute(3_600_000), 0);
    window.record(3_600_000, 1);
    assert_eq!(window.last_minute(3_600_000), 1);
}

#[test]
fn the_minute_window_counts_every_bucket_of_a_busy_minute() {
    let mut window = MinuteWindow::default();
    for second in 0..120u64 {
        window.record(second * 1000 + 500, second);
    }
    // Seconds 60..=119.
    assert_eq!(window.last_minute(119_500), (60..120).sum::<u64>());
}

#[test]
fn names_past_the_cap_go_to_other_and_known_names_keep_counting() {
    let mut counts = NameCounts::new(2);
    counts.add("greet", 1);
    counts.add("stock", 1);
    counts.add("order", 5);
    counts.add("greet", 2);
    counts.add("refund", 1);
    let named: Vec<(&str, u64)> = counts.iter().collect();
    assert_eq!(named, [("greet", 3), ("stock", 1)]);
    assert_eq!(counts.other(), 6);
    assert_eq!(counts.total(), 10);
    // A cap of zero keeps no name.
    let mut none = NameCounts::new(0);
    none.add("greet", 1);
    assert_eq!(none.iter().count(), 0);
    assert_eq!(none.other(), 1);
}

#[test]
fn long_names_are_cut_at_a_character_boundary() {
    let mut counts = NameCounts::new(4);
    let long = "意".repeat(NAME_BYTES_MAX); // 3 bytes each
    counts.add(&long, 1);
    counts.add(&format!("{long}图"), 1);
    let named: Vec<(&str, u64)> = counts.iter().collect();
    assert_eq!(named.len(), 1, "both cut to the same name");
    assert!(named[0].0.len() <= NAME_BYTES_MAX);
    assert_eq!(named[0].0.len(), NAME_BYTES_MAX / 3 * 3);
    assert_eq!(named[0].1, 2);
}

#[test]
fn a_commit_counts_its_replies_intents_and_filled_slots() {
    let events = turn(1, "ask_stock", &["colour", "size"]);
    let counted = Counted::of(&events);
    assert_eq!(counted.intents, ["ask_stock"]);
    assert_eq!(counted.slot_fills, ["colour", "size"]);

    let mut stats = TurnStats::new(8);
    stats.add(1_000, &counted);
    stats.add(2_000, &Counted::of(&turn(4, "ask_stock", &["size"])));
    stats.add(3_000, &Counted::of(&turn(7, "greet", &[])));
    assert_eq!(stats.turns_total(), 3);
    assert_eq!(stats.turns_last_minute(3_000), 3);
    assert_eq!(stats.turns_last_minute(61_500), 2);
    let intents: Vec<(&str, u64)> = stats.intents().iter().collect();
    assert_eq!(intents, [("ask_stock", 2), ("greet", 1)]);
    let slots: Vec<(&str, u64)> = stats.slot_fills().iter().collect();
    assert_eq!(slots, [("colour", 1), ("size", 2)]);
}

#[test]
fn an_action_turn_counts_its_fills_at_the_request_and_its_turn_at_the_reply() {
    // The first commit of an action turn: received, understood, requested.
    let mut first = turn(1, "order_status", &["order_id"]);
    first[2] = recorded(
        3,
        Event::ActionRequested {
            action: "order_lookup".into(),
            args: slots(&["order_id"]),
            policy: "v1".into(),
            dialog: Slots::new(),
        },
    );
    let counted = Counted::of(&first);
    assert!(counted.intents.is_empty(), "no reply yet: {counted:?}");
    assert_eq!(counted.slot_fills, ["order_id"]);
    let mut stats = TurnStats::new(8);
    stats.add(0, &counted);
    assert_eq!(stats.turns_total(), 0);
    // The second: the outcome and the reply.
    let reply = turn(4, "order_status", &[]).pop().unwrap();
    stats.add(0, &Counted::of(&[reply]));
    assert_eq!(stats.turns_total(), 1);
    assert_eq!(stats.slot_fills().total(), 1);
}

#[test]
fn events_that_answer_nothing_count_nothing() {
    let rejected = recorded(
        1,
        Event::InputRejected {
            message_id: MessageId::new("m-1").unwrap(),
            reason: "filter".into(),
            text: "x".into(),
        },
    );
    assert!(Counted::of(&[rejected]).is_empty());
    assert!(Counted::of(&[]).is_empty());
}
