//! Workflows, their logs and templates as the admin API shows them: RFC 3339 times, durations
//! in seconds, and nothing a machine's credential could be read from (rendered action
//! parameters carry its phone-home URL, so they stay out).

use crate::agent::{Progress, WorkflowState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An action's `state` once it succeeded (the states are kiln-model's `ActionState`).
pub const ACTION_SUCCEEDED: &str = "succeeded";

/// One workflow: `GET /api/v1/workflows/{id}`, and what `kiln workflow ... -o json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    pub id: String,
    pub machine: String,
    pub template: String,
    /// pending, netbooting, running, rebooting, succeeded, failed, timed-out.
    #[schema(value_type = String)]
    pub state: WorkflowState,
    pub message: String,
    pub created: String,
    pub updated: String,
    pub ended: Option<String>,
    pub deadline: String,
    /// From creation to the end (or to now, while it runs).
    pub duration_seconds: f64,
    pub retry_of: Option<String>,
    pub current_action: Option<String>,
    pub actions: Vec<ActionView>,
    pub bmc: BmcStepsView,
    pub phone_home: Option<PhoneHomeView>,
    /// Which address holds the agent credential of this netboot round, since when.
    pub agent_claim: Option<AgentClaimView>,
    /// When the cloud-init seed was handed to the agent (it leaves once).
    pub seed_served: Option<String>,
    /// Oldest agent log lines dropped to keep the stored log bounded.
    pub log_lines_dropped: u64,
}

impl WorkflowView {
    /// Index of the action being worked on: the first not yet succeeded.
    pub fn current(&self) -> Option<usize> {
        self.actions
            .iter()
            .position(|a| a.state != ACTION_SUCCEEDED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentClaimView {
    pub at: String,
    pub peer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionView {
    pub name: String,
    pub kind: String,
    /// pending, running, succeeded, failed, timed-out.
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_seconds: f64,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_seconds: Option<f64>,
    pub message: String,
    /// Streaming progress (image2disk): `{done, total, rate_bps}` in bytes.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BmcStepsView {
    pub start: StepView,
    pub finish: StepView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// not-needed, pending, running, done, failed.
    pub state: String,
    pub attempts: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhoneHomeView {
    pub at: String,
    pub peer: String,
    /// What the installed OS posted (cloud-init's phone_home: instance id, hostname).
    pub payload: String,
}

/// `POST /api/v1/workflows`: one workflow per machine from a template; netboot on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateWorkflows {
    /// The template's file name, for diagnostics (`debian.yaml:3: kind: ...`).
    pub template_file: String,
    /// The template's YAML text.
    pub template: String,
    /// Machines by hostname...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware: Vec<String>,
    /// ...or those whose labels match every `k=v`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    #[serde(flatten)]
    pub start: StartOptions,
}

/// How new workflows reach and power their machines (create and retry).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StartOptions {
    /// Kiln's URL as machines reach it (default: the server's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Leave the BMCs alone: the operator powers the machines.
    #[serde(default)]
    pub no_power: bool,
}

/// `POST /api/v1/workflows/{id}/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CancelRequest {
    /// Why, for the machine's events (default: "cancelled by the operator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One line of agent output; what `kiln workflow logs -o json` prints per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub at: String,
    pub action: String,
    pub attempt: u32,
    pub line: String,
}

/// Lines of agent output one logs page holds at most (a full page: more may follow).
pub const LOG_PAGE: usize = 1000;

/// `GET /api/v1/workflows/{id}/logs?after=N`: the next lines and where to go on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub workflow: String,
    pub lines: Vec<LogLine>,
    /// Pass as `after` to get the lines that follow these.
    pub after: i64,
    /// The workflow has ended: no line will follow the last one.
    pub ended: bool,
    /// Oldest lines dropped to keep the stored log bounded.
    pub log_lines_dropped: u64,
    /// How many lines the server keeps per workflow (the newest).
    #[serde(default)]
    pub log_lines_kept: u64,
}

/// A template shipped with Kiln (`GET /api/v1/templates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateInfo {
    /// Its file in the repository's `workflows/`.
    pub file: String,
    /// The template's `name`.
    pub name: String,
    pub timeout_seconds: f64,
    /// Its actions' names, in order.
    pub actions: Vec<String>,
    /// The YAML.
    pub source: String,
}

/// `POST /api/v1/templates/validate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidateTemplate {
    /// For diagnostics.
    pub file_name: String,
    /// The YAML.
    pub template: String,
}

/// What the validation found: `valid` and the template's outline, or the problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateCheck {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<crate::Detail>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_requests_carry_the_start_options_flat() {
        let req = CreateWorkflows {
            template_file: "t.yaml".into(),
            template: "name: t".into(),
            hardware: vec!["n1".into()],
            selector: Vec::new(),
            start: StartOptions {
                server_url: None,
                no_power: true,
            },
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["no_power"], true);
        assert!(v.get("selector").is_none(), "{v}");
        let back: CreateWorkflows =
            serde_json::from_str(r#"{"template_file":"t","template":"x","selector":["a=b"]}"#)
                .unwrap();
        assert_eq!(back.selector, ["a=b"]);
        assert!(!back.start.no_power && back.start.server_url.is_none());
    }
}
