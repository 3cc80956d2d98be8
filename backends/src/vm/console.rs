//! Reading a guest's serial console: framed lines are results, everything else is log text.
//!
//! `/init` writes every record as one whole line starting with
//! [`isolab_model::sample::FRAME_PREFIX`] (see `workload/src/pid1.rs`): a sample's JSON, `!ready`,
//! `!end exit=N` / `!end signal=N`, or `!error MESSAGE`. Kernel messages, the workload's stderr and
//! anything else are log lines and are never parsed as data; a framed line whose payload is not
//! one of those is also kept as a log line (a kernel message that cut into it, say), and the
//! sample parser downstream rejects a corrupted JSON payload.

use futures::StreamExt;
use isolab_model::sample::FRAME_PREFIX;
use tokio::sync::{mpsc, oneshot};

use crate::LineStream;

/// Lines buffered per stream before the console reader waits (and with it, QEMU's serial port).
const BUFFER_LINES: usize = 256;

/// How the guest's workload ended, as `/init` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEnd {
    /// The workload exited with this code.
    Exited(i32),
    /// The workload was killed by this signal (e.g. the guest's OOM killer).
    Signaled(i32),
    /// `/init` could not set the guest up; no workload ran.
    InitError(String),
}

/// One console line, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleLine {
    /// A sample's JSON (framing removed).
    Sample(String),
    /// The probe's answer.
    Ready,
    /// The end record.
    End(GuestEnd),
    /// Anything else, verbatim.
    Log(String),
}

/// Classifies one line (without its newline; a trailing `\r` is ignored).
pub fn classify(line: &str) -> ConsoleLine {
    let line = line.trim_end_matches('\r');
    let Some(payload) = line.strip_prefix(FRAME_PREFIX) else {
        return ConsoleLine::Log(line.to_owned());
    };
    if payload.starts_with('{') {
        return ConsoleLine::Sample(payload.to_owned());
    }
    if payload == "!ready" {
        return ConsoleLine::Ready;
    }
    if let Some(msg) = payload.strip_prefix("!error ") {
        return ConsoleLine::End(GuestEnd::InitError(msg.to_owned()));
    }
    if let Some(end) = payload.strip_prefix("!end ") {
        let parsed = if let Some(code) = end.strip_prefix("exit=") {
            code.parse().ok().map(GuestEnd::Exited)
        } else {
            end.strip_prefix("signal=")
                .and_then(|s| s.parse().ok())
                .map(GuestEnd::Signaled)
        };
        if let Some(end) = parsed {
            return ConsoleLine::End(end);
        }
    }
    ConsoleLine::Log(line.to_owned())
}

/// What a console reader hands out: samples, log lines, and at the end what the guest said
/// about itself.
pub struct ConsoleStreams {
    /// Sample JSON lines, in order.
    pub samples: LineStream,
    /// Log lines (console text that is not a record).
    pub logs: LineStream,
    /// Resolves when the console closed (QEMU ended): the record the guest gave, if any.
    pub summary: oneshot::Receiver<ConsoleSummary>,
}

/// What the console said, beyond samples, once it closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleSummary {
    /// The end record, if one came.
    pub end: Option<GuestEnd>,
    /// Whether the probe answer came.
    pub ready: bool,
    /// Framed samples seen.
    pub samples: u64,
    /// The last few log lines, for error messages.
    pub log_tail: Vec<String>,
    /// Processes the guest kernel's OOM killer reported killing.
    pub guest_oom_kills: u64,
}

/// What the guest kernel prints (at error level, so `quiet` keeps it) when its OOM killer
/// strikes.
pub const GUEST_OOM_MESSAGE: &str = "Out of memory: Killed process";
/// The log line added when the workload died of SIGKILL after the guest's OOM killer struck: the
/// VM's own memory was the limit, and the trial's failure says so.
pub const OOM_NOTE: &str = "isolab: out of memory: the guest's OOM killer killed the workload \
                            (the VM's memory is its limit)";

/// Log lines kept for [`ConsoleSummary::log_tail`].
const TAIL_LINES: usize = 5;

