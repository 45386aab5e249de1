//! The cluster's start-up errors, shared by the links and their TLS.

/// Why the cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node server did not start (the port is taken...).
    #[error("cannot listen on the cluster port {port}: {reason}")]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// The TLS material is missing or wrong.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// The store did not take this node's address.
    #[error("cluster: {0}")]
    Store(String),
    /// A live node already runs with this node's id.
    #[error(
        "node id {id} is in use: a live node at {address} holds it (it renewed its lease while this node watched). Give this node another id (--node-id, node.id)"
    )]
    DuplicateId {
        /// The id.
        id: String,
        /// Where the node holding it is dialled.
        address: String,
    },
}
