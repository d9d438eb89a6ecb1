//! The worker's log as lines the host attributes to calls ([`LogLine`]), when the host
//! asks for them ([`LOG_LINES_ENV`]): every `tracing` record carries the id of the
//! call whose span it was emitted in ([`call_span`], entered around the plugin's
//! code on whatever thread runs it), and what the plugin prints goes through
//! `output.rs`. Without the variable the log stays plain text, as before, and a
//! record still shows its call in the span's prefix.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;

use cjm_interface::log_line::{LogLine, LOG_LINES_ENV};
use cjm_interface::CallControl;
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The name of the span a call's plugin code runs in.
const CALL_SPAN: &str = "call";

/// The span a call's plugin code runs in: its `id` attributes the records in it, and
/// `job_id` (empty for a call that came without an envelope) names the job, whatever
/// subscriber the plugin set.
pub(crate) fn call_span(control: &CallControl) -> tracing::Span {
    tracing::info_span!(
        target: "cjm_worker::call",
        CALL_SPAN,
        id = control.id(),
        job_id = control.job_id().unwrap_or("")
    )
}

/// Whether the host asked for attributed lines.
pub(crate) fn wanted() -> bool {
    std::env::var_os(LOG_LINES_ENV).is_some_and(|value| value == "1")
}

/// The log file itself (the descriptor the host gave as stderr, kept before stdout
/// and stderr were routed through the worker): every line goes out in one write.
#[derive(Debug)]
pub(crate) struct Sink {
    file: Mutex<File>,
}

impl Sink {
    pub(crate) fn new(file: File) -> Self {
        Sink {
            file: Mutex::new(file),
        }
    }

    /// The log file's descriptor, for a signal handler that may take no lock.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd as _;
        self.file.lock().as_raw_fd()
    }

    pub(crate) fn write(&self, line: &LogLine) {
        let mut text = line.to_line();
        text.push('\n');
        // Nowhere left to report a log that cannot be written.
        let _ = self.file.lock().write_all(text.as_bytes());
    }
}

/// The call and job ids recorded on a call span.
struct CallId {
    call: String,
    job: Option<String>,
}

/// Writes each record as a [`LogLine`], with the call of its innermost call span.
pub(crate) struct CallLayer {
    sink: std::sync::Arc<Sink>,
}

impl CallLayer {
    pub(crate) fn new(sink: std::sync::Arc<Sink>) -> Self {
        CallLayer { sink }
    }
}

impl<S> Layer<S> for CallLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != CALL_SPAN || attrs.metadata().target() != "cjm_worker::call" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(span), Some(call)) = (ctx.span(id), fields.id) {
            let job = fields.job_id.filter(|job| !job.is_empty());
            span.extensions_mut().insert(CallId { call, job });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let ids = ctx.event_scope(event).and_then(|scope| {
            scope.into_iter().find_map(|span| {
                span.extensions()
                    .get::<CallId>()
                    .map(|ids| (ids.call.clone(), ids.job.clone()))
            })
        });
        let (call, job) = ids.map_or((None, None), |(call, job)| (Some(call), job));
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        self.sink.write(&LogLine {
            level: meta.level().as_str().to_owned(),
            call,
            job,
            target: meta.target().to_owned(),
            msg: fields.text,
            ts_ms: LogLine::now_ms(),
        });
    }
}

/// A record's message, then its other fields as `key=value`.
#[derive(Default)]
struct Fields {
    text: String,
    /// A call span's `id`.
    id: Option<String>,
    /// A call span's `job_id`.
    job_id: Option<String>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let rest = std::mem::take(&mut self.text);
                let _ = write!(self.text, "{value:?}");
                self.text.push_str(&rest);
            }
            name => {
                let _ = write!(self.text, " {name}={value:?}");
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "id" => self.id = Some(value.to_owned()),
            "job_id" => self.job_id = Some(value.to_owned()),
            _ => {}
        }
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.text);
            self.text.push_str(value);
            self.text.push_str(&rest);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "id" {
            self.id = Some(format!("{value:?}"));
        }
        self.add(field, value);
    }
}
