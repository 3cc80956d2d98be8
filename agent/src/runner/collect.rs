//! Reading an instance's output while it runs: stdout lines become samples (a line that is not
//! one fails the trial, and the run goes on), stderr lines become log events and the last few are
//! kept for the failure message.

use std::collections::VecDeque;

use futures::StreamExt;
use isolab_model::sample::{ParseSampleError, Sample};
use tokio::sync::mpsc;

use crate::core::{LogStream, TrialEvent};
use isolab_backends::LineStream;

/// How many stderr lines are kept for a failure message.
pub(crate) const STDERR_TAIL_LINES: usize = 5;
/// Longest stdout line quoted in a failure message.
const QUOTE_CHARS: usize = 200;

/// What an instance's stdout held.
#[derive(Debug, Default)]
pub(crate) struct StdoutSummary {
    /// Samples parsed and forwarded.
    pub(crate) samples: u64,
    /// The first reason the output is unacceptable (a line that is not a sample, a read error).
    pub(crate) bad: Option<String>,
}

/// Forwards every sample of `stream`; other lines are logged and the first one is recorded.
pub(crate) async fn stdout(
    instance: u32,
    mut stream: LineStream,
    events: mpsc::Sender<TrialEvent>,
) -> StdoutSummary {
    let mut summary = StdoutSummary::default();
    while let Some(line) = stream.next().await {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                summary
                    .bad
                    .get_or_insert(format!("instance {instance}: reading stdout: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match Sample::parse_line(&line) {
            Ok(sample) => {
                summary.samples += 1;
                // A closed channel means nobody listens any more; the runner notices and stops.
                let _ = events.send(TrialEvent::Sample { instance, sample }).await;
            }
            Err(e) => {
                summary
                    .bad
                    .get_or_insert_with(|| not_a_sample(instance, &line, &e));
                let _ = events
                    .send(TrialEvent::Log {
                        instance,
                        stream: LogStream::Stdout,
                        text: line,
                    })
                    .await;
            }
        }
    }
    summary
}

fn not_a_sample(instance: u32, line: &str, e: &ParseSampleError) -> String {
    let quoted: String = line.chars().take(QUOTE_CHARS).collect();
    let why = match e {
        ParseSampleError::Json { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    format!("instance {instance} printed a line that is not a sample: {quoted:?} ({why})")
}

/// Forwards every stderr line as a log event; returns the last [`STDERR_TAIL_LINES`].
pub(crate) async fn stderr(
    instance: u32,
    mut stream: LineStream,
    events: mpsc::Sender<TrialEvent>,
) -> Vec<String> {
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Some(Ok(text)) = stream.next().await {
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.clone());
        let _ = events
            .send(TrialEvent::Log {
                instance,
                stream: LogStream::Stderr,
                text,
            })
            .await;
    }
    tail.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_backends::lines;

    #[tokio::test]
    async fn samples_are_forwarded_and_garbage_is_reported() {
        let text = "{\"metric\":\"m\",\"value\":1.5,\"unit\":\"ns\",\"higher_is_better\":false}\n\nhello\n";
        let (tx, mut rx) = mpsc::channel(16);
        let summary = stdout(3, lines(std::io::Cursor::new(text.as_bytes().to_vec())), tx).await;
        assert_eq!(summary.samples, 1);
        let bad = summary.bad.expect("garbage noticed");
        assert!(
            bad.starts_with("instance 3 printed a line that is not a sample: \"hello\""),
            "{bad}"
        );
        match rx.recv().await {
            Some(TrialEvent::Sample {
                instance: 3,
                sample,
            }) => assert_eq!(sample.value, 1.5),
            other => panic!("expected a sample, got {other:?}"),
        }
        assert!(matches!(
            rx.recv().await,
            Some(TrialEvent::Log {
                stream: LogStream::Stdout,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn stderr_keeps_the_tail() {
        let text: String = (0..8).map(|i| format!("line {i}\n")).collect();
        let (tx, mut rx) = mpsc::channel(16);
        let tail = stderr(0, lines(std::io::Cursor::new(text.into_bytes())), tx).await;
        assert_eq!(tail, vec!["line 3", "line 4", "line 5", "line 6", "line 7"]);
        let mut logs = 0;
        while rx.try_recv().is_ok() {
            logs += 1;
        }
        assert_eq!(logs, 8);
    }
}
