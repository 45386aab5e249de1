//! External pipeline stages: HTTP services in front of the NLU and behind the
//! reply (a speech-to-text normaliser, an LLM that rewrites replies, a
//! translation service...). The built-in stages (filter, NLU, policy) are pure
//! and bounded by construction (linear-time regexes, a step budget per turn);
//! external ones get a timeout, retries and a rule for when they fail.
//!
//! A stage is a POST of `{"stage", "uid", "text", "intent", "slots"}` (slots
//! masked) answered by `{"text": "..."}`. Its output is what gets recorded: the
//! text after `before_nlu` stages in `turn_received`, the reply after
//! `after_reply` stages in `reply_produced`, so a replay never calls it again.

use confab_core::session::Slots;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Bytes of a stage's answer read, at most.
pub const STAGE_RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Where a stage sits in the pipeline: the turn machine's asks name it.
pub use confab_dialog::turn::StagePoint;

/// What a stage does when it fails past its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Go on with the text as it was.
    Skip,
    /// Fail the turn with `unavailable` (nothing recorded; retry).
    Fail,
}

/// One external stage, as configured.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Its name, in logs and metrics.
    pub name: String,
    /// Where it sits.
    pub at: StagePoint,
    /// Where to POST.
    pub url: String,
    /// How long one attempt may take.
    pub timeout_ms: u64,
    /// Retries after the first attempt.
    pub retries: u32,
    /// What a failure does.
    pub on_error: OnError,
}

/// What a stage sees.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    /// Whose turn.
    pub uid: &'a str,
    /// The text so far.
    pub text: &'a str,
    /// The reply's intent (`after_reply` only).
    pub intent: Option<&'a str>,
    /// The slots after the turn, masked (`after_reply` only).
    pub slots: Option<&'a Slots>,
}

/// A boxed stage future.
pub type StageFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// A pipeline stage that changes text.
pub trait TextStage: Send + Sync {
    /// Its config.
    fn config(&self) -> &StageConfig;
    /// One attempt.
    fn call<'a>(&'a self, input: StageInput<'a>) -> StageFuture<'a>;
}

/// An HTTP stage.
pub struct HttpStage {
    config: StageConfig,
    http: reqwest::Client,
}

impl HttpStage {
    /// A stage posting to its config's URL.
    pub fn new(config: StageConfig) -> Self {
        Self {
            config,
            http: crate::http::client(crate::http::OUTBOUND_TIMEOUT_MAX)
                .expect("an http client builds (its tls roots were checked at start-up)"),
        }
    }
}

impl TextStage for HttpStage {
    fn config(&self) -> &StageConfig {
        &self.config
    }

    fn call<'a>(&'a self, input: StageInput<'a>) -> StageFuture<'a> {
        Box::pin(async move {
            let url = &self.config.url;
            let body = serde_json::json!({
                "stage": self.config.name,
                "uid": input.uid,
                "text": input.text,
                "intent": input.intent,
                "slots": input.slots,
            });
            let response = self
                .http
                .post(url)
                .timeout(Duration::from_millis(self.config.timeout_ms))
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            if !status.is_success() {
                return Err(format!("{url} answered {status}"));
            }
            if bytes.len() > STAGE_RESPONSE_BYTES_MAX {
                return Err(format!(
                    "{url} answered over {STAGE_RESPONSE_BYTES_MAX} bytes"
                ));
            }
            #[derive(serde::Deserialize)]
            struct Answer {
                text: String,
            }
            let answer: Answer = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{url}: the answer is not {{\"text\": ...}}: {e}"))?;
            Ok(answer.text)
        })
    }
}

/// The node's external stages, in config order.
#[derive(Clone, Default)]
pub struct Stages(Vec<Arc<dyn TextStage>>);

impl Stages {
    /// HTTP stages from config.
    pub fn from_config(configs: &[StageConfig]) -> Self {
        Self(
            configs
                .iter()
                .map(|c| Arc::new(HttpStage::new(c.clone())) as Arc<dyn TextStage>)
                .collect(),
        )
    }

    /// Runs the stages at `point` in order. `Err` only from an `on_error = "fail"`
    /// stage: why.
    pub async fn run(&self, point: StagePoint, input: StageInput<'_>) -> Result<String, String> {
        let mut text = input.text.to_owned();
        for stage in self.0.iter().filter(|s| s.config().at == point) {
            let config = stage.config();
            let mut attempt = 0;
            let result = loop {
                let input = StageInput {
                    text: &text,
                    ..input
                };
                match stage.call(input).await {
                    Ok(out) => break Ok(out),
                    Err(e) if attempt < config.retries => {
                        attempt += 1;
                        warn!(stage = %config.name, error = %e, attempt, "stage failed; retrying");
                    }
                    Err(e) => break Err(e),
                }
            };
            let label = if result.is_ok() { "ok" } else { "error" };
            metrics::counter!("confab_stage_calls_total", "stage" => config.name.clone(), "result" => label)
                .increment(1);
            match result {
                Ok(out) => text = out,
                Err(e) if config.on_error == OnError::Skip => {
                    warn!(stage = %config.name, error = %e, "stage failed; skipped");
                }
                Err(e) => return Err(format!("stage {} failed: {e}", config.name)),
            }
        }
        Ok(text)
    }
}
