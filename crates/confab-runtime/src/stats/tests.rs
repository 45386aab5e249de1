use super::*;

fn counts(pairs: &[(&str, u64)]) -> Vec<NameCount> {
    ranked(pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)))
}

fn node(
    id: &str,
    resident: u64,
    minute: u64,
    intents: &[(&str, u64)],
    slots: &[(&str, u64)],
) -> NodeStats {
    NodeStats {
        node: id.to_owned(),
        sessions_resident: resident,
        turns_last_minute: minute,
        turns_total: intents.iter().map(|(_, c)| c).sum(),
        intents: counts(intents),
        intents_other: 0,
        slot_fills: counts(slots),
        slot_fills_other: 0,
        names_max: 64,
        since_ms: 0,
    }
}

fn answer(id: &str, stats: Result<NodeStats, String>) -> MemberAnswer {
    MemberAnswer {
        id: id.to_owned(),
        status: "up".to_owned(),
        stats,
    }
}

#[test]
fn members_are_added_up_and_every_list_is_sorted() {
    let answers = vec![
        answer(
            "node-2",
            Ok(node(
                "node-2",
                5,
                3,
                &[("greet", 2), ("ask_stock", 1)],
                &[("size", 1)],
            )),
        ),
        answer(
            "node-1",
            Ok(node(
                "node-1",
                7,
                4,
                &[("ask_stock", 3), ("greet", 1)],
                &[("size", 2), ("colour", 3)],
            )),
        ),
    ];
    let stats = merge("node-1", 4, Duration::from_millis(500), 64, answers.clone());
    let ids: Vec<&str> = stats.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-1", "node-2"]);
    assert_eq!(stats.sessions_resident, 12);
    assert_eq!(stats.turns_last_minute, 7);
    assert_eq!(stats.turns_total, 7);
    assert_eq!((stats.ring_epoch, stats.deadline_ms), (4, 500));
    assert!(stats.unreachable.is_empty());
    let intents: Vec<(&str, u64)> = stats
        .intents
        .iter()
        .map(|i| (i.name.as_str(), i.count))
        .collect();
    // Most first; ties by name.
    assert_eq!(intents, [("ask_stock", 4), ("greet", 3)]);
    assert!((stats.intents[0].share - 4.0 / 7.0).abs() < 1e-12);
    let slots: Vec<(&str, u64)> = stats
        .slot_fills
        .iter()
        .map(|s| (s.name.as_str(), s.fills))
        .collect();
    assert_eq!(slots, [("colour", 3), ("size", 3)]);
    assert!((stats.slot_fills[0].per_turn - 3.0 / 7.0).abs() < 1e-12);
    // The same answers in another order: the same result.
    let mut reversed = answers;
    reversed.reverse();
    assert_eq!(
        merge("node-1", 4, Duration::from_millis(500), 64, reversed),
        stats
    );
}

#[test]
fn a_member_that_did_not_answer_is_listed_and_left_out_of_the_totals() {
    let answers = vec![
        answer("node-1", Ok(node("node-1", 7, 4, &[("greet", 4)], &[]))),
        answer("node-3", Err("no answer within 500 ms".to_owned())),
        answer("node-2", Ok(node("node-2", 5, 3, &[("greet", 3)], &[]))),
    ];
    let stats = merge("node-1", 4, Duration::from_millis(500), 64, answers);
    assert_eq!(stats.unreachable, ["node-3"]);
    assert_eq!(stats.nodes.len(), 3, "listed, not dropped");
    let lost = &stats.nodes[2];
    assert_eq!(lost.id, "node-3");
    assert!(!lost.reachable);
    assert_eq!(lost.error.as_deref(), Some("no answer within 500 ms"));
    assert_eq!(lost.sessions_resident, None);
    assert_eq!(stats.sessions_resident, 12);
    assert_eq!(stats.turns_total, 7);
}

#[test]
fn names_past_the_cluster_cap_go_to_other_with_the_members_other() {
    let mut first = node("node-1", 1, 0, &[("a", 5), ("b", 1)], &[("x", 2)]);
    first.intents_other = 2;
    first.turns_total += 2;
    let second = node("node-2", 1, 0, &[("c", 3), ("b", 1)], &[("y", 1), ("z", 1)]);
    let stats = merge(
        "node-1",
        1,
        DEADLINE_DEFAULT,
        2,
        vec![answer("node-1", Ok(first)), answer("node-2", Ok(second))],
    );
    let intents: Vec<(&str, u64)> = stats
        .intents
        .iter()
        .map(|i| (i.name.as_str(), i.count))
        .collect();
    assert_eq!(intents, [("a", 5), ("c", 3)]);
    // b's 2 cut here, and node-1's own 2.
    assert_eq!(stats.intents_other, 4);
    let shares: f64 = stats.intents.iter().map(|i| i.share).sum();
    assert!((shares - 8.0 / 12.0).abs() < 1e-12, "{shares}");
    let slots: Vec<&str> = stats.slot_fills.iter().map(|s| s.name.as_str()).collect();
    // y and z tie at 1: the first by name stays.
    assert_eq!(slots, ["x", "y"]);
    assert_eq!(stats.slot_fills_other, 1);
}

#[test]
fn nothing_counted_gives_zero_shares_not_nan() {
    let stats = merge(
        "node-1",
        1,
        DEADLINE_DEFAULT,
        8,
        vec![answer("node-1", Ok(node("node-1", 0, 0, &[], &[])))],
    );
    assert!(stats.intents.is_empty());
    assert_eq!(ratio(0, 0), 0.0);
    assert_eq!(stats.turns_total, 0);
}

#[test]
fn a_node_view_ranks_its_names_and_counts_only_confirmed_turns() {
    let cell = StatsCell::new(2);
    let counted = Counted {
        intents: vec![
            "greet".into(),
            "ask_stock".into(),
            "ask_stock".into(),
            "refund".into(),
        ],
        slot_fills: vec!["size".into()],
    };
    cell.add(&counted);
    cell.add(&Counted::default());
    let view = cell.view(&NodeId::new("node-1").unwrap(), 9);
    assert_eq!(view.sessions_resident, 9);
    assert_eq!(view.turns_total, 4);
    assert_eq!(view.turns_last_minute, 4);
    assert_eq!(view.intents, counts(&[("ask_stock", 2), ("greet", 1)]));
    assert_eq!(view.intents_other, 1);
    assert_eq!(view.slot_fills, counts(&[("size", 1)]));
    assert_eq!(view.names_max, 2);
}
