//! Ending quietly on a closed stdout (`isolab plan … | head`).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`, and `println!`
//! turns that into a panic ("failed printing to stdout: Broken pipe"). Restoring SIGPIPE's
//! default would also kill the process on a write to a closed socket or to a child's stdin (the
//! embedded agent talks to runc and QEMU), so instead a panic hook recognises exactly that
//! panic and exits with status 0 without a word, as `ripgrep` and `fd` do: the reader has
//! everything it asked for. Any other panic goes to the default hook.

/// Installs the hook; call first thing in `main`.
pub(crate) fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_stdout(payload) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Writes `bytes` to stdout; a closed pipe counts as written (the reader has what it wanted).
pub(crate) fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Whether a panic message is `print!`'s failure on a closed stdout.
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_stdout_is_quiet() {
        assert!(is_closed_stdout(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_stdout("index out of bounds"));
    }
}
