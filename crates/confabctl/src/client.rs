//! The HTTP side: one typed call per admin endpoint, against one node.
//!
//! Every failure becomes an error whose text is what the operator reads after
//! `error: `: the node's own [`AdminError`] message, or why the node could not be
//! reached, with what to try next.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use confab_proto::admin::{
    ADMIN_PREFIX, AdminError, AuditList, CanarySet, CanaryStatus, ClusterStats, DlqList, DlqReplay,
    DlqReplayReport, DrainView, KeyChange, KeysStatus, NodeStatus, NodesView, PolicyStatus,
    ReloadReport, RingView, SessionLocation, SessionView,
};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long `dlq replay` waits at least: every replay runs an action with its
/// retries on the node.
const REPLAY_WAIT: Duration = Duration::from_secs(600);
/// What a refused policy reload answers with: its [`ReloadReport`] says why.
const RELOAD_REFUSED: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

/// An answer from the node: the typed body, and the JSON it came from.
pub(crate) struct Reply<T> {
    /// The body, for the human tables and the exit code.
    pub(crate) body: T,
    /// The JSON exactly as the node sent it, for `--json`: fields this build
    /// does not know yet still reach the caller.
    pub(crate) raw: serde_json::Value,
}

/// A client of one node's admin API.
pub(crate) struct AdminClient {
    /// The HTTP client, with the request timeout set.
    http: reqwest::Client,
    /// The node's base URL, as given by `--node`.
    node: Url,
    /// A JWT with scope `admin`, sent as a bearer token.
    token: String,
    /// The request timeout, for the message when it runs out (a replay waits
    /// at least [`REPLAY_WAIT`]).
    timeout: Duration,
}

/// The node `--node` defaults to: `confab up`'s first node.
pub(crate) const DEFAULT_NODE: &str = "http://127.0.0.1:8080";

/// Parses `--node`: an `http://` or `https://` URL; a bare `HOST:PORT` means
/// `http://HOST:PORT`.
pub(crate) fn parse_node_url(text: &str) -> Result<Url, String> {
    // An empty `CONFAB_NODE=` reaches here as `""`: take it as unset.
    let text = match text.trim() {
        "" => DEFAULT_NODE,
        text => text,
    };
    let url = if text.contains("://") {
        Url::parse(text)
    } else {
        Url::parse(&format!("http://{text}"))
    }
    .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "confabctl speaks http and https, not {}; expected http://HOST:PORT or https://HOST:PORT",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("the URL names no host; expected http://HOST:PORT".to_owned());
    }
    Ok(url)
}

