//! The Router: one per node, the entry point of every turn.
//!
//! It looks the uid up on the ring at the current epoch and sends the turn to
//! the owner's SessionSupervisor. Until the cluster joins more members the ring
//! holds this node alone, so every uid is local; remote owners are the cluster
//! issue's work.

use crate::supervisor::SupervisorMsg;
use crate::{SessionRequest, TurnError, TurnRequest};
use confab_core::ring::Ring;
use confab_core::{NodeId, Uid};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;

/// Messages to the Router.
pub enum RouterMsg {
    /// One user turn.
    Turn(TurnRequest),
    /// A request to a session that is not a turn.
    Request(SessionRequest),
}

/// The Router actor.
pub struct Router;

/// Its arguments.
pub struct RouterArgs {
    pub(crate) node_id: NodeId,
    pub(crate) ring: Arc<Ring>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
}

/// Its state.
pub struct RouterState {
    node_id: NodeId,
    ring: Arc<Ring>,
    supervisor: ActorRef<SupervisorMsg>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RouterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RouterState {
            ring: args.ring,
            node_id: args.node_id,
            supervisor: args.supervisor,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Turn(turn) => {
                if !state.is_local(&turn.uid) {
                    let _ = turn.reply.send(Err(state.not_local(&turn.uid)));
                    return Ok(());
                }
                let _ = state.supervisor.cast(SupervisorMsg::Turn(turn));
            }
            RouterMsg::Request(request) => {
                if !state.is_local(&request.uid) {
                    let _ = request.reply.send(Err(state.not_local(&request.uid)));
                    return Ok(());
                }
                let _ = state.supervisor.cast(SupervisorMsg::Request(request));
            }
        }
        Ok(())
    }
}

impl RouterState {
    fn is_local(&self, uid: &Uid) -> bool {
        self.ring.owner(uid) == Some(&self.node_id)
    }

    fn not_local(&self, uid: &Uid) -> TurnError {
        TurnError::Unavailable(format!(
            "{uid} is owned by {:?} at epoch {}, which this node cannot reach",
            self.ring.owner(uid).map(NodeId::as_str),
            self.ring.epoch()
        ))
    }
}
