//! The admin API under `/admin/v1/`: JSON for tokens with scope `admin`, what
//! `confabctl` talks to. The bodies are `confab_proto::admin`'s; every error is
//! a status of 400 or more with an [`AdminError`] body. `docs/operations.md`
//! lists the endpoints.

// Handlers fail with axum's `Response`, as axum intends; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use crate::Gateway;
use crate::auth::AuthError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use confab_core::{NodeId, Uid};
use confab_proto::admin::{
    AdminError, AuditList, AuditView, CanarySet, DlqEntryBody, DlqList, DlqReplay,
    DlqReplayOutcome, DlqReplayReport, DrainView, KeyChange, KeyVersionView, KeysStatus,
    MemberView, NodeStatus, NodesView, ReloadReport, RemovalView, RingView, SessionLocation,
    VNodeView,
};
use confab_runtime::TurnError;
use confab_runtime::dialog::DialogError;
use confab_store::DeadLetter;
use serde::Deserialize;

/// Entries listed per `GET /admin/v1/dlq`, at most.
pub const DLQ_LIST_MAX: usize = 1000;
/// Entries replayed per `dlq replay --all` request, at most; run it again for
/// more (each replay runs an action with all its retries).
pub const DLQ_REPLAY_ALL_MAX: usize = 100;

/// The admin routes, to nest under [`confab_proto::admin::ADMIN_PREFIX`].
pub(crate) fn routes() -> axum::Router<Gateway> {
    axum::Router::new()
        .route("/status", get(status))
        .route("/policy", get(policy))
        .route("/policy/reload", post(reload))
        .route("/canary", get(canary).put(set_canary))
        .route("/canary/rollback", post(rollback))
        .route("/canary/promote", post(promote))
        .route("/dlq", get(dlq_list))
        .route("/dlq/replay", post(dlq_replay))
        .route("/sessions/{uid}", get(session_show))
        .route("/sessions/{uid}/locate", get(session_locate))
        .route("/ring", get(ring))
        .route("/nodes", get(nodes))
        .route("/nodes/{id}", delete(remove_node))
        .route("/nodes/{id}/drain", get(drain_progress).post(drain))
        .route("/audit", get(audit_list))
        .route("/keys", get(keys_status))
        .route("/keys/rotate", post(keys_rotate))
        .route("/keys/{version}/retire", post(keys_retire))
        .route("/stats", get(cluster_stats))
        .route("/stats/local", get(local_stats))
        .fallback(not_found)
}

type AdminResult<T> = Result<Json<T>, Response>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(AdminError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// A layer on every admin route: the token is checked before anything else
/// (a bad query or body of an unauthenticated caller gets 401, not 400).
pub(crate) async fn require_admin(
    State(gw): State<Gateway>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&gw, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// How long recording an admin action may hold up its answer.
const AUDIT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest error body read back for the audit record.
const AUDIT_BODY_BYTES_MAX: usize = 64 * 1024;

/// A layer outside every admin route: each action (any request but a read:
/// GET and HEAD) by a valid token is recorded in the audit log with who asked,
/// what, when and what came of it, refused ones included (a chat token's 403),
/// before the answer goes out. A request without a valid token is counted in
/// `confab_admin_unauthenticated_total` instead.
pub(crate) async fn audit(
    State(gw): State<Gateway>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return next.run(request).await;
    }
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
    let who = crate::ws::bearer(request.headers())
        .and_then(|token| gw.auth.verify(token).ok())
        .map(|caller| caller.uid.to_string());
    let Some(who) = who else {
        // No valid token: refused (401) before anything is done. Counted, not
        // written: a row per anonymous request would let anyone grow the table
        // and load the store's writer.
        let response = next.run(request).await;
        metrics::counter!("confab_admin_unauthenticated_total").increment(1);
        tracing::debug!(%method, %path, status = %response.status(), "admin request without a valid token");
        return response;
    };
    let response = next.run(request).await;
    let status = response.status();
    let (response, result) = if status.is_success() {
        (response, "ok".to_owned())
    } else {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, AUDIT_BODY_BYTES_MAX)
            .await
            .unwrap_or_default();
        let result = serde_json::from_slice::<AdminError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| status.to_string());
        (
            Response::from_parts(parts, axum::body::Body::from(bytes)),
            result,
        )
    };
    let entry = confab_store::audit::AuditEntry {
        id: 0,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        who,
        node: gw.runtime.node_id().to_string(),
        action: format!("{method} {path}"),
        status: status.as_u16(),
        result,
    };
    let recorded =
        tokio::time::timeout(AUDIT_WRITE_TIMEOUT, gw.runtime.store().audit(&entry)).await;
    let failure = match recorded {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {AUDIT_WRITE_TIMEOUT:?}")),
    };
    if let Some(e) = failure {
        metrics::counter!("confab_audit_failures_total").increment(1);
        tracing::error!(error = %e, action = %entry.action, who = %entry.who, "admin action not recorded in the audit log");
    }
    response
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit_list(
    State(gw): State<Gateway>,
    Query(query): Query<AuditQuery>,
) -> AdminResult<AuditList> {
    let limit = query
        .limit
        .unwrap_or(100)
        .min(confab_store::audit::LIST_MAX);
    let entries = gw
        .runtime
        .store()
        .audit_entries(limit)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at_ms: e.at_ms,
                who: e.who,
                node: e.node,
                action: e.action,
                status: e.status,
                result: e.result,
            })
            .collect(),
    }))
}

