//! The Router: one per node, the entry point of every turn and request.
//!
//! It routes by the ring in force ([`confab_core::routing::route`]): a session
//! this node owns goes to the SessionSupervisor; one another member owns goes to
//! that member's peer actor ([`crate::cluster`]) by a call with a timeout, and
//! the answer comes back the same way. A turn routed here by another node at an
//! older epoch is routed again by this node's ring, never dropped; one routed at
//! a newer epoch, or bounced too often, is answered `unavailable` (retry: the
//! ring is changing) while membership refreshes.
//!
//! The Router holds no state of its own (the ring, the peers and the member
//! table are the node's `Shared`), so it is no actor: the caller's task
//! routes (a gateway connection's, or the peer handler's for a forwarded
//! turn). A turn served here for a resident session goes straight into the
//! session actor's mailbox (`residents`); any other into the
//! supervisor's, which starts the session or refuses the turn. As an actor
//! the Router was one more mailbox, and one more task woken, on every turn's
//! way in, all of a node's turns through one task; the supervisor was another.

use crate::messages::SupervisorMsg;
use crate::residents::Residents;
use crate::wire::{PeerMsg, RemoteAnswer, RemoteRequest, RemoteTurn, Wire};
use crate::{SessionRequest, Shared, TurnError, TurnRequest};
use confab_core::routing::{Route, forward_lost, route};
use confab_core::{Epoch, NodeId, Uid};
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr};
use std::sync::Arc;

/// What the Router routes.
pub enum RouterMsg {
    /// One user turn.
    Turn(TurnRequest),
    /// A request to a session that is not a turn.
    Request(SessionRequest),
}

impl RouterMsg {
    /// Answers it with `error`.
    fn refuse(self, error: TurnError) {
        match self {
            RouterMsg::Turn(turn) => {
                let _ = turn.reply.send(Err(error));
            }
            RouterMsg::Request(request) => {
                let _ = request.reply.send(Err(error));
            }
        }
    }

    fn uid_and_route(&self) -> (&Uid, Option<(Epoch, u8)>) {
        match self {
            RouterMsg::Turn(t) => (&t.uid, t.forwarded),
            RouterMsg::Request(r) => (&r.uid, r.forwarded),
        }
    }
}

/// The Router.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    residents: Arc<Residents>,
}

impl Router {
    /// Routes through `shared`'s ring to a resident session, the
    /// `supervisor`, or a peer.
    pub(crate) fn new(
        shared: Arc<Shared>,
        supervisor: ActorRef<SupervisorMsg>,
        residents: Arc<Residents>,
    ) -> Self {
        Self {
            shared,
            supervisor,
            residents,
        }
    }

    /// Routes `message`: to the supervisor, to the owner's peer (a task of its
    /// own waits for the answer), later (the ring is catching up), or answers
    /// it at once with the reason it cannot go anywhere.
    pub(crate) fn route(&self, message: RouterMsg) {
        if self.shared.is_isolated() {
            message.refuse(TurnError::Unavailable(
                "this node is cut off from the majority of the cluster: retry with the same id (another node)"
                    .into(),
            ));
            return;
        }
        let (uid, forwarded) = message.uid_and_route();
        if self.is_stale(uid, forwarded) {
            self.later(message);
            return;
        }
        match message {
            RouterMsg::Turn(turn) => match self.decide(&turn.uid, turn.forwarded) {
                Ok(None) => self.serve(SupervisorMsg::Turn(turn)),
                Ok(Some(forward)) => forward_turn(Arc::clone(&self.shared), forward, turn),
                Err(e) => {
                    let _ = turn.reply.send(Err(e));
                }
            },
            RouterMsg::Request(request) => match self.decide(&request.uid, request.forwarded) {
                Ok(None) => self.serve(SupervisorMsg::Request(request)),
                Ok(Some(forward)) => forward_request(Arc::clone(&self.shared), forward, request),
                Err(e) => {
                    let _ = request.reply.send(Err(e));
                }
            },
        }
    }

