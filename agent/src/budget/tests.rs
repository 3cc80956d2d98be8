//! Tests of the budget's rules: defaults, all-or-nothing reservations, release, messages.

use super::*;

const GIB: u64 = 1 << 30;

fn host(memory_bytes: u64) -> HostLimits {
    HostLimits {
        memory_bytes,
        pids: 32768,
        disk_free_bytes: 100 * GIB,
        own_memory_bytes: None,
        own_pids: None,
    }
}

fn ledger(memory_bytes: u64) -> Arc<Ledger> {
    let budget = Budget {
        memory_bytes,
        pids: 10_000,
        disk_bytes: 10 * GIB,
        trials: 4,
        instances: 100,
    };
    Ledger::new(
        budget,
        Ceilings {
            pids: 4096,
            memory_bytes,
        },
    )
}

fn ask(memory_bytes: u64) -> Ask {
    Ask {
        memory_bytes,
        pids: 100,
        disk_bytes: 0,
        instances: 2,
    }
}

#[test]
fn defaults_leave_a_reserve_for_the_agent_and_the_os() {
    let b = Budget::resolve(&BudgetConfig::default(), &host(64 * GIB));
    assert_eq!(b.memory_bytes, 64 * GIB - 64 * GIB / 10, "10% above 10 GiB");
    let b = Budget::resolve(&BudgetConfig::default(), &host(4 * GIB));
    assert_eq!(b.memory_bytes, 3 * GIB, "at least 1 GiB");
    let b = Budget::resolve(&BudgetConfig::default(), &host(GIB));
    assert_eq!(b.memory_bytes, GIB / 2, "never more than half");
    assert_eq!(b.pids, 32768 - 3276);
    assert_eq!(b.disk_bytes, 90 * GIB);
    assert_eq!(b.trials, DEFAULT_MAX_TRIALS);
    assert_eq!(b.instances, DEFAULT_MAX_INSTANCES);
}

#[test]
fn a_pod_limit_lowers_the_default_and_a_configured_budget() {
    let pod = HostLimits {
        own_memory_bytes: Some(8 * GIB),
        own_pids: Some(2000),
        ..host(64 * GIB)
    };
    let b = Budget::resolve(&BudgetConfig::default(), &pod);
    assert_eq!(b.memory_bytes, 7 * GIB, "8 GiB pod less 1 GiB");
    assert_eq!(b.pids, 1000, "2000 less half");
    let configured = BudgetConfig {
        memory_bytes: Some(32 * GIB),
        pids: Some(5000),
        ..BudgetConfig::default()
    };
    let b = Budget::resolve(&configured, &pod);
    assert_eq!(b.memory_bytes, 8 * GIB, "never above the pod's limit");
    assert_eq!(b.pids, 2000);
    let b = Budget::resolve(&configured, &host(64 * GIB));
    assert_eq!(b.memory_bytes, 32 * GIB, "the flag replaces the default");
}

#[test]
fn a_trial_beyond_the_budget_is_refused_naming_the_resource() {
    let l = ledger(4 * GIB);
    let e = l.reserve(ask(5 * GIB)).unwrap_err();
    assert_eq!(e.resource, Resource::Memory);
    assert_eq!((e.asked, e.in_use, e.budget), (5 * GIB, 0, 4 * GIB));
    let text = e.to_string();
    for part in [
        "memory limits",
        "asks 5GiB",
        "0 in use",
        "budget 4GiB",
        "--budget-memory",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert!(text.contains("can never fit"), "{text}");
    assert_eq!(l.in_use(), Ask::default(), "nothing taken");
}

#[test]
fn reservations_are_all_or_nothing_and_given_back_on_drop() {
    let l = ledger(4 * GIB);
    let first = l.reserve(ask(3 * GIB)).expect("fits");
    assert_eq!(l.in_use().memory_bytes, 3 * GIB);
    let e = l.reserve(ask(2 * GIB)).unwrap_err();
    assert_eq!((e.in_use, e.budget), (3 * GIB, 4 * GIB));
    assert!(!e.to_string().contains("never"), "{e}");
    assert_eq!(
        l.in_use().pids,
        100,
        "the refused trial took no pids either"
    );
    assert_eq!(l.trials(), 1);
    drop(first);
    assert_eq!(l.in_use(), Ask::default());
    assert_eq!(l.trials(), 0);
    let _second = l.reserve(ask(2 * GIB)).expect("fits after the release");
}

#[test]
fn every_resource_is_checked() {
    let l = ledger(100 * GIB);
    let over = |a: Ask| l.reserve(a).unwrap_err().resource;
    assert_eq!(
        over(Ask {
            pids: 10_001,
            ..ask(0)
        }),
        Resource::Pids
    );
    assert_eq!(
        over(Ask {
            disk_bytes: 11 * GIB,
            ..ask(0)
        }),
        Resource::Disk
    );
    assert_eq!(
        over(Ask {
            instances: 101,
            ..ask(0)
        }),
        Resource::Instances
    );
    let held: Vec<Reservation> = (0..4).map(|_| l.reserve(ask(0)).unwrap()).collect();
    assert_eq!(over(ask(0)), Resource::Trials);
    drop(held);
    assert_eq!(l.trials(), 0);
}

#[test]
fn unset_limits_default_to_the_instance_share_of_the_budget() {
    let l = ledger(4 * GIB);
    let mut plan = CgroupPlan::default();
    l.fill_defaults(&mut plan, 8);
    assert_eq!(plan.memory_default_bytes, Some(GIB / 2));
    assert_eq!(plan.pids_default, Some(1250));
    let mut one = CgroupPlan::default();
    l.fill_defaults(&mut one, 1);
    assert_eq!(one.memory_default_bytes, Some(4 * GIB), "the ceiling");
    assert_eq!(one.pids_default, Some(4096), "the ceiling");
    let mut vm = CgroupPlan {
        memory_default_bytes: Some(300 << 20),
        ..CgroupPlan::default()
    };
    l.fill_defaults(&mut vm, 8);
    assert_eq!(
        vm.memory_default_bytes,
        Some(300 << 20),
        "a backend's own default stays"
    );
}

#[test]
fn asks_sum_the_final_limits() {
    let limits = |m, p| CgroupLimits {
        memory_bytes: Some(m),
        pids_max: Some(p),
        ..CgroupLimits::default()
    };
    let a = Ask::of(&[(0, limits(GIB, 10)), (1, limits(2 * GIB, 20))], 5);
    assert_eq!(
        a,
        Ask {
            memory_bytes: 3 * GIB,
            pids: 30,
            disk_bytes: 5,
            instances: 2
        }
    );
}

#[test]
fn streams_leave_room_beside_the_trials() {
    let c = BudgetConfig {
        max_trials: 8,
        ..BudgetConfig::default()
    };
    assert_eq!(c.max_concurrent_streams(), 8 + EXTRA_STREAMS);
}
