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

/// An error and its causes as one line, `outer: inner: ...`, each cause
/// said once: Zync's error types already include their source in their
/// message, so a cause whose text the line already holds is skipped.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Outer);

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(one_line(&Outer(io())), "outer: disk on fire");
        assert_eq!(
            one_line(&Wrapper(Outer(io()))),
            "wrapper: outer: disk on fire"
        );
    }
}
