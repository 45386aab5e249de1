//! A turn's trace across nodes: the W3C trace context (`traceparent`,
//! `tracestate`) of the forwarding span travels with a forwarded turn, and the
//! owner's span continues it, so that one trace shows the socket's node and
//! the owner. Without an OpenTelemetry layer installed (no
//! `telemetry.otlp_endpoint`) the context is empty and nothing travels.

use opentelemetry::propagation::{Extractor, Injector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The propagation headers of one span; empty when it is not traced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext(BTreeMap<String, String>);

/// Headers past this many, or longer than [`VALUE_BYTES_MAX`], are dropped on
/// arrival: a peer cannot grow a span's parent without bound.
const HEADERS_MAX: usize = 8;
const VALUE_BYTES_MAX: usize = 512;

impl TraceContext {
    /// The context of `span`, as the globally set propagator writes it.
    pub fn of(span: &tracing::Span) -> Self {
        let context = span.context();
        let mut headers = Self::default();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut headers);
        });
        headers
    }

    /// Makes `span` a child of the span this context came from.
    pub fn continue_in(&self, span: &tracing::Span) {
        if self.0.is_empty() {
            return;
        }
        let bounded = Self(
            self.0
                .iter()
                .take(HEADERS_MAX)
                .filter(|(_, v)| v.len() <= VALUE_BYTES_MAX)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&bounded)
        });
        let _ = span.set_parent(parent);
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