/// The caller must hold an `admin` token.
fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = crate::ws::bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "no token: send `Authorization: Bearer <jwt>` with a token of scope admin \
             (`confabctl --token` or CONFAB_TOKEN)",
        ));
    };
    match gw.auth.verify_scope(token, "admin") {
        Ok(_) => Ok(()),
        Err(e @ AuthError::MissingScope(_)) => Err(error(StatusCode::FORBIDDEN, e.to_string())),
        Err(e) => Err(error(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

/// A body that is not the JSON asked for: 413 when it is over the size limit
/// (axum's, 2 MiB), 415 without a JSON content type, 400 otherwise.
fn json_rejection(e: &axum::extract::rejection::JsonRejection) -> Response {
    let status = e.status();
    let status = if status == StatusCode::PAYLOAD_TOO_LARGE
        || status == StatusCode::UNSUPPORTED_MEDIA_TYPE
    {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, e.body_text())
}

fn dialog_error(e: &DialogError) -> Response {
    let status = match e {
        DialogError::Rollout(_) | DialogError::Fixed => StatusCode::BAD_REQUEST,
        DialogError::Flows(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DialogError::Store(_) | DialogError::Contended => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

fn turn_error(e: &TurnError) -> Response {
    let status = match e {
        TurnError::Overloaded(_) | TurnError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        TurnError::Rejected(_) => StatusCode::BAD_REQUEST,
        TurnError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn store_error(e: &confab_store::StoreError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the store failed: {e}; retry"),
    )
}

async fn not_found(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&gw, &headers) {
        return refused;
    }
    error(
        StatusCode::NOT_FOUND,
        "no such admin endpoint; see docs/operations.md",
    )
}

async fn status(State(gw): State<Gateway>, headers: HeaderMap) -> AdminResult<NodeStatus> {
    authorize(&gw, &headers)?;
    let rt = &gw.runtime;
    let dlq_depth = rt
        .store()
        .dead_letter_depth()
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Json(NodeStatus {
        node: rt.node_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ready: rt.ready().await,
        sessions_resident: rt.resident().await as u64,
        ring_epoch: rt.epoch().0,
        policy: rt.dialog().status(),
        dlq_depth,
    }))
}

async fn policy(
    State(gw): State<Gateway>,
    headers: HeaderMap,
) -> AdminResult<confab_proto::admin::PolicyStatus> {
    authorize(&gw, &headers)?;
    Ok(Json(gw.runtime.dialog().status()))
}

async fn reload(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&gw, &headers) {
        return refused;
    }
    let dialog = gw.runtime.dialog();
    let result = dialog.reload_everywhere(gw.runtime.store().as_ref()).await;
    let status = dialog.status();
    match result {
        Ok(()) => Json(ReloadReport {
            ok: true,
            versions: status.versions,
            error: None,
        })
        .into_response(),
        Err(DialogError::Flows(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(ReloadReport {
                ok: false,
                versions: status.versions,
                error: Some(confab_runtime::dialog::error_body(&e)),
            }),
        )
            .into_response(),
        Err(e) => dialog_error(&e),
    }
}

async fn canary(
    State(gw): State<Gateway>,
    headers: HeaderMap,
) -> AdminResult<confab_proto::admin::CanaryStatus> {
    authorize(&gw, &headers)?;
    Ok(Json(gw.runtime.dialog().canary()))
}

async fn set_canary(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Json<CanarySet>, axum::extract::rejection::JsonRejection>,
) -> AdminResult<confab_proto::admin::CanaryStatus> {
    authorize(&gw, &headers)?;
    let Json(set) = body.map_err(|e| json_rejection(&e))?;
    let dialog = gw.runtime.dialog();
    split_changed(
        dialog
            .set_canary(gw.runtime.store().as_ref(), &set.version, &set.tails)
            .await,
    )
}

async fn rollback(
    State(gw): State<Gateway>,
    headers: HeaderMap,
) -> AdminResult<confab_proto::admin::CanaryStatus> {
    authorize(&gw, &headers)?;
    let dialog = gw.runtime.dialog();
    split_changed(dialog.rollback(gw.runtime.store().as_ref()).await)
}

async fn promote(
    State(gw): State<Gateway>,
    headers: HeaderMap,
) -> AdminResult<confab_proto::admin::CanaryStatus> {
    authorize(&gw, &headers)?;
    let dialog = gw.runtime.dialog();
    split_changed(dialog.promote(gw.runtime.store().as_ref()).await)
}

/// The answer to a change of the canary split.
fn split_changed(
    result: Result<confab_proto::admin::CanaryStatus, DialogError>,
) -> AdminResult<confab_proto::admin::CanaryStatus> {
    result.map(Json).map_err(|e| dialog_error(&e))
}

#[derive(Deserialize)]
struct DlqQuery {
    limit: Option<usize>,
}

fn entry_body(e: &DeadLetter, gw: &Gateway) -> DlqEntryBody {
    DlqEntryBody {
        id: e.id,
        uid: e.uid.to_string(),
        seq: e.seq.0,
        action: e.action.clone(),
        // Arguments are slot values: sensitive ones stay masked here too.
        args: gw.runtime.dialog().masked(&e.args),
        reason: e.reason.clone(),
        attempts: e.attempts,
        created_ms: e.created_ms,
    }
}

async fn dlq_list(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<DlqQuery>,
) -> AdminResult<DlqList> {
    authorize(&gw, &headers)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > DLQ_LIST_MAX {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {DLQ_LIST_MAX}"),
        ));
    }
    let store = gw.runtime.store();
    let entries = store
        .dead_letters(limit)
        .await
        .map_err(|e| store_error(&e))?;
    let depth = store
        .dead_letter_depth()
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Json(DlqList {
        depth,
        entries: entries.iter().map(|e| entry_body(e, &gw)).collect(),
    }))
}

async fn dlq_replay(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Json<DlqReplay>, axum::extract::rejection::JsonRejection>,
) -> AdminResult<DlqReplayReport> {
    authorize(&gw, &headers)?;
    let Json(replay) = body.map_err(|e| json_rejection(&e))?;
    let store = gw.runtime.store();
    let entries = match (replay.id, replay.all) {
        (Some(id), false) => match store.dead_letter_by_id(id).await {
            Ok(Some(entry)) => vec![entry],
            Ok(None) => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("no dead letter {id} is waiting (see dlq list)"),
                ));
            }
            Err(e) => return Err(store_error(&e)),
        },
        (None, true) => store
            .dead_letters(DLQ_REPLAY_ALL_MAX)
            .await
            .map_err(|e| store_error(&e))?,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "give exactly one of id and all",
            ));
        }
    };
    let mut outcomes = Vec::new();
    for entry in entries {
        let id = entry.id;
        let (ok, message) = match gw.runtime.replay(entry).await {
            Ok(done) => done,
            Err(e) => (false, e.to_string()),
        };
        outcomes.push(DlqReplayOutcome { id, ok, message });
    }
    let depth = store
        .dead_letter_depth()
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Json(DlqReplayReport { outcomes, depth }))
}