impl AdminClient {
    /// A client for `node`, giving up on each request after `timeout`.
    pub(crate) fn new(
        node: Url,
        token: String,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("confabctl/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            node,
            token,
            timeout,
        })
    }

    /// `GET /admin/v1/status`.
    pub(crate) async fn status(&self) -> anyhow::Result<Reply<NodeStatus>> {
        self.call(Method::GET, self.endpoint(&["status"]), None::<&()>)
            .await
    }

    /// `GET /admin/v1/policy`.
    pub(crate) async fn policy(&self) -> anyhow::Result<Reply<PolicyStatus>> {
        self.call(Method::GET, self.endpoint(&["policy"]), None::<&()>)
            .await
    }

    /// `POST /admin/v1/policy/reload`. A refusal (422) is a report too, not an
    /// error: the caller says why and that the previous policy still serves.
    pub(crate) async fn policy_reload(&self) -> anyhow::Result<Reply<ReloadReport>> {
        let url = self.endpoint(&["policy", "reload"]);
        let (status, bytes) = self.send(Method::POST, url, None::<&()>).await?;
        if status == RELOAD_REFUSED
            && let Ok(reply) = self.decode::<ReloadReport>(&bytes)
        {
            return Ok(reply);
        }
        if status.is_client_error() || status.is_server_error() {
            return Err(status_error(status, &bytes));
        }
        self.decode(&bytes)
    }

    /// `GET /admin/v1/canary`.
    pub(crate) async fn canary(&self) -> anyhow::Result<Reply<CanaryStatus>> {
        self.call(Method::GET, self.endpoint(&["canary"]), None::<&()>)
            .await
    }

    /// `PUT /admin/v1/canary`.
    pub(crate) async fn canary_set(&self, set: &CanarySet) -> anyhow::Result<Reply<CanaryStatus>> {
        self.call(Method::PUT, self.endpoint(&["canary"]), Some(set))
            .await
    }

    /// `POST /admin/v1/canary/rollback`.
    pub(crate) async fn canary_rollback(&self) -> anyhow::Result<Reply<CanaryStatus>> {
        let url = self.endpoint(&["canary", "rollback"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `POST /admin/v1/canary/promote`.
    pub(crate) async fn canary_promote(&self) -> anyhow::Result<Reply<CanaryStatus>> {
        let url = self.endpoint(&["canary", "promote"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `GET /admin/v1/dlq?limit=N`.
    pub(crate) async fn dlq_list(&self, limit: u64) -> anyhow::Result<Reply<DlqList>> {
        let mut url = self.endpoint(&["dlq"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /admin/v1/audit`.
    pub(crate) async fn audit(&self, limit: u64) -> anyhow::Result<Reply<AuditList>> {
        let mut url = self.endpoint(&["audit"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /admin/v1/keys`.
    pub(crate) async fn keys(&self) -> anyhow::Result<Reply<KeysStatus>> {
        self.call(Method::GET, self.endpoint(&["keys"]), None::<&()>)
            .await
    }

    /// `POST /admin/v1/keys/rotate`.
    pub(crate) async fn keys_rotate(&self) -> anyhow::Result<Reply<KeyChange>> {
        self.call(
            Method::POST,
            self.endpoint(&["keys", "rotate"]),
            None::<&()>,
        )
        .await
    }

    /// `POST /admin/v1/keys/{version}/retire`.
    pub(crate) async fn keys_retire(&self, version: u32) -> anyhow::Result<Reply<KeyChange>> {
        let version = version.to_string();
        self.call(
            Method::POST,
            self.endpoint(&["keys", &version, "retire"]),
            None::<&()>,
        )
        .await
    }

    /// `POST /admin/v1/dlq/replay`.
    pub(crate) async fn dlq_replay(
        &self,
        replay: &DlqReplay,
    ) -> anyhow::Result<Reply<DlqReplayReport>> {
        let url = self.endpoint(&["dlq", "replay"]);
        // Each replay runs an action with its retries on the node: a long
        // replay is waited for, up to this.
        let wait = self.timeout.max(REPLAY_WAIT);
        let (status, bytes) = self
            .send_within(Method::POST, url, Some(replay), wait)
            .await?;
        if status.is_client_error() || status.is_server_error() {
            return Err(status_error(status, &bytes));
        }
        self.decode(&bytes)
    }

    /// `GET /admin/v1/sessions/{uid}`, the uid percent-encoded as one segment.
    pub(crate) async fn session(&self, uid: &str) -> anyhow::Result<Reply<SessionView>> {
        // A URL path cannot carry `.` or `..` as a segment: parsers resolve them
        // (even percent-encoded), so the request would reach another endpoint.
        if uid == "." || uid == ".." {
            return Err(anyhow!(
                "the uid {uid:?} cannot be looked up over HTTP; it is a path step"
            ));
        }
        self.call(Method::GET, self.endpoint(&["sessions", uid]), None::<&()>)
            .await
    }

    /// `GET /admin/v1/sessions/{uid}/locate`.
    pub(crate) async fn locate(&self, uid: &str) -> anyhow::Result<Reply<SessionLocation>> {
        if uid == "." || uid == ".." {
            return Err(anyhow!(
                "the uid {uid:?} cannot be looked up over HTTP; it is a path step"
            ));
        }
        let url = self.endpoint(&["sessions", uid, "locate"]);
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /admin/v1/ring`.
    pub(crate) async fn ring(&self) -> anyhow::Result<Reply<RingView>> {
        self.call(Method::GET, self.endpoint(&["ring"]), None::<&()>)
            .await
    }

    /// `GET /admin/v1/nodes`.
    pub(crate) async fn nodes(&self) -> anyhow::Result<Reply<NodesView>> {
        self.call(Method::GET, self.endpoint(&["nodes"]), None::<&()>)
            .await
    }

    /// `POST /admin/v1/nodes/{id}/drain`.
    pub(crate) async fn drain(&self, id: &str) -> anyhow::Result<Reply<DrainView>> {
        let url = self.endpoint(&["nodes", id, "drain"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `DELETE /admin/v1/nodes/{id}`.
    pub(crate) async fn remove_node(
        &self,
        id: &str,
    ) -> anyhow::Result<Reply<confab_proto::admin::RemovalView>> {
        let url = self.endpoint(&["nodes", id]);
        self.call(Method::DELETE, url, None::<&()>).await
    }

    /// `GET /admin/v1/nodes/{id}/drain`.
    pub(crate) async fn drain_progress(&self, id: &str) -> anyhow::Result<Reply<DrainView>> {
        let url = self.endpoint(&["nodes", id, "drain"]);
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /admin/v1/stats?deadline_ms=N`: the cluster's aggregates. The node
    /// waits up to `deadline` for each member, so the request waits at least
    /// that, and a second more.
    pub(crate) async fn stats(&self, deadline: Duration) -> anyhow::Result<Reply<ClusterStats>> {
        let mut url = self.endpoint(&["stats"]);
        url.query_pairs_mut()
            .append_pair("deadline_ms", &deadline.as_millis().to_string());
        let wait = self.timeout.max(deadline + Duration::from_secs(1));
        let (status, bytes) = self
            .send_within(Method::GET, url, None::<&()>, wait)
            .await?;
        if status.is_client_error() || status.is_server_error() {
            return Err(status_error(status, &bytes));
        }
        self.decode(&bytes)
    }

    /// `GET /metrics`: the node's Prometheus text (no token needed).
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        let mut url = self.node.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("metrics");
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(anyhow!(
                "{} answered {status} for /metrics",
                self.node_label()
            ));
        }
        Ok(text)
    }

    /// The URL of the admin endpoint under [`ADMIN_PREFIX`] named by `path`, each
    /// element one percent-encoded segment, kept under any path `--node` has.
    pub(crate) fn endpoint(&self, path: &[&str]) -> Url {
        let mut url = self.node.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            let prefix = ADMIN_PREFIX.split('/').filter(|s| !s.is_empty());
            segments.pop_if_empty().extend(prefix).extend(path);
        }
        url
    }

    /// Sends one request and decodes a success; a status of 400 or more is an error.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Reply<T>> {
        let (status, bytes) = self.send(method, url, body).await?;
        if status.is_client_error() || status.is_server_error() {
            return Err(status_error(status, &bytes));
        }
        self.decode(&bytes)
    }

    /// Sends one request and reads the whole answer, whatever its status.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        self.send_within(method, url, body, self.timeout).await
    }

    /// [`Self::send`], giving up after `wait`.
    async fn send_within(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
        wait: Duration,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .timeout(wait);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        Ok((status, bytes.to_vec()))
    }

    /// Decodes a success body, keeping its JSON for `--json`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> anyhow::Result<Reply<T>> {
        let node = self.node_label();
        let raw: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            anyhow!("{node} answered with something other than JSON ({e}); is it a confab node?")
        })?;
        let body = serde_json::from_value(raw.clone()).map_err(|e| {
            anyhow!("cannot read {node}'s answer ({e}); does it run the same confab version?")
        })?;
        Ok(Reply { body, raw })
    }

    /// Says why a request got no answer, and what to check.
    fn transport_error(&self, error: &reqwest::Error) -> anyhow::Error {
        let node = self.node_label();
        let cause = root_cause(error);
        if error.is_timeout() {
            return anyhow!(
                "no answer from {node} within {}; is it up and reachable? (--timeout)",
                crate::duration::show(self.timeout)
            );
        }
        if error.is_connect() {
            return anyhow!(
                "cannot reach {node}: {cause}; is a node running? (--node / CONFAB_NODE)"
            );
        }
        anyhow!("request to {node} failed: {cause}")
    }

    /// The node's URL as the operator typed it, for messages.
    pub(crate) fn node_label(&self) -> &str {
        self.node.as_str().trim_end_matches('/')
    }
}

/// The error for an answer with status 400 or more: the node's [`AdminError`]
/// message, or the status line when the body is not one.
fn status_error(status: StatusCode, bytes: &[u8]) -> anyhow::Error {
    let message = match serde_json::from_slice::<AdminError>(bytes) {
        Ok(body) => body.error,
        Err(_) => format!("the node answered {status}"),
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => anyhow!(
            "{message}\nhint: the admin API needs a token with scope admin: \
             confab token --uid ops --scope admin (then --token or CONFAB_TOKEN)"
        ),
        _ => anyhow!(message),
    }
}

/// The innermost cause: reqwest's own text only repeats the URL.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(node: &str) -> AdminClient {
        let url = parse_node_url(node).expect("valid node url");
        AdminClient::new(url, "t".to_owned(), Duration::from_secs(1), None).expect("client builds")
    }

    #[test]
    fn node_url_defaults_to_http_and_refuses_other_schemes() {
        let url = parse_node_url("127.0.0.1:9000").expect("bare host:port");
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(
            parse_node_url("https://example.test:8443")
                .unwrap()
                .scheme(),
            "https"
        );
        assert!(parse_node_url("ftp://example.test").is_err());
        assert!(parse_node_url("http://").is_err());
        assert_eq!(parse_node_url("").ok(), parse_node_url(DEFAULT_NODE).ok());
    }

    #[test]
    fn endpoints_sit_under_the_admin_prefix_and_any_node_path() {
        let plain = client("http://127.0.0.1:8080");
        assert_eq!(
            plain.endpoint(&["canary", "rollback"]).as_str(),
            "http://127.0.0.1:8080/admin/v1/canary/rollback"
        );
        let prefixed = client("http://host:1/confab/?x=1");
        assert_eq!(
            prefixed.endpoint(&["status"]).as_str(),
            "http://host:1/confab/admin/v1/status"
        );
    }

    #[test]
    fn a_uid_is_one_percent_encoded_segment() {
        let url = client("http://h:1").endpoint(&["sessions", "a/b?c#d %e"]);
        assert_eq!(
            url.as_str(),
            "http://h:1/admin/v1/sessions/a%2Fb%3Fc%23d%20%25e"
        );
    }

    #[test]
    fn status_errors_prefer_the_admin_error_body() {
        let body = br#"{"error":"no such session"}"#;
        let err = status_error(StatusCode::NOT_FOUND, body);
        assert_eq!(err.to_string(), "no such session");
        let err = status_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(err.to_string(), "the node answered 502 Bad Gateway");
        let err = status_error(StatusCode::UNAUTHORIZED, br#"{"error":"bad token"}"#);
        assert!(err.to_string().contains("--scope admin"));
    }
}
