//! What `-o json` prints of workflows: RFC 3339 times, durations in seconds, and nothing a
//! machine's credential could be read from (rendered action parameters carry its phone-home
//! URL, so they stay out).

use kiln_model::workflow::{PowerStep, Progress, Workflow};
use kiln_store::{ActionLog, PhoneHome};
use serde::Serialize;

use crate::output::rfc3339_ms;

/// Seconds from Unix milliseconds (a duration).
pub fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[derive(Serialize)]
pub struct WorkflowJson {
    pub id: String,
    pub machine: String,
    pub template: String,
    pub state: String,
    pub message: String,
    pub created: String,
    pub updated: String,
    pub ended: Option<String>,
    pub deadline: String,
    /// From creation to the end (or to now, while it runs).
    pub duration_seconds: f64,
    pub retry_of: Option<String>,
    pub current_action: Option<String>,
    pub actions: Vec<ActionJson>,
    pub bmc: BmcStepsJson,
    pub phone_home: Option<PhoneHomeJson>,
    /// Which address holds the agent credential of this netboot round, since when.
    pub agent_claim: Option<AgentClaimJson>,
    /// When the cloud-init seed was handed to the agent (it leaves once).
    pub seed_served: Option<String>,
    /// Oldest agent log lines dropped to keep the stored log bounded.
    pub log_lines_dropped: u64,
}

#[derive(Serialize)]
pub struct AgentClaimJson {
    pub at: String,
    pub peer: String,
}

#[derive(Serialize)]
pub struct ActionJson {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_seconds: f64,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_seconds: Option<f64>,
    pub message: String,
    pub progress: Option<Progress>,
}

#[derive(Serialize)]
pub struct BmcStepsJson {
    pub start: StepJson,
    pub finish: StepJson,
}

#[derive(Serialize)]
pub struct StepJson {
    pub state: String,
    pub attempts: u32,
    pub message: String,
}

#[derive(Serialize)]
pub struct PhoneHomeJson {
    pub at: String,
    pub peer: String,
    /// What the installed OS posted (cloud-init's phone_home: instance id, hostname).
    pub payload: String,
}

#[derive(Serialize)]
pub struct LogJson {
    pub at: String,
    pub action: String,
    pub attempt: u32,
    pub line: String,
}

fn kebab<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn step(s: &PowerStep) -> StepJson {
    StepJson {
        state: kebab(&s.state),
        attempts: s.attempts,
        message: s.message.clone(),
    }
}

impl WorkflowJson {
    pub fn new(w: &Workflow, phone_home: Option<&PhoneHome>, now_ms: u64) -> Self {
        let actions = w
            .actions
            .iter()
            .map(|a| ActionJson {
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
        WorkflowJson {
            id: w.id.clone(),
            machine: w.hardware.clone(),
            template: w.template.clone(),
            state: w.state.to_string(),
            message: w.message.clone(),
            created: rfc3339_ms(w.created_ms),
            updated: rfc3339_ms(w.updated_ms),
            ended: w.ended_ms.map(rfc3339_ms),
            deadline: rfc3339_ms(w.deadline_ms),
            duration_seconds: seconds(w.ended_ms.unwrap_or(now_ms).saturating_sub(w.created_ms)),
            retry_of: w.retry_of.clone(),
            current_action: w.current().map(|i| w.actions[i].spec.name.clone()),
            actions,
            bmc: BmcStepsJson {
                start: step(&w.power.start),
                finish: step(&w.power.finish),
            },
            log_lines_dropped: w.log_lines_dropped,
            agent_claim: w.agent_claim.as_ref().map(|c| AgentClaimJson {
                at: rfc3339_ms(c.at_ms),
                peer: c.peer.to_string(),
            }),
            seed_served: w.seed_served_ms.map(rfc3339_ms),
            phone_home: phone_home.map(|p| PhoneHomeJson {
                at: rfc3339_ms(p.at_ms),
                peer: p.peer.clone(),
                payload: p.payload.clone(),
            }),
        }
    }
}

impl LogJson {
    pub fn new(w: &Workflow, l: &ActionLog) -> Self {
        LogJson {
            at: rfc3339_ms(l.at_ms),
            action: w
                .actions
                .get(l.action)
                .map_or_else(|| "?".into(), |a| a.spec.name.clone()),
            attempt: l.attempt,
            line: l.line.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::template::parse_template;

    #[test]
    fn workflow_json_has_rfc3339_times_seconds_and_no_action_parameters() {
        let t = parse_template(
            "t.yaml",
            "name: t\ntimeout: 1h\nactions:\n  - name: boot\n    kind: image2disk\n    timeout: 90s\n    with:\n      url: http://k/v1/phone-home/t0ken\n      sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        )
        .unwrap();
        let mut w = kiln_engine::new_workflow("w1".into(), "n1".into(), &t, t.actions.clone(), 0);
        w.actions[0].started_ms = Some(1_000);
        w.actions[0].ended_ms = Some(3_500);
        let v = serde_json::to_value(WorkflowJson::new(&w, None, 10_000)).unwrap();
        assert_eq!(v["created"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["deadline"], "1970-01-01T01:00:00.000Z");
        assert_eq!(v["duration_seconds"], 10.0);
        assert_eq!(v["state"], "pending");
        assert_eq!(v["actions"][0]["timeout_seconds"], 90.0);
        assert_eq!(v["actions"][0]["duration_seconds"], 2.5);
        assert_eq!(v["bmc"]["start"]["state"], "not-needed");
        assert!(!v.to_string().contains("t0ken"), "{v}");
    }
}