/// Reads `console` line by line in a task until it ends, splitting it as the module says.
/// `on_ready` fires at the probe's answer (the console keeps being read).
pub fn split(console: LineStream, on_ready: Option<oneshot::Sender<()>>) -> ConsoleStreams {
    let (sample_tx, sample_rx) = mpsc::channel::<std::io::Result<String>>(BUFFER_LINES);
    let (log_tx, log_rx) = mpsc::channel::<std::io::Result<String>>(BUFFER_LINES);
    let (summary_tx, summary_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut console = console;
        let mut on_ready = on_ready;
        let mut summary = ConsoleSummary::default();
        while let Some(line) = console.next().await {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    let _ = log_tx.send(Err(e)).await;
                    break;
                }
            };
            match classify(&line) {
                ConsoleLine::Sample(json) => {
                    summary.samples += 1;
                    // A closed receiver only means nobody reads samples any more; keep draining
                    // the console so QEMU never blocks on its serial port.
                    let _ = sample_tx.send(Ok(json)).await;
                }
                ConsoleLine::Ready => {
                    summary.ready = true;
                    if let Some(tx) = on_ready.take() {
                        let _ = tx.send(());
                    }
                }
                ConsoleLine::End(end) => {
                    match &end {
                        GuestEnd::InitError(msg) => {
                            let _ = log_tx.send(Ok(format!("guest /init: {msg}"))).await;
                        }
                        GuestEnd::Signaled(9) if summary.guest_oom_kills > 0 => {
                            let _ = log_tx.send(Ok(OOM_NOTE.to_owned())).await;
                        }
                        _ => {}
                    }
                    summary.end = Some(end);
                }
                ConsoleLine::Log(text) => {
                    if text.trim().is_empty() {
                        continue;
                    }
                    if summary.log_tail.len() == TAIL_LINES {
                        summary.log_tail.remove(0);
                    }
                    if text.contains(GUEST_OOM_MESSAGE) {
                        summary.guest_oom_kills += 1;
                    }
                    summary.log_tail.push(text.clone());
                    let _ = log_tx.send(Ok(text)).await;
                }
            }
        }
        let _ = summary_tx.send(summary);
    });
    ConsoleStreams {
        samples: Box::pin(tokio_stream::wrappers::ReceiverStream::new(sample_rx)),
        logs: Box::pin(tokio_stream::wrappers::ReceiverStream::new(log_rx)),
        summary: summary_rx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines;

    #[test]
    fn only_framed_lines_are_records() {
        let s = r#"{"metric":"x","value":1.0,"unit":"ns","higher_is_better":false}"#;
        assert_eq!(
            classify(&format!("{FRAME_PREFIX}{s}\r")),
            ConsoleLine::Sample(s.into())
        );
        assert_eq!(
            classify(s),
            ConsoleLine::Log(s.into()),
            "unframed JSON is not data"
        );
        assert_eq!(
            classify(&format!("[ 0.1] {FRAME_PREFIX}{s}")),
            ConsoleLine::Log(format!("[ 0.1] {FRAME_PREFIX}{s}"))
        );
        assert_eq!(
            classify("@@isolab@@ !end exit=3"),
            ConsoleLine::End(GuestEnd::Exited(3))
        );
        assert_eq!(
            classify("@@isolab@@ !end signal=9"),
            ConsoleLine::End(GuestEnd::Signaled(9))
        );
        assert_eq!(
            classify("@@isolab@@ !end exit=x"),
            ConsoleLine::Log("@@isolab@@ !end exit=x".into())
        );
        assert_eq!(
            classify("@@isolab@@ !error no workload"),
            ConsoleLine::End(GuestEnd::InitError("no workload".into()))
        );
        assert_eq!(classify("@@isolab@@ !ready"), ConsoleLine::Ready);
        assert_eq!(
            classify("@@isolab@@ hello"),
            ConsoleLine::Log("@@isolab@@ hello".into())
        );
    }

    #[tokio::test]
    async fn a_guest_oom_kill_is_named_in_the_logs() {
        let text = format!(
            "{FRAME_PREFIX}{{\"metric\":\"bytes_reached\",\"value\":1.0,\"unit\":\"bytes\",\"higher_is_better\":true}}\n\
             [    3.1] Out of memory: Killed process 60 (init) total-vm:99kB\n\
             {FRAME_PREFIX}!end signal=9\n"
        );
        let streams = split(lines(std::io::Cursor::new(text.into_bytes())), None);
        let logs: Vec<String> = streams.logs.map(Result::unwrap).collect().await;
        let summary = streams.summary.await.unwrap();
        assert_eq!(summary.guest_oom_kills, 1);
        assert_eq!(summary.end, Some(GuestEnd::Signaled(9)));
        assert_eq!(logs.last().map(String::as_str), Some(OOM_NOTE));

        let killed = format!("{FRAME_PREFIX}!end signal=9\n");
        let streams = split(lines(std::io::Cursor::new(killed.into_bytes())), None);
        let logs: Vec<String> = streams.logs.map(Result::unwrap).collect().await;
        assert!(logs.is_empty(), "no OOM, no note: {logs:?}");
    }

    #[tokio::test]
    async fn garbage_interleaved_with_samples_is_only_logged() {
        let s1 = r#"{"metric":"a","value":1.0,"unit":"ns","higher_is_better":false}"#;
        let s2 = r#"{"metric":"b","value":2.0,"unit":"ns","higher_is_better":false}"#;
        let text = format!(
            "[    0.825952] PCI: Fatal: No config space access function found\r\n\
             {FRAME_PREFIX}{s1}\r\n\
             {{\"metric\":\"fake\",\"value\":1,\"unit\":\"ns\",\"higher_is_better\":true}}\r\n\
             \x1b[0mweird \u{fffd} bytes\r\n\
             {FRAME_PREFIX}{s2}\r\n\
             \r\n\
             {FRAME_PREFIX}!end exit=0\r\n\
             [    4.481146] reboot: Power down\r\n"
        );
        let streams = split(lines(std::io::Cursor::new(text.into_bytes())), None);
        let samples: Vec<String> = streams.samples.map(Result::unwrap).collect().await;
        let logs: Vec<String> = streams.logs.map(Result::unwrap).collect().await;
        let summary = streams.summary.await.unwrap();
        assert_eq!(samples, vec![s1.to_owned(), s2.to_owned()]);
        assert_eq!(logs.len(), 4, "{logs:?}");
        assert!(logs[1].contains("fake"));
        assert_eq!(summary.end, Some(GuestEnd::Exited(0)));
        assert_eq!(summary.samples, 2);
        assert!(!summary.ready);
        assert_eq!(
            summary.log_tail.last().map(String::as_str),
            Some("[    4.481146] reboot: Power down")
        );
    }
}
