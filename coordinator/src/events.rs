//! Run events: trial status changes and live samples, published while a run goes.
//!
//! The core types ([`RunEvent`]) know nothing of gRPC or NATS. A run publishes them on an
//! [`EventBus`]: the in-process bus by default ([`MemoryBus`], a broadcast channel with a
//! bounded history so a late subscriber sees the run so far), or NATS JetStream with
//! `--events nats://HOST:PORT`. Publishing never blocks the run and never fails it: events go
//! through a bounded queue; when NATS is down or slow they are dropped, counted and logged.
//!
//! # Subjects (NATS)
//!
//! | subject | events |
//! |---|---|
//! | `isolab.run.<run>.status` | `run_started`, `run_finished` |
//! | `isolab.run.<run>.trial.<trial>.status` | `trial_status` |
//! | `isolab.run.<run>.trial.<trial>.samples` | `sample` |
//!
//! `<run>` and `<trial>` are the ids with `.`, `*`, `>` and whitespace replaced by `_`. All
//! subjects are stored in the JetStream stream `ISOLAB_EVENTS` (subjects `isolab.run.>`, file
//! storage, 7 days, 1 GiB, oldest discarded first), created by whichever side needs it first.
//!
//! # Payload
//!
//! One JSON object per message, `kind` telling which:
//!
//! ```json
//! {"run_id":"q-20260101T000000Z-1a2b","at":"2026-01-01T00:00:00Z","kind":"run_started","pipeline":"q","trials":3,"to_run":3}
//! {"run_id":"…","at":"…","kind":"trial_status","trial_id":"3f1c…","experiment":"micro","platform":"native",
//!  "workload":"syscall","agent":"http://127.0.0.1:7411","host":"node1","attempt":1,"state":"ok","duration_ms":412}
//! {"run_id":"…","at":"…","kind":"sample","trial_id":"3f1c…","instance":0,"metric":"ns_per_call","value":52.1,"unit":"ns"}
//! {"run_id":"…","at":"…","kind":"run_finished","status":"ok","ok":3,"failed":0,"not_run":0}
//! ```
//!
//! `state` is one of `running`, `ok`, `failed`, `timed_out`, `cancelled`, `retrying`, `not_run`;
//! `reason` accompanies failures; `t_offset_s` is present on time-series samples. `agent`,
//! `host`, `reason`, `duration_ms` and `t_offset_s` are omitted when unknown.

mod bus;
mod event;
mod memory;
mod nats;
mod nats_watch;
mod render;

pub use bus::{EventBus, EventsUrlError};
pub use event::{
    EventKind, LiveSample, RUN_STATUS_FILTER, RunEvent, SUBJECT_PREFIX, TrialEventState,
    TrialStatus, run_filter, subject_token,
};
pub use memory::{DEFAULT_HISTORY_EVENTS, MemoryBus, Subscription};
pub use nats::{
    NatsError, NatsPublisher, PublishStats, STREAM_MAX_AGE, STREAM_MAX_BYTES, STREAM_NAME,
    STREAM_SUBJECTS, connect as connect_nats, ensure_stream,
};
pub use nats_watch::{NatsWatch, NatsWatchError};
pub use render::Render;
