//! A node's log lines and traces: every line names the node (`log.format`
//! text or JSON), the libraries' chatter stays at warn unless asked for, and
//! spans go out over OTLP/HTTP when `telemetry.otlp_endpoint` is set.

use crate::config::{LogFormat, LogSection, TelemetrySection};
use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use std::fmt;
use tracing_subscriber::fmt::format::{Format, Full, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The filter when neither `RUST_LOG` nor `log.filter` says otherwise:
/// confab's own crates at info, every library (ractor_cluster's connection
/// details, sqlx's statements, hyper) at warn.
pub(crate) const DEFAULT_FILTER: &str = "warn,confab=info,confab_runtime=info,confab_gateway=info,\
     confab_store=info,confab_core=info,confab_dialog=info,confab_auth=info";

/// What a node keeps to flush its spans when it stops.
pub(crate) struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued; call once the node has stopped.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// The filter in force: `RUST_LOG`, else `log.filter`, else [`DEFAULT_FILTER`].
fn filter(log: &LogSection) -> anyhow::Result<EnvFilter> {
    if let Ok(directives) = std::env::var("RUST_LOG")
        && !directives.trim().is_empty()
    {
        return EnvFilter::try_new(&directives).with_context(|| format!("RUST_LOG={directives:?}"));
    }
    let directives = if log.filter.is_empty() {
        DEFAULT_FILTER
    } else {
        &log.filter
    };
    EnvFilter::try_new(directives).with_context(|| format!("log.filter {directives:?}"))
}

/// Installs the node's subscriber: its log lines and, when configured, the
/// OTLP exporter.
pub(crate) fn init_node(
    node: &str,
    log: &LogSection,
    telemetry: &TelemetrySection,
) -> anyhow::Result<Telemetry> {
    let lines = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(NodeText {
                node: node.to_owned(),
                inner: Format::default(),
            })
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(NodeJson {
                node: node.to_owned(),
                inner: Format::default()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            })
            .boxed(),
    };
    let lines = lines.with_filter(filter(log)?);
    let (traces, provider) = if telemetry.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let provider = tracer_provider(node, telemetry)?;
        let tracer = provider.tracer("confab");
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        // Spans of confab's own crates only, whatever the log filter says.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new(
                "off,confab=info,confab_runtime=info,confab_gateway=info,confab_store=info",
            ));
        (Some(layer), Some(provider))
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(traces)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Telemetry { provider })
}

fn tracer_provider(
    node: &str,
    telemetry: &TelemetrySection,
) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler};
    let base = telemetry.otlp_endpoint.trim_end_matches('/');
    let endpoint = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(10))
        .with_headers(Default::default())
        .build()
        .context("telemetry.otlp_endpoint: building the OTLP exporter")?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(telemetry.queue_max)
                .with_scheduled_delay(std::time::Duration::from_millis(500))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(telemetry.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node.to_owned(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            telemetry.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Text lines, each starting with the node's id.
struct NodeText {
    node: String,
    inner: Format<Full>,
}

impl<S, N> FormatEvent<S, N> for NodeText
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{} ", self.node)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// JSON lines, each object carrying `"node"` first.
struct NodeJson {
    node: String,
    inner: Format<Json>,
}

impl<S> FormatEvent<S, JsonFields> for NodeJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let node = serde_json::to_string(&self.node).map_err(|_| fmt::Error)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"node\":{node},{rest}"),
            None => writer.write_str(&line),
        }
    }
}
