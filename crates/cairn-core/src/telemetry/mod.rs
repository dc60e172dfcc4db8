//! What the engine tells the outside about its work: metrics recorded through the
//! `metrics` facade and runs' trace context through `tracing`. Neither installs
//! anything: a process that exports them (the server's `telemetry`) sets up the
//! recorder and the exporter; without them these calls cost next to nothing.

pub mod metrics;
pub mod traces;
