//! The error taxonomy: categories, the reference's exception classes, the
//! `JobError` record, classification of exceptions a worker reports, and the typed
//! error the host raises.

mod classify;
mod job_error;
mod plugin_error;
mod pyrepr;
mod taxonomy;

pub use self::{
    classify::{JobErrorContext, RaisedException},
    job_error::{JobError, TracebackPolicy},
    plugin_error::{CancelPhase, PluginError, PluginRef, WorkerExit},
    taxonomy::{
        ErrorCategory, PluginErrorKind, ResourceShortfall, ShortfallResource, UnknownCategory,
    },
};
