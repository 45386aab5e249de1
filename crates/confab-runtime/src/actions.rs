//! Running actions: builtins in process, `http` actions as a POST.
//!
//! Every attempt carries the action's idempotency key (`uid:seq`, the seq of
//! its `action_requested` event): in the body and in the `Idempotency-Key`
//! header. The key is the same for every retry, after a crash and after a
//! move, so a service that remembers keys (as payment APIs do) pays once.
//! confab itself never runs an action again once its success is recorded.
//!
//! An attempt that times out, cannot connect or gets a 5xx is retried with
//! exponential backoff and jitter, up to `max_retries`; a 4xx is final. An
//! action that still fails goes to the dead-letter queue.

use confab_core::session::{ActionOutcome, Slots};
use confab_dialog::flow::ActionSpec;
use std::time::Duration;
use tracing::{info, warn};

/// Bytes of an action's response read, at most.
pub const ACTION_RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// How actions are retried.
#[derive(Debug, Clone)]
pub struct ActionSettings {
    /// Retries after the first attempt (`dialog.action_max_retries`).
    pub max_retries: u32,
    /// The first backoff; it doubles on each retry, with jitter.
    pub backoff: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
}

impl Default for ActionSettings {
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// One attempt's failure.
#[derive(Debug, Clone)]
struct AttemptError {
    reason: String,
    /// Whether another attempt may succeed.
    retryable: bool,
}

/// Runs actions. Cheap to clone.
#[derive(Clone)]
pub struct ActionRunner {
    http: reqwest::Client,
    settings: ActionSettings,
}

impl ActionRunner {
    /// A runner with these retry settings.
    pub fn new(settings: ActionSettings) -> Self {
        Self {
            http: crate::http::client(crate::http::OUTBOUND_TIMEOUT_MAX)
                .expect("an http client builds (its tls roots were checked at start-up)"),
            settings,
        }
    }

    /// The retry settings.
    pub fn settings(&self) -> &ActionSettings {
        &self.settings
    }

    /// Runs an action to its end: success, a final failure, or failure past
    /// the retries. Never runs longer than the attempts' timeouts plus the
    /// backoffs allow.
    pub async fn run(
        &self,
        spec: Option<&ActionSpec>,
        action: &str,
        key: &str,
        uid: &str,
        args: &Slots,
    ) -> ActionOutcome {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match spec {
                None => Err(AttemptError {
                    reason: format!("action {action} is not declared in this policy version"),
                    retryable: false,
                }),
                Some(ActionSpec::Builtin { builtin }) => {
                    confab_dialog::actions::run_builtin(builtin, key, args).map_err(|reason| {
                        AttemptError {
                            reason,
                            retryable: false,
                        }
                    })
                }
                Some(ActionSpec::Http { url, timeout_ms }) => {
                    self.post(
                        url,
                        Duration::from_millis(*timeout_ms),
                        action,
                        key,
                        uid,
                        args,
                    )
                    .await
                }
            };
            metrics::counter!(
                "confab_action_attempts_total",
                "result" => if result.is_ok() { "ok" } else { "error" }
            )
            .increment(1);
            match result {
                Ok(result) => {
                    info!(uid, action, key, attempts, "action succeeded");
                    return ActionOutcome::Succeeded(result);
                }
                Err(e) if e.retryable && attempts <= self.settings.max_retries => {
                    let wait = confab_store::backoff_with_jitter(
                        attempts,
                        self.settings.backoff,
                        self.settings.backoff_max,
                    );
                    warn!(uid, action, key, attempts, reason = %e.reason, "action failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    warn!(uid, action, key, attempts, reason = %e.reason, "action failed");
                    return ActionOutcome::Failed {
                        reason: e.reason,
                        attempts,
                    };
                }
            }
        }
    }

    async fn post(
        &self,
        url: &str,
        timeout: Duration,
        action: &str,
        key: &str,
        uid: &str,
        args: &Slots,
    ) -> Result<Slots, AttemptError> {
        let body = serde_json::json!({ "action": action, "key": key, "uid": uid, "args": args });
        let retryable = |reason: String| AttemptError {
            reason,
            retryable: true,
        };
        let response = self
            .http
            .post(url)
            .timeout(timeout)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    retryable(format!(
                        "no answer from {url} within {} ms",
                        timeout.as_millis()
                    ))
                } else {
                    retryable(format!("cannot reach {url}: {e}"))
                }
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| retryable(format!("{url}: reading the answer: {e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(AttemptError {
                reason: format!("{url} answered {status}: {}", text.trim()),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        if bytes.len() > ACTION_RESPONSE_BYTES_MAX {
            return Err(AttemptError {
                reason: format!("{url} answered more than {ACTION_RESPONSE_BYTES_MAX} bytes"),
                retryable: false,
            });
        }
        result_fields(&bytes).map_err(|reason| AttemptError {
            reason: format!("{url}: {reason}"),
            retryable: false,
        })
    }
}

/// An action's JSON answer as result fields: an object's scalar members as
/// strings (an empty body is an empty result).
fn result_fields(bytes: &[u8]) -> Result<Slots, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Slots::new());
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("the answer is not a JSON object".into());
    };
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            serde_json::Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::result_fields;

    #[test]
    fn an_answer_keeps_its_scalar_fields() {
        let fields = result_fields(br#"{"prize":"socks","value":5,"paid":true,"x":[1]}"#).unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!(fields["value"], "5");
        assert!(result_fields(b"  ").unwrap().is_empty());
        assert!(result_fields(b"[1]").is_err());
        assert!(result_fields(b"nope").is_err());
    }
}
