//! What a backend hands back for each started instance: its output as line streams, its pid and
//! a future of its exit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest line kept whole; a longer one is cut (a garbage printer must not exhaust memory).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A stream of lines (without their newline), lossily decoded as UTF-8.
pub type LineStream = Pin<Box<dyn Stream<Item = std::io::Result<String>> + Send>>;

/// A future of an instance's exit.
pub type ExitFuture = BoxFuture<'static, InstanceExit>;

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceExit {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// Its end could not be observed (wait failed); the text says why.
    Lost(String),
}

impl InstanceExit {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, Self::Exited(0))
    }

    /// From a process exit status.
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Exited(code),
            (None, Some(sig)) => Self::Signaled(sig),
            (None, None) => Self::Lost(format!("unknown exit status {status:?}")),
        }
    }

    /// A container's exit code as the workload's end: runtimes (runc, `lxc-execute`, Docker)
    /// exit with 128 + n when process 1 was killed by signal n (the workload itself only exits
    /// with 0, 1 or 2).
    pub fn from_runtime_code(code: i64) -> Self {
        match i32::try_from(code) {
            Ok(c) if (129..=128 + 64).contains(&c) => Self::Signaled(c - 128),
            Ok(c) => Self::Exited(c),
            Err(_) => Self::Lost(format!("exit code {code} out of range")),
        }
    }

    /// A runtime process's exit status as the workload's ([`Self::from_runtime_code`]).
    pub fn from_runtime_status(status: std::process::ExitStatus) -> Self {
        match Self::from_status(status) {
            Self::Exited(code) => Self::from_runtime_code(i64::from(code)),
            other => other,
        }
    }
}

impl fmt::Display for InstanceExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited with code {code}"),
            Self::Signaled(sig) => write!(f, "was killed by signal {sig}"),
            Self::Lost(why) => write!(f, "ended unobserved: {why}"),
        }
    }
}

/// One started instance.
pub struct InstanceHandle {
    /// Index within the trial.
    pub index: u32,
    /// Host pid of the instance's main process (the workload, runc, QEMU), if it has one.
    pub pid: Option<u32>,
    /// Sample lines (stdout; a VM backend strips the console framing and sends other console
    /// lines to `stderr`).
    pub stdout: LineStream,
    /// Diagnostic lines.
    pub stderr: LineStream,
    /// Resolves when the main process has ended and been reaped.
    pub exit: ExitFuture,
}

impl InstanceHandle {
    /// The handle of instance `index` whose main process is `child`, the client of a runtime
    /// (`runc run`, `lxc-execute`) that exits with the workload's code
    /// ([`InstanceExit::from_runtime_status`]); `stderr` makes the diagnostic stream of its
    /// stderr lines (e.g. adds an OOM note with [`then_note`]). `runtime` names it in the exit
    /// when waiting fails. An error when stdout or stderr was not piped; the child is killed
    /// then.
    pub fn of_runtime_child(
        index: u32,
        mut child: tokio::process::Child,
        runtime: &str,
        stderr: impl FnOnce(LineStream) -> LineStream,
    ) -> std::io::Result<Self> {
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            // Both are piped by whoever made the command; without them there is nothing to
            // measure.
            let _ = child.start_kill();
            return Err(std::io::Error::other("stdout or stderr not piped"));
        };
        let pid = child.id();
        let runtime = runtime.to_owned();
        let exit = Box::pin(async move {
            match child.wait().await {
                Ok(status) => InstanceExit::from_runtime_status(status),
                Err(e) => InstanceExit::Lost(format!("waiting for {runtime} failed: {e}")),
            }
        });
        Ok(Self {
            index,
            pid,
            stdout: lines(out),
            stderr: stderr(lines(err)),
            exit,
        })
    }
}

impl fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("index", &self.index)
            .field("pid", &self.pid)
            .finish()
    }
}

/// The result of starting a trial's instances.
#[derive(Debug)]
pub struct Launch {
    /// One handle per instance, in index order.
    pub instances: Vec<InstanceHandle>,
    /// The accelerator a VM backend used, if any.
    pub accel: Option<String>,
}