async fn session_show(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> AdminResult<confab_proto::admin::SessionView> {
    authorize(&gw, &headers)?;
    let uid = Uid::new(uid).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    gw.runtime
        .show(uid)
        .await
        .map(Json)
        .map_err(|e| turn_error(&e))
}

fn vnode_view(vnode: &confab_core::ring::VNode) -> VNodeView {
    VNodeView {
        position: confab_core::ring::Ring::position(vnode),
        node: vnode.node.to_string(),
        index: vnode.index,
    }
}

async fn ring(State(gw): State<Gateway>, headers: HeaderMap) -> AdminResult<RingView> {
    authorize(&gw, &headers)?;
    let ring = gw.runtime.ring();
    Ok(Json(RingView {
        epoch: ring.epoch().0,
        nodes: ring.members().map(ToString::to_string).collect(),
        vnodes: ring.vnodes().iter().map(|(_, v)| vnode_view(v)).collect(),
    }))
}

async fn nodes(State(gw): State<Gateway>, headers: HeaderMap) -> AdminResult<NodesView> {
    authorize(&gw, &headers)?;
    let ring = gw.runtime.ring();
    let me = gw.runtime.node_id();
    let in_ring = |id: &confab_core::NodeId| ring.members().any(|m| m == id);
    let vnodes = |id: &confab_core::NodeId| {
        if in_ring(id) {
            confab_core::ring::VNODES_PER_NODE
        } else {
            0
        }
    };
    let load = |id: &confab_core::NodeId| gw.runtime.member_load(id);
    let nodes = match gw.runtime.members() {
        Some(table) => table
            .members
            .iter()
            .map(|(id, status)| MemberView {
                id: id.to_string(),
                sessions_resident: load(id).map(|l| l.sessions_resident),
                inflight_turns: load(id).map(|l| l.inflight_turns),
                turns_total: load(id).map(|l| l.turns_total),
                status: serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                vnodes: vnodes(id),
                this_node: id == me,
                connected: id == me || gw.runtime.is_connected(id),
            })
            .collect(),
        None => ring
            .members()
            .map(|id| MemberView {
                id: id.to_string(),
                sessions_resident: load(id).map(|l| l.sessions_resident),
                inflight_turns: load(id).map(|l| l.inflight_turns),
                turns_total: load(id).map(|l| l.turns_total),
                status: "up".into(),
                vnodes: vnodes(id),
                this_node: id == me,
                connected: id == me || gw.runtime.is_connected(id),
            })
            .collect(),
    };
    Ok(Json(NodesView {
        epoch: ring.epoch().0,
        nodes,
    }))
}

async fn drain(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AdminResult<DrainView> {
    authorize(&gw, &headers)?;
    let node = member(&gw, id)?;
    let progress = gw
        .runtime
        .drain_node(&node)
        .await
        .map_err(|e| turn_error(&e))?;
    Ok(Json(drain_view(progress)))
}

async fn drain_progress(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AdminResult<DrainView> {
    authorize(&gw, &headers)?;
    let node = NodeId::new(id).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let progress = gw
        .runtime
        .drain_progress_of(&node)
        .await
        .map_err(|e| turn_error(&e))?;
    Ok(Json(drain_view(progress)))
}

/// Takes a member declared down out of the member table (409 for a member
/// that is not down: drain a live one).
async fn remove_node(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AdminResult<RemovalView> {
    authorize(&gw, &headers)?;
    let node = member(&gw, id)?;
    let down = gw
        .runtime
        .members()
        .is_some_and(|t| t.members.get(&node) == Some(&confab_core::membership::Status::Down));
    gw.runtime.remove_member(&node).map_err(|e| {
        let status = if down {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::CONFLICT
        };
        error(status, e)
    })?;
    Ok(Json(RemovalView {
        node: node.to_string(),
        state: "removing".into(),
    }))
}

/// `id` as a member of the cluster, or 404.
fn member(gw: &Gateway, id: String) -> Result<NodeId, Response> {
    let node = NodeId::new(id).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let known = match gw.runtime.members() {
        Some(table) => table.members.contains_key(&node),
        None => &node == gw.runtime.node_id(),
    };
    if !known {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("{node} is not a member of the cluster (see `confabctl nodes`)"),
        ));
    }
    Ok(node)
}

fn drain_view(progress: confab_runtime::drain::DrainProgress) -> DrainView {
    use confab_runtime::drain::DrainState;
    DrainView {
        node: progress.node.to_string(),
        state: match progress.state {
            DrainState::Serving => "serving",
            DrainState::Draining => "draining",
            DrainState::Left => "left",
        }
        .into(),
        sessions_at_start: progress.sessions_at_start as u64,
        sessions_left: progress.sessions_left as u64,
    }
}

async fn session_locate(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> AdminResult<SessionLocation> {
    authorize(&gw, &headers)?;
    let uid = Uid::new(uid).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let ring = gw.runtime.ring();
    let vnode = ring.vnode_of(&uid).ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ring is empty: no member is up",
        )
    })?;
    Ok(Json(SessionLocation {
        uid: uid.to_string(),
        owner: vnode.node.to_string(),
        epoch: ring.epoch().0,
        vnode: vnode_view(vnode),
    }))
}

