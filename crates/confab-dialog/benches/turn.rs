//! The CPU cost of one turn's pure work, with a baseline in the same run:
//! the shoe-shop pipeline and the config flows (`config/flows/v1`) against a
//! pipeline whose stages do nothing, and the session and snapshot operations
//! every turn or passivation performs.
//!
//! `cargo bench -p confab-dialog --bench turn`
#![allow(missing_docs)]

use confab_core::ring::Ring;
use confab_core::session::{
    ActionOutcome, PendingAction, ReplyDecision, SessionState, Slots, Snapshot, SnapshotKey,
    TurnDecision,
};
use confab_core::{Epoch, MessageId, NodeId, Uid};
use confab_dialog::flow::{PolicySet, SourceFile};
use confab_dialog::{BasicInputFilter, Decision, Pipeline, Policy, TurnContext, Understanding};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

/// Stages that do nothing: the floor.
struct NoPolicy;
impl Policy for NoPolicy {
    fn version(&self) -> &str {
        "none"
    }
    fn understand(&self, _: TurnContext<'_>, _: &str) -> Understanding {
        Understanding {
            intent: "unknown".into(),
            confidence: 0.0,
            slots: Slots::new(),
            refused: Slots::new(),
        }
    }
    fn decide(&self, _: TurnContext<'_>, text: &str, _: &Understanding) -> Decision {
        Decision::Reply(TurnDecision {
            intent: "unknown".into(),
            confidence: 0.0,
            slots_filled: Slots::new(),
            slots_cleared: Vec::new(),
            reply_text: text.to_owned(),
            policy: "none".into(),
            dialog: Slots::new(),
        })
    }
    fn resume(&self, _: TurnContext<'_>, _: &PendingAction, _: &ActionOutcome) -> ReplyDecision {
        unreachable!("calls no action")
    }
}

/// The shipped flows, read from `config/flows`.
fn flows() -> Pipeline {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/flows");
    let mut files = Vec::new();
    for sub in ["", "v1/"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(SourceFile {
                    path: format!("{sub}{}", path.file_name().unwrap().to_str().unwrap()),
                    text: std::fs::read_to_string(&path).unwrap(),
                });
            }
        }
    }
    let set = PolicySet::compile(&files).unwrap();
    Pipeline::new(
        Arc::clone(set.filter()) as _,
        Arc::clone(set.version("v1").unwrap()) as _,
    )
}

const TEXTS: &[&str] = &[
    "这款鞋有货吗？",
    "39码",
    "黑色",
    "订单号 SO20261124",
    "请回电 13812345678",
];

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    let state = SessionState::default();
    let ctx = TurnContext {
        state: &state,
        now_ms: 0,
    };
    let baseline = Pipeline::new(Arc::new(BasicInputFilter), Arc::new(NoPolicy));
    group.bench_function("baseline: stages that do nothing", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(baseline.run(ctx, TEXTS[i % TEXTS.len()]).unwrap())
        });
    });
    let shop = Pipeline::shoe_shop();
    group.bench_function("shoe shop", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(shop.run(ctx, TEXTS[i % TEXTS.len()]).unwrap())
        });
    });
    let flows = flows();
    group.bench_function("config flows v1", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(flows.run(ctx, TEXTS[i % TEXTS.len()]).unwrap())
        });
    });
    group.finish();
}

