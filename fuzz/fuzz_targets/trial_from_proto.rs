//! `trial_from_proto` (crate `isolab-wire`): any bytes decoded as a `RunTrialRequest` (what a
//! caller sends the agent), converted to the agent's trial, whose parameters then go through the
//! bounds the agent admits trials with. Must never panic.
#![no_main]

use isolab_model::validate::{NetContext, ParamBounds, check_param};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = isolab_proto::v1::RunTrialRequest::decode(data) else {
        return;
    };
    let Ok(req) = isolab_wire::convert::trial_from_proto(req) else {
        return;
    };
    let trial = &req.trial;
    let net = NetContext {
        backend: trial.platform_spec.backend(),
        network: trial.platform_spec.network(),
    };
    let bounds = ParamBounds::default();
    for inst in &trial.instances {
        for (name, value) in &inst.params {
            let _ = check_param(name, value, net, &bounds);
        }
    }
});
