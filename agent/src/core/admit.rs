//! Admission to the host budget: a trial's cgroup plan and final instance limits, computed once,
//! and its reservation of the budget, before anything of it is made ([`crate::budget`]).

use std::sync::Arc;

use crate::budget::{Ask, BudgetError, Ledger, Reservation};
use isolab_backends::lifecycle::{Lifecycle, Planned};
use isolab_backends::{AnyBackend, TrialContext};

/// The trial's cgroup plan and final instance limits (or why there are none: the runner reports
/// it as the trial's prepare error) and its reservation of the budget. Makes nothing.
pub(super) async fn admit_to_budget(
    backend: &AnyBackend,
    ledger: &Arc<Ledger>,
    ctx: &TrialContext,
) -> Result<(Result<Planned, String>, Reservation), BudgetError> {
    let life = Lifecycle(backend);
    let planned = match life.cgroup_plan(ctx).await {
        Ok(mut plan) => {
            ledger.fill_defaults(&mut plan, ctx.trial.instances.len());
            life.planned(ctx, plan).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let ask = planned.as_ref().map_or_else(
        |_| Ask::default(),
        |p| Ask::of(&p.limits, p.plan.disk_bytes),
    );
    let reservation = ledger.reserve(ask)?;
    Ok((planned, reservation))
}
