//! The Router: one per node, the entry point of every turn.
//!
//! It looks the uid up on the ring at the current epoch and sends the turn to
//! the owner's SessionSupervisor. Until the cluster joins more members the ring
//! holds this node alone, so every uid is local; remote owners are the cluster
//! issue's work.

use crate::supervisor::SupervisorMsg;
use crate::{SessionInfo, TurnError, TurnOutcome};
use confab_core::ring::Ring;
use confab_core::{Epoch, MessageId, NodeId, Uid};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Messages to the Router.
pub enum RouterMsg {
    /// One user turn.
    Turn {
        /// Whose.
        uid: Uid,
        /// The client's message id.
        message_id: MessageId,
        /// What the user said.
        text: String,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<TurnOutcome, TurnError>>,
    },
    /// Activate a session and report where it stands.
    Hello {
        /// Whose.
        uid: Uid,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<SessionInfo, TurnError>>,
    },
}

/// The Router actor.
pub struct Router;

/// Its arguments.
pub struct RouterArgs {
    pub(crate) node_id: NodeId,
    pub(crate) epoch: Epoch,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
}

/// Its state.
pub struct RouterState {
    node_id: NodeId,
    ring: Ring,
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
            ring: Ring::new(args.epoch, [args.node_id.clone()]),
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
            RouterMsg::Turn {
                uid,
                message_id,
                text,
                reply,
            } => {
                if !state.is_local(&uid) {
                    let _ = reply.send(Err(state.not_local(&uid)));
                    return Ok(());
                }
                let _ = state.supervisor.cast(SupervisorMsg::Turn {
                    uid,
                    message_id,
                    text,
                    reply,
                });
            }
            RouterMsg::Hello { uid, reply } => {
                if !state.is_local(&uid) {
                    let _ = reply.send(Err(state.not_local(&uid)));
                    return Ok(());
                }
                let _ = state.supervisor.cast(SupervisorMsg::Hello { uid, reply });
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
