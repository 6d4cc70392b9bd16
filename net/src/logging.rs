//! Log setup for Zync binaries: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`), human-readable or one JSON object per line, colour only
//! on a terminal.

/// Installs the global subscriber. `format` is `text` or `json`.
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}
