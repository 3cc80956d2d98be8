//! [`RunTrialError`]: why the agent's core refused a trial before it started.

use crate::budget::BudgetError;

/// Why a trial was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum RunTrialError {
    /// The agent is shutting down.
    #[error("trial {trial}: the agent is shutting down")]
    ShuttingDown {
        /// Trial id.
        trial: String,
    },
    /// The request is malformed.
    #[error("trial {trial:?}: {reason}")]
    InvalidTrial {
        /// Trial id.
        trial: String,
        /// What is wrong.
        reason: String,
    },
    /// A workload outside the catalog.
    #[error(
        "trial {trial}: instance {instance}: unknown workload `{name}`; this agent runs only: {known}"
    )]
    UnknownWorkload {
        /// Trial id.
        trial: String,
        /// Instance index.
        instance: u32,
        /// The name asked for.
        name: String,
        /// The catalog's names.
        known: String,
    },
    /// A backend this agent does not have.
    #[error("trial {trial}: backend `{backend}` is not implemented in this agent version")]
    BackendNotImplemented {
        /// Trial id.
        trial: String,
        /// Backend name.
        backend: String,
    },
    /// The same trial id is already running here.
    #[error("trial {trial} is already running on this agent")]
    AlreadyRunning {
        /// Trial id.
        trial: String,
    },
    /// The trial does not fit in what is left of the host's budget.
    #[error("trial {trial}: {source}")]
    ResourceExhausted {
        /// Trial id.
        trial: String,
        /// What does not fit.
        #[source]
        source: BudgetError,
    },
}