fn key_error(e: &confab_runtime::keys::KeyError) -> Response {
    use confab_runtime::keys::KeyError;
    let status = match e {
        KeyError::Refused(_) => StatusCode::CONFLICT,
        KeyError::Store(_) | KeyError::Contended => StatusCode::SERVICE_UNAVAILABLE,
        KeyError::Provider(_) | KeyError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn keys_of(gw: &Gateway) -> Result<&confab_runtime::keys::KeyManager, Response> {
    gw.keys.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs without a data-key ring",
        )
    })
}

/// What each stored version covers, read from the store.
async fn key_status(gw: &Gateway) -> Result<KeysStatus, Response> {
    let keys = keys_of(gw)?;
    let store = gw.runtime.store();
    let stored = keys.versions().await.map_err(|e| key_error(&e))?;
    let snapshots = store
        .snapshot_key_versions()
        .await
        .map_err(|e| store_error(&e))?;
    let newest = stored.iter().map(|v| v.version).max();
    let mut versions = Vec::with_capacity(stored.len());
    for v in stored {
        let events = store
            .events_sealed_under(v.version)
            .await
            .map_err(|e| store_error(&e))?;
        versions.push(KeyVersionView {
            version: v.version,
            created_ms: v.created_ms,
            current: Some(v.version) == newest,
            master: v.key.master,
            snapshots: snapshots.get(&v.version).copied().unwrap_or(0),
            events,
        });
    }
    Ok(KeysStatus {
        versions,
        plaintext_snapshots: snapshots
            .get(&confab_store::key_usage::PLAINTEXT_SNAPSHOTS)
            .copied()
            .unwrap_or(0),
    })
}