    /// Into the resident session's mailbox, or else the supervisor's; a
    /// supervisor that has stopped (the node shut down) gets nothing, and the
    /// caller is told so.
    fn serve(&self, message: SupervisorMsg) {
        let Some(message) = self.residents.deliver(message) else {
            return;
        };
        // A closed mailbox hands the message back (the other errors are for
        // receivers and mistyped actors); its reply port is answered here.
        if let Err(MessagingErr::SendErr(message)) = self.supervisor.cast(message) {
            let error = TurnError::Unavailable("the node is shutting down".into());
            match message {
                SupervisorMsg::Turn(turn) => {
                    let _ = turn.reply.send(Err(error));
                }
                SupervisorMsg::Request(request) => {
                    let _ = request.reply.send(Err(error));
                }
                _ => {}
            }
        }
    }

    /// Whether this node's ring is older than the one the message was routed
    /// by, and the message may still wait for it.
    fn is_stale(&self, uid: &Uid, forwarded: Option<(Epoch, u8)>) -> bool {
        let ring = self.shared.ring();
        let me = &self.shared.config.node_id;
        let (seen, hops) = forwarded.map_or((None, 0), |(e, h)| (Some(e), h));
        matches!(route(&ring, me, uid, seen, hops), Route::Refresh)
            && self.shared.refresh_membership()
    }

    /// Routes the message again once membership had time to catch up; gives
    /// up with `unavailable` after [`STALE_TRIES_MAX`] tries.
    fn later(&self, message: RouterMsg) {
        let router = self.clone();
        tokio::spawn(async move {
            let me = router.shared.config.node_id.clone();
            for _ in 0..STALE_TRIES_MAX {
                tokio::time::sleep(STALE_WAIT).await;
                let ring = router.shared.ring();
                let (uid, forwarded) = message.uid_and_route();
                let (seen, hops) = forwarded.map_or((None, 0), |(e, h)| (Some(e), h));
                if !matches!(route(&ring, &me, uid, seen, hops), Route::Refresh) {
                    router.route(message);
                    return;
                }
            }
            let error = TurnError::Unavailable(format!(
                "the ring is changing (this node is at epoch {}): retry with the same id",
                router.shared.ring().epoch()
            ));
            message.refuse(error);
        });
    }

    /// `Ok(None)`: serve here; `Ok(Some(forward))`: send to the owner.
    fn decide(
        &self,
        uid: &Uid,
        forwarded: Option<(Epoch, u8)>,
    ) -> Result<Option<Forward>, TurnError> {
        let ring = self.shared.ring();
        let me = &self.shared.config.node_id;
        let (seen, hops) = match forwarded {
            Some((epoch, hops)) => (Some(epoch), hops),
            None => (None, 0),
        };
        match route(&ring, me, uid, seen, hops) {
            Route::Serve => Ok(None),
            // The same rule as a forward in flight: an owner down, gone or
            // unlinked gets nothing, and the client is told at once.
            Route::Forward { to, epoch } => match self.shared.peer(&to) {
                Some(peer)
                    if !forward_lost(
                        owner_status(&self.shared, &to),
                        self.shared.linked(&to),
                        !self.shared.is_isolated(),
                    ) =>
                {
                    Ok(Some(Forward {
                        to,
                        peer,
                        epoch,
                        hops: hops + 1,
                    }))
                }
                _ => Err(unreachable_owner(&to, epoch)),
            },
            Route::Refresh => Err(TurnError::Unavailable(format!(
                "the ring is changing (this node is at epoch {}): retry with the same id",
                ring.epoch()
            ))),
        }
    }
}

