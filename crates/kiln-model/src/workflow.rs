//! Workflows: one per machine, a rendered copy of a template's actions and
//! where each one got to. The engine (kiln-engine) moves them; this is the data.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::template::ActionSpec;

pub use kiln_api::agent::{
    ClaimRequest, Claimed, NextAction, Progress, Report, ReportKind, Seed, WorkflowState,
    valid_agent_run,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStatus {
    pub spec: ActionSpec,
    pub state: ActionState,
    pub attempts: u32,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// Not before this time may the next attempt start (backoff).
    pub retry_at_ms: Option<u64>,
    pub message: String,
    pub progress: Option<Progress>,
    /// Which agent run was given the running attempt (see `NextAction`): the same run asking
    /// again (its answer was lost) gets the same attempt back instead of burning a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub hardware: String,
    pub template: String,
    pub state: WorkflowState,
    pub actions: Vec<ActionStatus>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub ended_ms: Option<u64>,
    /// The whole workflow times out at this time.
    pub deadline_ms: u64,
    pub message: String,
    /// BMC steps: power into netboot at the start, next boot from disk at the end.
    #[serde(default)]
    pub power: PowerSteps,
    /// The template's YAML, for `kiln workflow retry` (absent in workflows made before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_source: Option<String>,
    /// The workflow this one retries, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// Agent log lines dropped, oldest first, to keep the stored log bounded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_lines_dropped: u64,
    /// Who holds the agent credential of this netboot round (the token itself is stored
    /// hashed, apart from the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_claim: Option<AgentClaim>,
    /// When the cloud-init seed was handed to the agent: it leaves once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_served_ms: Option<u64>,
    /// The server URL its actions were rendered with (image and phone-home URLs name it);
    /// another server that serves the machine names itself instead (see `retarget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_for: Option<String>,
}

/// The agent that claimed a workflow's credential: its address binds every later call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaim {
    pub at_ms: u64,
    pub peer: std::net::IpAddr,
    /// The agent run that claimed (see [`NextAction`]); the same run may claim again
    /// after a lost answer.
    pub run: String,
}

/// Stands for the phone-home URL's signature in rendered templates: the server puts the
/// real one in when it hands an action or the seed to the agent, so the store never holds it.
pub const PHONE_HOME_SIGNATURE_MARKER: &str = "KILN-PHONE-HOME-SIGNATURE";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A workflow's BMC steps. Machines without a BMC (or workflows created with
/// `--no-power`) have both `NotNeeded`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerSteps {
    /// Next boot PXE (once), then power on, or cycle when already on; confirmed.
    pub start: PowerStep,
    /// Next boot from disk, after the workflow ended.
    pub finish: PowerStep,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    #[default]
    NotNeeded,
    Pending,
    /// Claimed by a running `kiln serve` until `claimed_until_ms`; a claim that
    /// runs out (the server was killed) is taken up again.
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerStep {
    pub state: StepState,
    pub attempts: u32,
    /// Not before this time (backoff after a failed attempt).
    pub next_at_ms: Option<u64>,
    pub claimed_until_ms: Option<u64>,
    pub message: String,
    /// The server (`server_id`) that holds, or last held, the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// The power command an attempt recorded just before sending it: whoever takes the step
    /// over reads the power state instead of sending a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_sent: Option<String>,
}

impl Workflow {
    /// Index of the action the agent should be working on: the first not yet succeeded.
    pub fn current(&self) -> Option<usize> {
        self.actions
            .iter()
            .position(|a| a.state != ActionState::Succeeded)
    }

    /// `value` (an action parameter) as `server_url` hands it out: the URLs of the server
    /// the workflow was rendered for name `server_url` instead. Any server of a group may
    /// serve a machine (its own segment's, or the survivor when the other died); the machine
    /// reached this one, so this one's image and phone-home URLs are the ones it can use.
    pub fn for_server<'a>(&self, value: &'a str, server_url: &str) -> Cow<'a, str> {
        match self.rendered_for.as_deref() {
            Some(from) if from != server_url => retarget(value, from, server_url),
            _ => Cow::Borrowed(value),
        }
    }
}

/// `value` with every URL under `from` (`from` itself, or `from/…`) moved under `to`.
pub fn retarget<'a>(value: &'a str, from: &str, to: &str) -> Cow<'a, str> {
    if from.is_empty() {
        return Cow::Borrowed(value);
    }
    if value == from {
        return Cow::Owned(to.to_string());
    }
    let under = format!("{from}/");
    if value.contains(&under) {
        Cow::Owned(value.replace(&under, &format!("{to}/")))
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::retarget;

    #[test]
    fn urls_under_the_rendering_server_move_to_the_serving_one() {
        let (a, b) = ("http://10.77.0.1:8080", "http://10.77.0.2:8080");
        assert_eq!(
            retarget("http://10.77.0.1:8080/images/os.raw", a, b),
            "http://10.77.0.2:8080/images/os.raw"
        );
        assert_eq!(retarget(a, a, b), b);
        let script =
            "curl http://10.77.0.1:8080/v1/phone-home/x/sig && echo http://10.77.0.1:8080/a";
        assert_eq!(
            retarget(script, a, b),
            "curl http://10.77.0.2:8080/v1/phone-home/x/sig && echo http://10.77.0.2:8080/a"
        );
    }

    #[test]
    fn other_urls_and_longer_ports_are_left_alone() {
        let (a, b) = ("http://10.77.0.1:80", "http://10.77.0.2:80");
        for v in [
            "http://10.77.0.1:8080/images/x",
            "https://mirror.example/x",
            "",
            "http://10.77.0.1:80x",
        ] {
            assert_eq!(retarget(v, a, b), v);
        }
        assert_eq!(retarget("http://x/y", "", b), "http://x/y");
    }
}
