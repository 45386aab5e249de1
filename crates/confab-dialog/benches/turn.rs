//! The CPU cost of one turn's pure work, with a baseline in the same run:
//! the shoe-shop pipeline against a pipeline whose stages do nothing, and the
//! session and snapshot operations every turn or passivation performs.
//!
//! `cargo bench -p confab-dialog --bench turn`
#![allow(missing_docs)]

use confab_core::ring::Ring;
use confab_core::session::{SessionState, Slots, Snapshot, SnapshotKey};
use confab_core::{Epoch, MessageId, NodeId, Uid};
use confab_dialog::{
    BasicInputFilter, DialogContext, Nlu, Pipeline, Policy, PolicyReply, Understanding,
};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

struct NoNlu;
impl Nlu for NoNlu {
    fn understand(&self, _: &str) -> Understanding {
        Understanding {
            intent: "unknown".into(),
            confidence: 0.0,
            slots: Slots::new(),
        }
    }
}

struct NoPolicy;
impl Policy for NoPolicy {
    fn version(&self) -> &str {
        "none"
    }
    fn decide(
        &self,
        _: DialogContext<'_>,
        text: &str,
        _: &Understanding,
        _: &Slots,
    ) -> PolicyReply {
        PolicyReply {
            intent: "unknown".into(),
            text: text.to_owned(),
        }
    }
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
    let slots = Slots::new();
    let ctx = DialogContext {
        slots: &slots,
        last_intent: Some("stock_query"),
    };
    let baseline = Pipeline::new(
        Box::new(BasicInputFilter),
        Box::new(NoNlu),
        Box::new(NoPolicy),
    );
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
    group.finish();
}

fn session(c: &mut Criterion) {
    let uid = Uid::new("bench-user").unwrap();
    let shop = Pipeline::shoe_shop();
    let mut state = SessionState::default();
    for i in 0..100 {
        let ctx = DialogContext {
            slots: state.slots(),
            last_intent: state.last_intent(),
        };
        let out = shop.run(ctx, TEXTS[i % TEXTS.len()]).unwrap();
        let events = state.record_turn(
            &uid,
            Epoch(1),
            0,
            MessageId::new(format!("m-{i}")).unwrap(),
            out.text,
            out.decision,
        );
        for e in &events {
            state.apply(e).unwrap();
        }
    }
    let out = shop
        .run(
            DialogContext {
                slots: state.slots(),
                last_intent: state.last_intent(),
            },
            "39码",
        )
        .unwrap();
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
                out.decision.clone(),
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

criterion_group!(benches, pipeline, session, ring);
criterion_main!(benches);
