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

/// How a binary ends: success, or its error on one line
/// (`NAME: outer: inner`, see [`one_line`]) and failure. An error caused by
/// a broken pipe (the reader of our output went away, as in
/// `zync-peer ls | head`) is a success, as for any Unix filter.
pub fn exit<E>(name: &str, result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    let Err(e) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    let mut next = Some(e);
    while let Some(c) = next {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return std::process::ExitCode::SUCCESS;
        }
        next = c.source();
    }
    eprintln!("{name}: {}", one_line(e));
    std::process::ExitCode::FAILURE
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

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_a_clean_exit() {
        type Boxed = Box<dyn std::error::Error + Send + Sync>;
        let pipe = || Outer(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        let ok: Result<(), Boxed> = Ok(());
        assert_eq!(exit("t", ok), std::process::ExitCode::SUCCESS);
        let piped: Result<(), Boxed> = Err(Box::new(Wrapper(pipe())));
        assert_eq!(exit("t", piped), std::process::ExitCode::SUCCESS);
        let failed: Result<(), Boxed> = Err(Box::new(Outer(std::io::Error::other("x"))));
        assert_eq!(exit("t", failed), std::process::ExitCode::FAILURE);
    }
}