/// A turn for another member: sent to its peer by a call that waits what is
/// left of the caller's wait, in a task of its own.
fn forward_turn(shared: Arc<Shared>, forward: Forward, turn: TurnRequest) {
    let Forward {
        to,
        peer,
        epoch,
        hops,
    } = forward;
    // The owner gets what is left of the caller's wait, and the call waits
    // no longer.
    let timeout = turn
        .deadline
        .saturating_duration_since(std::time::Instant::now())
        .max(std::time::Duration::from_millis(1));
    let span = tracing::info_span!(parent: &turn.span, "forward", to = %to, epoch = epoch.0);
    let trace = crate::trace_context::TraceContext::of(&span);
    let forward = async move {
        let remote = RemoteTurn {
            uid: turn.uid.clone(),
            message_id: turn.message_id.clone(),
            text: turn.text.clone(),
            epoch,
            hops,
            trace,
            budget_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let call = peer.call(|port| PeerMsg::Turn(Wire(remote), port), Some(timeout));
        let answer = tokio::select! {
            result = call => answer(result).and_then(|w| w.0),
            lost = owner_lost(&shared, &to) => Err(lost),
        };
        let _ = turn.reply.send(answer);
        drop(turn.permit);
    };
    tokio::spawn(tracing::Instrument::instrument(forward, span));
}

/// A request for another member, as [`forward_turn`] sends a turn.
fn forward_request(shared: Arc<Shared>, forward: Forward, request: SessionRequest) {
    let timeout = shared.config.turn_timeout;
    tokio::spawn(async move {
        let remote = RemoteRequest {
            uid: request.uid.clone(),
            ask: request.ask,
            epoch: forward.epoch,
            hops: forward.hops,
        };
        let call = forward
            .peer
            .call(|port| PeerMsg::Request(Wire(remote), port), Some(timeout));
        let answer: Result<RemoteAnswer, TurnError> = tokio::select! {
            result = call => answer(result).and_then(|w| w.0),
            lost = owner_lost(&shared, &forward.to) => Err(lost),
        };
        let _ = request.reply.send(answer);
        drop(request.permit);
    });
}

/// A remote call's result as the caller's outcome.
fn answer<T>(
    result: Result<CallResult<Wire<T>>, ractor::MessagingErr<PeerMsg>>,
) -> Result<Wire<T>, TurnError> {
    match result {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => Err(TurnError::Internal(
            "the owner node did not answer in time; the turn may be recorded: retry with the same id"
                .into(),
        )),
        Ok(CallResult::SenderError) | Err(_) => Err(TurnError::Unavailable(
            "the owner node is unreachable (it may be leaving the ring): retry with the same id"
                .into(),
        )),
    }
}

/// How long a turn routed at an epoch this node has not reached waits for
/// membership to catch up, per try...
const STALE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
/// ...and how many tries before it is answered `unavailable`.
const STALE_TRIES_MAX: u8 = 20;

/// Where a turn is forwarded: the owner, its peer actor, the epoch it was
/// routed at, and the forwards it will have taken.
struct Forward {
    to: NodeId,
    peer: ActorRef<PeerMsg>,
    epoch: Epoch,
    hops: u8,
}

/// How often a forwarded turn checks that its owner is still there.
const OWNER_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Resolves once the core says a turn forwarded to `owner` is lost (the owner
/// declared down, gone from the table, or unlinked, or this node cut off from
/// the majority): the error to answer with.
async fn owner_lost(shared: &Shared, owner: &NodeId) -> TurnError {
    loop {
        tokio::time::sleep(OWNER_CHECK_EVERY).await;
        if forward_lost(
            owner_status(shared, owner),
            shared.linked(owner),
            !shared.is_isolated(),
        ) {
            // Like a timeout: the turn may be recorded, so not `unavailable`.
            return TurnError::Internal(format!(
                "the session's owner {owner} went down or out of reach while it had the turn; \
                 it may be recorded: retry with the same id"
            ));
        }
    }
}

/// The owner's status in the member table this node holds, if listed.
fn owner_status(shared: &Shared, owner: &NodeId) -> Option<confab_core::membership::Status> {
    shared.cluster.status_of(owner)
}

fn unreachable_owner(owner: &NodeId, epoch: Epoch) -> TurnError {
    TurnError::Unavailable(format!(
        "the session's owner {owner} (epoch {epoch}) is not connected to this node: retry with the same id"
    ))
}