async fn keys_status(State(gw): State<Gateway>) -> AdminResult<KeysStatus> {
    key_status(&gw).await.map(Json)
}

async fn keys_rotate(State(gw): State<Gateway>) -> AdminResult<KeyChange> {
    let keys = keys_of(&gw)?;
    let version = keys.rotate().await.map_err(|e| key_error(&e))?;
    Ok(Json(KeyChange {
        version,
        versions: keys.ring().get().versions(),
    }))
}

async fn keys_retire(
    State(gw): State<Gateway>,
    Path(version): Path<String>,
) -> AdminResult<KeyChange> {
    let version: u32 = version.trim_start_matches('v').parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{version:?} is not a key version (1, 2, ... or v1, v2, ...)"),
        )
    })?;
    let status = key_status(&gw).await?;
    let Some(view) = status.versions.iter().find(|v| v.version == version) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no version v{version} in the ring (see keys status)"),
        ));
    };
    if view.snapshots > 0 || view.events > 0 {
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "v{version} still covers {} snapshots and {} events: refused (snapshots move to the newest version by themselves after a rotation; events are kept as written)",
                view.snapshots, view.events
            ),
        ));
    }
    let keys = keys_of(&gw)?;
    keys.retire(version).await.map_err(|e| key_error(&e))?;
    Ok(Json(KeyChange {
        version,
        versions: keys.ring().get().versions(),
    }))
}

#[derive(Deserialize)]
struct StatsQuery {
    deadline_ms: Option<u64>,
}

/// `GET /admin/v1/stats`: every member's aggregate, asked in parallel, each
/// within `deadline_ms` (default 1000, at most 10000), and added up. A member
/// that does not answer in time is listed as unreachable, never dropped.
async fn cluster_stats(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<StatsQuery>,
) -> AdminResult<confab_proto::admin::ClusterStats> {
    use confab_runtime::stats::{DEADLINE_DEFAULT, DEADLINE_MAX};
    authorize(&gw, &headers)?;
    let deadline = match query.deadline_ms {
        None => DEADLINE_DEFAULT,
        Some(ms) if ms > 0 && u128::from(ms) <= DEADLINE_MAX.as_millis() => {
            std::time::Duration::from_millis(ms)
        }
        Some(ms) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "deadline_ms must be 1 to {}, not {ms}",
                    DEADLINE_MAX.as_millis()
                ),
            ));
        }
    };
    Ok(Json(gw.runtime.cluster_stats(deadline).await))
}

/// `GET /admin/v1/stats/local`: this node's own aggregate, from its memory.
async fn local_stats(
    State(gw): State<Gateway>,
    headers: HeaderMap,
) -> AdminResult<confab_proto::admin::NodeStats> {
    authorize(&gw, &headers)?;
    Ok(Json(gw.runtime.local_stats()))
}
