//! TLS between nodes: mutual TLS against one CA, on ractor_cluster's
//! encryption mode (tokio-rustls, aws-lc-rs as the crypto provider).
//!
//! Every node presents its certificate (`cluster.tls_cert`, `cluster.tls_key`)
//! and accepts only peers whose certificate the CA (`cluster.tls_ca`) signed; the
//! cookie handshake then runs inside the encrypted stream. A node dials a peer
//! by the address it advertised, and checks the peer's certificate names it.
//!
//! ractor_cluster dials the peers it learns in transitive mode without TLS, so a
//! TLS cluster runs in isolated mode: every node dials every member itself, by
//! the addresses the members publish in the store ([`ADDRESSES_SETTING`]).

use crate::cluster_error::ClusterError;
use confab_core::NodeId;
use confab_store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The store setting holding every member's advertised cluster address.
pub const ADDRESSES_SETTING: &str = "cluster.addresses";
/// Compare-and-set tries when publishing an address.
const PUBLISH_TRIES_MAX: usize = 16;

/// Where a node's TLS material lives (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs every member's certificate.
    pub ca: PathBuf,
}

/// The acceptor and connector built from a node's [`TlsFiles`].
#[derive(Clone)]
pub struct NodeTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

fn tls_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{what} {}: {e}", path.display()))
}

/// Reads the PEM files and builds both sides of mutual TLS.
pub fn load(files: &TlsFiles) -> Result<NodeTls, ClusterError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|e| tls_error("cluster.tls_cert", &files.cert, e))?;
    if certs.is_empty() {
        return Err(tls_error(
            "cluster.tls_cert",
            &files.cert,
            "no certificate in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error("cluster.tls_key", &files.key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca)
        .map_err(|e| tls_error("cluster.tls_ca", &files.ca, e))?
    {
        let ca = ca.map_err(|e| tls_error("cluster.tls_ca", &files.ca, e))?;
        roots
            .add(ca)
            .map_err(|e| tls_error("cluster.tls_ca", &files.ca, e))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| tls_error("cluster.tls_ca", &files.ca, e))?;
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(certs.clone(), key.clone_key())
        })
        .map_err(|e| tls_error("cluster.tls_cert", &files.cert, e))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_root_certificates(roots)
                .with_client_auth_cert(certs, key)
        })
        .map_err(|e| tls_error("cluster.tls_cert", &files.cert, e))?;
    Ok(NodeTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// How long an incoming connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// TLS handshakes in progress at once, at most; connections past it wait to be
/// accepted.
const HANDSHAKES_MAX: usize = 64;

/// Listens on the cluster port: each connection's TLS handshake runs in a task
/// of its own, bounded in time and in number, and the encrypted stream is then
/// handed to the node server as an incoming session.
pub(crate) async fn listen(
    server: ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    bind: std::net::IpAddr,
    port: u16,
    tls: NodeTls,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((bind, port)).await?;
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let (stream, peer_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = server.clone();
            let acceptor = tls.acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let Ok(local_addr) = stream.local_addr() else {
                    return;
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = server.cast(ractor_cluster::NodeServerMessage::ConnectionOpened {
                            stream: Box::new(ractor_cluster::NetworkStream::TlsServer {
                                peer_addr,
                                local_addr,
                                stream,
                            }),
                            is_server: true,
                        });
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %peer_addr, error = %e, "cluster TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(peer = %peer_addr, "cluster TLS handshake timed out");
                    }
                }
            });
        }
    });
    Ok(())
}

/// Dials `address` (`HOST:PORT`), over TLS when `tls` is set.
pub(crate) async fn dial(
    server: &ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    address: &str,
    tls: Option<&NodeTls>,
) -> Result<(), String> {
    match tls {
        None => ractor_cluster::client_connect(server, address)
            .await
            .map_err(|e| e.to_string()),
        Some(tls) => {
            let host = address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host} is not a server name: {e}"))?;
            ractor_cluster::client_connect_enc(server, address, tls.connector.clone(), name)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// Every member's advertised address, from the store.
pub(crate) async fn addresses(store: &dyn Store) -> BTreeMap<NodeId, String> {
    match store.setting(ADDRESSES_SETTING).await {
        Ok(Some(setting)) => serde_json::from_str(&setting.body).unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// Publishes this node's address in the store (compare-and-set).
pub(crate) async fn publish_address(
    store: &dyn Store,
    me: &NodeId,
    address: &str,
) -> Result<(), ClusterError> {
    for _ in 0..PUBLISH_TRIES_MAX {
        let held = store
            .setting(ADDRESSES_SETTING)
            .await
            .map_err(|e| ClusterError::Store(format!("cannot read {ADDRESSES_SETTING}: {e}")))?;
        let (revision, mut book): (u64, BTreeMap<NodeId, String>) = match held {
            Some(s) => (
                s.revision,
                serde_json::from_str(&s.body).unwrap_or_default(),
            ),
            None => (0, BTreeMap::new()),
        };
        if book.get(me).map(String::as_str) == Some(address) {
            return Ok(());
        }
        book.insert(me.clone(), address.to_owned());
        let body = serde_json::to_string(&book).expect("an address book serializes");
        if store
            .put_setting(ADDRESSES_SETTING, revision, &body)
            .await
            .map_err(|e| ClusterError::Store(format!("cannot write {ADDRESSES_SETTING}: {e}")))?
        {
            return Ok(());
        }
    }
    Err(ClusterError::Store(format!(
        "{ADDRESSES_SETTING} kept changing: could not publish this node's address"
    )))
}