impl From<Vec<InstanceHandle>> for Launch {
    /// Instances started without an accelerator to report (every backend but the VM's).
    fn from(instances: Vec<InstanceHandle>) -> Self {
        Self {
            instances,
            accel: None,
        }
    }
}

/// `stderr`, followed once it ends by the line `note` resolves to, if any: how a backend adds
/// `isolab: out of memory: …` after an instance the OOM killer struck (its output ends when it
/// is gone), so that the trial's failure names the cause.
pub fn then_note(
    stderr: LineStream,
    note: impl Future<Output = Option<String>> + Send + 'static,
) -> LineStream {
    let note = futures::stream::once(note).filter_map(|n| std::future::ready(n.map(Ok)));
    Box::pin(stderr.chain(note))
}

/// A memory limit as an OOM note names it: `<n> bytes`, or `none`.
pub fn limit_text(memory_bytes: Option<u64>) -> String {
    memory_bytes.map_or_else(|| "none".to_owned(), |b| format!("{b} bytes"))
}

/// Reads `reader` as lines of at most [`MAX_LINE_BYTES`] (longer ones are cut), lossily decoded.
pub fn lines<R: AsyncRead + Send + Unpin + 'static>(reader: R) -> LineStream {
    let reader = BufReader::new(reader);
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let mut buf = Vec::new();
        loop {
            let available = match reader.fill_buf().await {
                Ok(b) => b,
                Err(e) => return Some((Err(e), reader)),
            };
            if available.is_empty() {
                if buf.is_empty() {
                    return None;
                }
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(buf.len());
            buf.extend_from_slice(&available[..take.min(room)]);
            reader.consume(take);
            if done {
                break;
            }
        }
        while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            buf.pop();
        }
        Some((Ok(String::from_utf8_lossy(&buf).into_owned()), reader))
    }))
}

/// The last `n` non-empty lines of `text`, joined with `; `, without runc's log decoration.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(clean_log_line)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// `time="…" level=error msg="container does not exist"` → `container does not exist`.
pub fn clean_log_line(line: &str) -> String {
    let line = line.trim();
    match line.find("msg=\"") {
        Some(i) => {
            let rest = &line[i + 5..];
            rest.rfind('"')
                .map_or(rest, |end| &rest[..end])
                .replace("\\\"", "\"")
        }
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn splits_lines_and_cuts_long_ones() {
        let mut text = b"one\ntwo\r\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES * 2));
        text.extend(b"\nlast");
        let got: Vec<String> = lines(std::io::Cursor::new(text))
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], "one");
        assert_eq!(got[1], "two");
        assert_eq!(got[2].len(), MAX_LINE_BYTES);
        assert_eq!(got[3], "last");
    }

    #[test]
    fn runtime_exit_codes_above_128_are_signals() {
        use std::os::unix::process::ExitStatusExt;
        let code = InstanceExit::from_runtime_code;
        assert_eq!(code(0), InstanceExit::Exited(0));
        assert_eq!(code(2), InstanceExit::Exited(2));
        assert_eq!(code(137), InstanceExit::Signaled(9));
        assert_eq!(code(128), InstanceExit::Exited(128));
        assert!(matches!(code(i64::MAX), InstanceExit::Lost(_)));
        let st = |c: i32| std::process::ExitStatus::from_raw(c << 8);
        let status = InstanceExit::from_runtime_status;
        assert_eq!(status(st(2)), InstanceExit::Exited(2));
        assert_eq!(status(st(137)), InstanceExit::Signaled(9));
        assert_eq!(
            status(std::process::ExitStatus::from_raw(9)),
            InstanceExit::Signaled(9)
        );
    }

    #[test]
    fn exit_descriptions() {
        assert!(InstanceExit::Exited(0).success());
        assert!(!InstanceExit::Signaled(9).success());
        assert_eq!(InstanceExit::Exited(2).to_string(), "exited with code 2");
    }
    #[test]
    fn runc_log_lines_are_cleaned() {
        assert_eq!(
            clean_log_line(
                r#"time="2026-11-25T19:47:30Z" level=error msg="container does not exist""#
            ),
            "container does not exist"
        );
        assert_eq!(clean_log_line("plain text"), "plain text");
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b; c");
    }
}