fn session(c: &mut Criterion) {
    let uid = Uid::new("bench-user").unwrap();
    let shop = Pipeline::shoe_shop();
    let mut state = SessionState::default();
    for i in 0..100 {
        let ctx = TurnContext {
            state: &state,
            now_ms: 0,
        };
        let out = shop.run(ctx, TEXTS[i % TEXTS.len()]).unwrap();
        let Decision::Reply(decision) = out.decision else {
            unreachable!("the shoe shop calls no action")
        };
        let events = state.record_turn(
            &uid,
            Epoch(1),
            0,
            MessageId::new(format!("m-{i}")).unwrap(),
            out.text,
            decision,
        );
        for e in &events {
            state.apply(e).unwrap();
        }
    }
    let out = shop
        .run(
            TurnContext {
                state: &state,
                now_ms: 0,
            },
            "39码",
        )
        .unwrap();
    let Decision::Reply(decision) = out.decision else {
        unreachable!("the shoe shop calls no action")
    };
    let id = MessageId::new("next").unwrap();
    c.bench_function("session: record and apply one turn", |b| {
        b.iter(|| {
            let mut next = state.clone();
            let events = next.record_turn(
                &uid,
                Epoch(1),
                0,
                id.clone(),
                out.text.clone(),
                decision.clone(),
            );
            for e in &events {
                next.apply(e).unwrap();
            }
            black_box(next)
        });
    });
    c.bench_function(
        "session: clone the state (the baseline of the above)",
        |b| {
            b.iter(|| black_box(state.clone()));
        },
    );
    let key = SnapshotKey::new(vec![7; 32]).unwrap();
    let snapshot = Snapshot::new(uid.clone(), 0, Epoch(1), state.clone());
    let bytes = snapshot.encode(&key);
    c.bench_function("snapshot: encode and sign (100 turns of state)", |b| {
        b.iter(|| black_box(snapshot.encode(&key)));
    });
    c.bench_function("snapshot: verify and decode", |b| {
        b.iter(|| black_box(Snapshot::decode(&bytes, &key).unwrap()));
    });
    // The baseline: the body as JSON, as snapshots were written before the
    // binary body (no MAC: the body's own cost).
    let json = serde_json::to_vec(&snapshot).unwrap();
    c.bench_function("snapshot: JSON body alone, encode (baseline)", |b| {
        b.iter(|| black_box(serde_json::to_vec(&snapshot).unwrap()));
    });
    c.bench_function("snapshot: JSON body alone, decode (baseline)", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Snapshot>(&json).unwrap()));
    });
    // The binary body alone: the codec's bytes between the 6-byte header and the
    // 32-byte MAC, less the body's 1-byte marker.
    let body = &bytes[7..bytes.len() - 32];
    c.bench_function("snapshot: binary body alone, encode", |b| {
        b.iter(|| black_box(postcard::to_allocvec(&snapshot).unwrap()));
    });
    c.bench_function("snapshot: binary body alone, decode", |b| {
        b.iter(|| black_box(postcard::from_bytes::<Snapshot>(body).unwrap()));
    });
    println!(
        "snapshot body bytes: JSON {}, binary {}",
        json.len(),
        body.len() + 1
    );
}

fn ring(c: &mut Criterion) {
    let nodes: Vec<NodeId> = (1..=5)
        .map(|i| NodeId::new(format!("node-{i}")).unwrap())
        .collect();
    let ring = Ring::new(Epoch(1), nodes.clone());
    let uids: Vec<Uid> = (0..1000)
        .map(|i| Uid::new(format!("user-{i}")).unwrap())
        .collect();
    c.bench_function("ring: owner of a uid (5 nodes, 160 vnodes)", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(ring.owner(&uids[i % uids.len()]))
        });
    });
    c.bench_function("ring: build (5 nodes)", |b| {
        b.iter(|| black_box(Ring::new(Epoch(2), nodes.clone())));
    });
}

/// A join's ring change on one old owner, as the rebalance bench makes it:
/// 100,000 sessions over 3 nodes, a 4th joins. The supervisor runs both steps
/// while every turn of its node waits in its mailbox.
fn ring_change(c: &mut Criterion) {
    use confab_core::handoff::{HandoffConfig, Node};
    let id = |n: u32| NodeId::new(format!("node-{n}")).unwrap();
    let before = Ring::new(Epoch(3), (1..=3).map(id));
    let after = Ring::new(Epoch(4), (1..=4).map(id));
    let config = HandoffConfig {
        resident_max: 100_000,
        ..HandoffConfig::default()
    };
    let mut node: Node<()> = Node::new(id(1), config);
    let mut resident = 0;
    for i in 0..100_000u64 {
        let uid = Uid::new(format!("bench-user-{i}")).unwrap();
        if before.owner(&uid) == Some(&id(1)) {
            let _ = node.admit(i, &before, &uid, 0);
            resident += 1;
        }
    }
    let moving = node
        .announce(&after, |_| true)
        .iter()
        .map(|e| e.uids.len())
        .sum::<usize>();
    c.bench_function(
        &format!("handoff: announce a ring change ({resident} resident, {moving} move)"),
        |b| b.iter(|| black_box(node.announce(&after, |_| true))),
    );
    c.bench_function(
        &format!("handoff: adopt a ring change ({resident} resident, {moving} move)"),
        |b| {
            b.iter_batched(
                || node.clone(),
                |mut node| black_box(node.adopt(&after, |_| true, |_| 0)),
                criterion::BatchSize::LargeInput,
            )
        },
    );
}

criterion_group!(benches, pipeline, session, ring, ring_change);
criterion_main!(benches);
