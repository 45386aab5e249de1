//! Every metric a node exports: its kind, its `# HELP` text, its histogram
//! buckets, and the label values it shows at zero from the start (a counter
//! that appears only after its first increment breaks `rate()` and alerts).

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    /// A Prometheus histogram with these bucket bounds.
    Histogram(&'static [f64]),
}

/// One metric.
#[derive(Debug)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) help: &'static str,
    /// Label sets shown at 0 before anything happened.
    pub(crate) zero: &'static [&'static [(&'static str, &'static str)]],
}

/// Turn and commit latency: 0.5 ms to 5 s.
const LATENCY: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
/// A migration, from the ring change to the state on its new owner: 1 ms to
/// 30 s (the target is well under 2 s; a slow one must still land in a bucket).
const MIGRATION: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
/// Events per group commit.
const BATCH: &[f64] = &[1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0];

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
        zero: &[&[]],
    }
}

const fn labelled(
    name: &'static str,
    help: &'static str,
    zero: &'static [&'static [(&'static str, &'static str)]],
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
        zero,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
        zero: &[&[]],
    }
}

const fn histogram(name: &'static str, buckets: &'static [f64], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram(buckets),
        help,
        zero: &[&[]],
    }
}

/// Every `confab_*` metric. `docs/operations.md` lists the same.
pub(crate) const METRICS: &[Metric] = &[
    labelled(
        "confab_turns_total",
        "Turns answered, by outcome: ok, duplicate (a retried message id), overloaded, rate_limited, unavailable, rejected, too_large, internal.",
        &[
            &[("outcome", "ok")],
            &[("outcome", "duplicate")],
            &[("outcome", "overloaded")],
            &[("outcome", "rate_limited")],
            &[("outcome", "unavailable")],
            &[("outcome", "rejected")],
            &[("outcome", "internal")],
        ],
    ),
    histogram(
        "confab_turn_latency_seconds",
        LATENCY,
        "Time from a turn's arrival at this node to its answer, forwarding to the owner included.",
    ),
    labelled(
        "confab_intents_total",
        "Turns answered, by the intent the dialog matched and the policy version that served them.",
        &[],
    ),
    gauge(
        "confab_mailbox_depth",
        "Turns admitted on this node and not yet answered: the backlog.",
    ),
    gauge(
        "confab_admission_limit",
        "Turns this node lets be in flight now: adapted so that no queue stands longer than gateway.admission_latency_target_ms; a turn past it is answered overloaded at once.",
    ),
    gauge(
        "confab_sessions_resident",
        "Sessions held in this node's memory.",
    ),
    gauge("confab_ws_connections", "Open WebSocket connections."),
    gauge(
        "confab_http_connections",
        "Open TCP connections to the HTTP port, WebSocket or not.",
    ),
    labelled(
        "confab_connections_refused_total",
        "Connections answered 503 before the upgrade, by the limit they hit.",
        &[
            &[("reason", "max_connections")],
            &[("reason", "max_connections_per_ip")],
        ],
    ),
    labelled(
        "confab_store_requests_total",
        "Store requests by tier (redis, mysql, sqlite), operation and result (hit, miss, error, ok).",
        &[],
    ),
    labelled(
        "confab_store_bypass_total",
        "Requests that skipped Redis because it failed or was too slow, and went to the durable tier.",
        &[],
    ),
    labelled(
        "confab_migrations_total",
        "Sessions this node handed to another owner, by reason: ring_change or drain.",
        &[&[("reason", "ring_change")], &[("reason", "drain")]],
    ),
    Metric {
        name: "confab_migration_seconds",
        kind: Kind::Histogram(MIGRATION),
        help: "Time from the ring change to a moved session's state being taken by its new owner.",
        zero: &[&[("reason", "ring_change")], &[("reason", "drain")]],
    },
    labelled(
        "confab_handoffs_total",
        "Sessions this node took over, by where their state came from: old_owner or durable_tier.",
        &[
            &[("state_from", "old_owner")],
            &[("state_from", "durable_tier")],
        ],
    ),
    gauge(
        "confab_ring_epoch",
        "The epoch of the ring this node routes by.",
    ),
    gauge(
        "confab_ring_members",
        "Members on the ring this node routes by.",
    ),
    gauge(
        "confab_dlq_depth",
        "Actions in the dead-letter queue, waiting for a replay.",
    ),
    counter(
        "confab_dlq_entries_total",
        "Actions put in the dead-letter queue after their last retry failed.",
    ),
    labelled(
        "confab_action_attempts_total",
        "Calls of a flow's HTTP actions, by result.",
        &[&[("result", "ok")], &[("result", "error")]],
    ),
    counter(
        "confab_actions_resumed_total",
        "Actions started before a crash or move and run again by the session's next owner.",
    ),
    labelled(
        "confab_stage_calls_total",
        "Calls of external dialog stages, by stage and result.",
        &[],
    ),
    counter(
        "confab_snapshot_checksum_failures_total",
        "Snapshots refused (a checksum that did not match, an unknown format, a body this build cannot read): they were ignored and the session rebuilt from its events.",
    ),
    counter("confab_snapshot_writes_total", "Snapshots written."),
    counter(
        "confab_snapshots_deferred_total",
        "Snapshots put off because the store was busy.",
    ),
    counter(
        "confab_snapshots_reencrypted_total",
        "Stored snapshots sealed again under the newest data-key version.",
    ),
    gauge(
        "confab_data_key_version",
        "The data-key version this node seals new writes with.",
    ),
    counter(
        "confab_turns_abandoned_total",
        "Turns a session reached after their caller had stopped waiting (timed out here, or the forwarding node's budget spent): not run, nothing recorded.",
    ),
    counter(
        "confab_commit_retries_total",
        "Group commits retried after a store error.",
    ),
    counter(
        "confab_commit_lane_full_total",
        "Turns answered overloaded because their database server's commit lane was full.",
    ),
    histogram(
        "confab_commit_seconds",
        LATENCY,
        "Time one group commit of events took in the durable store.",
    ),
    Metric {
        name: "confab_commit_batch_events",
        kind: Kind::Histogram(BATCH),
        help: "Events written per group commit.",
        zero: &[&[]],
    },
    labelled(
        "confab_sessions_fenced_total",
        "Sessions that stopped because another node fenced them (a newer owner took over).",
        &[],
    ),
    counter(
        "confab_session_restarts_total",
        "Session actors restarted by their supervisor after a failure.",
    ),
    labelled(
        "confab_inputs_rejected_total",
        "User texts the input filter refused.",
        &[],
    ),
    labelled(
        "confab_policy_reloads_total",
        "Reloads of the dialog flows, by result: ok or refused (the previous policy kept serving).",
        &[&[("result", "ok")], &[("result", "refused")]],
    ),
    labelled(
        "confab_invariant_violations_total",
        "Broken runtime invariants, by invariant (a bug): each one is also logged.",
        &[
            &[("invariant", "log-applies")],
            &[("invariant", "served-loaded")],
            &[("invariant", "claim-on-ring")],
            &[("invariant", "turns-conserved")],
        ],
    ),
    counter(
        "confab_admin_unauthenticated_total",
        "Admin API requests without a valid admin token.",
    ),
    counter(
        "confab_audit_failures_total",
        "Admin actions whose audit record could not be written.",
    ),
    Metric {
        name: "confab_build_info",
        kind: Kind::Gauge,
        help: "The running build: always 1, labelled with the version.",
        zero: &[],
    },
];

/// Describes every metric to the recorder and shows the zero series.
pub(crate) fn publish() {
    for metric in METRICS {
        let help = metric.help;
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, help),
            Kind::Histogram(_) => metrics::describe_histogram!(metric.name, help),
        }
        for labels in metric.zero {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|&(k, v)| metrics::Label::new(k, v))
                .collect();
            match metric.kind {
                Kind::Counter => metrics::counter!(metric.name, labels).increment(0),
                // Adding 0 shows the series without overwriting a value set first.
                Kind::Gauge => metrics::gauge!(metric.name, labels).increment(0.0),
                // Registered: shown with empty buckets until the first sample,
                // so that a dashboard or an alert finds the series from the start.
                Kind::Histogram(_) => {
                    let _registered = metrics::histogram!(metric.name, labels);
                }
            }
        }
    }
    metrics::gauge!("confab_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
