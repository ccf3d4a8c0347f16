//! What the admin API does with workflows that is not HTTP: the views it returns (no
//! rendered action parameters: they carry the machine's phone-home URL), finding a workflow
//! by id or hostname, and picking machines by name or label selector.

use kiln_api::time::{rfc3339_ms, seconds};
use kiln_api::{
    ActionView, AgentClaimView, BmcStepsView, LogLine, PhoneHomeView, StepView, WorkflowView,
};
use kiln_model::workflow::{PowerStep, Workflow};
use kiln_store::{ActionLog, PhoneHome, Store, StoreError};

/// A state as its JSON name (`timed-out`, `not-needed`).
fn kebab<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// A workflow as the API shows it; `now_ms` ends the duration of one still running.
pub fn view(w: &Workflow, phone_home: Option<&PhoneHome>, now_ms: u64) -> WorkflowView {
    let step = |s: &PowerStep| StepView {
        state: kebab(&s.state),
        attempts: s.attempts,
        message: s.message.clone(),
    };
    let actions = w
        .actions
        .iter()
        .map(|a| ActionView {
            name: a.spec.name.clone(),
            kind: a.spec.kind.to_string(),
            state: kebab(&a.state),
            attempts: a.attempts,
            max_attempts: a.spec.retries + 1,
            timeout_seconds: a.spec.timeout.as_secs_f64(),
            started: a.started_ms.map(rfc3339_ms),
            ended: a.ended_ms.map(rfc3339_ms),
            duration_seconds: a
                .started_ms
                .zip(a.ended_ms)
                .map(|(s, e)| seconds(e.saturating_sub(s))),
            message: a.message.clone(),
            progress: a.progress.clone(),
        })
        .collect();
    WorkflowView {
        id: w.id.clone(),
        machine: w.hardware.clone(),
        template: w.template.clone(),
        state: w.state,
        message: w.message.clone(),
        created: rfc3339_ms(w.created_ms),
        updated: rfc3339_ms(w.updated_ms),
        ended: w.ended_ms.map(rfc3339_ms),
        deadline: rfc3339_ms(w.deadline_ms),
        duration_seconds: seconds(w.ended_ms.unwrap_or(now_ms).saturating_sub(w.created_ms)),
        retry_of: w.retry_of.clone(),
        current_action: w.current().map(|i| w.actions[i].spec.name.clone()),
        actions,
        bmc: BmcStepsView {
            start: step(&w.power.start),
            finish: step(&w.power.finish),
        },
        phone_home: phone_home.map(|p| PhoneHomeView {
            at: rfc3339_ms(p.at_ms),
            peer: p.peer.clone(),
            payload: p.payload.clone(),
        }),
        agent_claim: w.agent_claim.as_ref().map(|c| AgentClaimView {
            at: rfc3339_ms(c.at_ms),
            peer: c.peer.to_string(),
        }),
        seed_served: w.seed_served_ms.map(rfc3339_ms),
        log_lines_dropped: w.log_lines_dropped,
    }
}

/// A workflow as the API shows it, with its phone-home read from the store.
pub fn view_stored(
    store: &dyn Store,
    w: &Workflow,
    now_ms: u64,
) -> Result<WorkflowView, StoreError> {
    Ok(view(w, store.phone_home_of(&w.id)?.as_ref(), now_ms))
}

/// One line of agent output, named by its action.
pub fn log_line(w: &Workflow, l: &ActionLog) -> LogLine {
    LogLine {
        at: rfc3339_ms(l.at_ms),
        action: w
            .actions
            .get(l.action)
            .map_or_else(|| "?".into(), |a| a.spec.name.clone()),
        attempt: l.attempt,
        line: l.line.clone(),
    }
}

/// A workflow by id, or the newest one of a machine (`None`: neither).
pub fn find(store: &dyn Store, key: &str) -> Result<Option<Workflow>, StoreError> {
    if let Some(wf) = store.workflow(key)? {
        return Ok(Some(wf));
    }
    Ok(store
        .workflows(false)?
        .into_iter()
        .find(|w| w.hardware == key))
}

pub use crate::select::{SelectError, select};

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::Hardware;
    use kiln_model::template::parse_template;

    #[test]
    fn views_have_rfc3339_times_seconds_and_no_action_parameters() {
        let t = parse_template(
            "t.yaml",
            "name: t\ntimeout: 1h\nactions:\n  - name: boot\n    kind: image2disk\n    timeout: 90s\n    with:\n      url: http://k/v1/phone-home/t0ken\n      sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        )
        .unwrap();
        let mut w = kiln_engine::new_workflow("w1".into(), "n1".into(), &t, t.actions.clone(), 0);
        w.actions[0].started_ms = Some(1_000);
        w.actions[0].ended_ms = Some(3_500);
        let v = serde_json::to_value(view(&w, None, 10_000)).unwrap();
        assert_eq!(v["created"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["deadline"], "1970-01-01T01:00:00.000Z");
        assert_eq!(v["duration_seconds"], 10.0);
        assert_eq!(v["state"], "pending");
        assert_eq!(v["current_action"], "boot");
        assert_eq!(v["actions"][0]["timeout_seconds"], 90.0);
        assert_eq!(v["actions"][0]["duration_seconds"], 2.5);
        assert_eq!(v["bmc"]["start"]["state"], "not-needed");
        assert!(!v.to_string().contains("t0ken"), "{v}");
        let back: WorkflowView = serde_json::from_value(v).unwrap();
        assert_eq!(back, view(&w, None, 10_000));
    }

    fn machine(name: &str, labels: &[(&str, &str)]) -> Hardware {
        let csv = format!(
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\n{name},52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,{},/dev/vda\n",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("|")
        );
        kiln_model::csv::parse_hardware_csv_rows("h.csv", &csv)
            .unwrap()
            .rows
            .remove(0)
            .hardware
    }

    #[test]
    fn machines_are_picked_by_name_or_by_every_label() {
        let all = vec![
            machine("n1", &[("role", "cp"), ("rack", "a")]),
            machine("n2", &[("role", "cp"), ("rack", "b")]),
        ];
        let names = |r: Result<Vec<Hardware>, SelectError>| {
            r.unwrap()
                .into_iter()
                .map(|h| h.hostname)
                .collect::<Vec<_>>()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(names(select(all.clone(), &s(&["n2"]), &[])), ["n2"]);
        assert_eq!(
            names(select(all.clone(), &[], &s(&["role=cp"]))),
            ["n1", "n2"]
        );
        assert_eq!(
            names(select(all.clone(), &[], &s(&["role=cp", "rack=b"]))),
            ["n2"]
        );
        assert_eq!(
            select(all.clone(), &s(&["n9"]), &[]).unwrap_err(),
            SelectError::NotEnrolled("n9".into())
        );
        assert_eq!(
            select(all.clone(), &[], &s(&["role"])).unwrap_err(),
            SelectError::NotKeyValue("role".into())
        );
        assert_eq!(
            select(all.clone(), &[], &s(&["role=worker"])).unwrap_err(),
            SelectError::NoMatch("role=worker".into())
        );
        assert_eq!(
            select(all, &[], &[]).unwrap_err(),
            SelectError::NothingNamed
        );
    }
}
