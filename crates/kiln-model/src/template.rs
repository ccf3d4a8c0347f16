//! Workflow templates: YAML in `workflows/`, validated at creation with the
//! line of every problem, and rendered per machine in a sandbox.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::Hardware;

pub use kiln_api::agent::{ActionKind, ActionSpec};

/// A validated template. Parameters are still template text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub timeout: Duration,
    pub actions: Vec<ActionSpec>,
    /// The YAML it was parsed from: kept with each workflow so `kiln workflow retry` can
    /// render it again (a new token, the machine's current record).
    pub source: String,
}

/// Defaults when a template does not say.
pub const DEFAULT_WORKFLOW_TIMEOUT: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One problem in a template file.
/// One problem in a template, at its line and column (`field`: the key, like `actions[2].timeout`).
pub type TemplateError = crate::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateErrors(pub Vec<TemplateError>);

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

// The YAML as written, with locations.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: Spanned<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    actions: Spanned<Vec<Spanned<RawAction>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    retries: Option<Spanned<u32>>,
    #[serde(default)]
    with: BTreeMap<String, Spanned<String>>,
}

/// Parses `30s`, `20m`, `1h30m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration (like 90s, 20m, 1h30m)");
    if s.is_empty() {
        return Err(bad());
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The largest template taken (real ones are a few KiB; a cloud-init user-data inline too).
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;

/// A YAML location as (line, column).
fn pos(at: Location) -> (u64, u64) {
    (at.line(), at.column())
}

/// Parses and validates a template. All problems are reported, each with its line.
pub fn parse_template(file: &str, text: &str) -> Result<Template, TemplateErrors> {
    let raw = read_raw(file, text)?;
    let mut problems = Problems {
        file,
        errors: Vec::new(),
    };
    let name = raw.name.value.trim().to_string();
    if !crate::labels::is_dns_subdomain(&name) {
        problems.push(
            pos(raw.name.referenced),
            "name",
            format!("{name:?} must be lower-case letters, digits and '-'"),
        );
    }
    let timeout = problems.timeout(raw.timeout.as_ref(), "timeout", DEFAULT_WORKFLOW_TIMEOUT);
    if raw.actions.value.is_empty() {
        problems.push(
            pos(raw.actions.referenced),
            "actions",
            "at least one action is required".into(),
        );
    }
    let mut actions = Vec::new();
    let mut names = BTreeMap::new();
    let count = raw.actions.value.len();
    for (i, a) in raw.actions.value.iter().enumerate() {
        if let Some(action) = problems.action(i, count, a, &mut names) {
            actions.push(action);
        }
    }
    if problems.errors.is_empty() {
        Ok(Template {
            name,
            timeout,
            actions,
            source: text.to_string(),
        })
    } else {
        Err(TemplateErrors(problems.errors))
    }
}

fn located(file: &str, (line, column): (u64, u64), field: &str, message: String) -> TemplateError {
    TemplateError {
        file: file.to_string(),
        line: line.max(1) as usize,
        column: column.max(1) as usize,
        field: field.to_string(),
        message,
    }
}

/// The template's YAML, typed; a refusal here is the only error.
fn read_raw(file: &str, text: &str) -> Result<RawTemplate, TemplateErrors> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateErrors(vec![located(
            file,
            (1, 1),
            "",
            format!(
                "the template is larger than {} KiB: not a workflow template",
                MAX_TEMPLATE_BYTES / 1024
            ),
        )]));
    }
    // Typed all the way down: an alias to a nested list fails at its first element, so an
    // alias bomb is refused before it expands.
    serde_saphyr::from_str(text).map_err(|e| {
        let at = e.location().map(pos).unwrap_or((1, 1));
        // The library's message may carry a rendered snippet; keep its first line.
        let msg = e.to_string();
        let first = msg
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .to_string();
        TemplateErrors(vec![located(file, at, "", first)])
    })
}

/// Every problem found so far in one template.
struct Problems<'a> {
    file: &'a str,
    errors: Vec<TemplateError>,
}

impl Problems<'_> {
    fn push(&mut self, at: (u64, u64), field: &str, message: String) {
        self.errors.push(located(self.file, at, field, message));
    }

    /// A timeout field, or the default when it is absent or invalid.
    fn timeout(
        &mut self,
        field: Option<&Spanned<String>>,
        name: &str,
        default: Duration,
    ) -> Duration {
        match field {
            None => default,
            Some(t) => parse_duration(&t.value).unwrap_or_else(|m| {
                self.push(pos(t.referenced), name, m);
                default
            }),
        }
    }

    /// Checks action `i` of `count`; `None` when its kind is unknown.
    fn action(
        &mut self,
        i: usize,
        count: usize,
        a: &Spanned<RawAction>,
        names: &mut BTreeMap<String, u64>,
    ) -> Option<ActionSpec> {
        let at = |s: &str| format!("actions[{i}].{s}");
        let a_line = pos(a.referenced);
        let a = &a.value;
        let aname = a.name.value.trim().to_string();
        if aname.is_empty() {
            self.push(
                pos(a.name.referenced),
                &at("name"),
                "must not be empty".into(),
            );
        } else if let Some(first) = names.insert(aname.clone(), a.name.referenced.line()) {
            self.push(
                pos(a.name.referenced),
                &at("name"),
                format!("{aname:?} is already the name of the action on line {first}"),
            );
        }
        let kind = self.kind(&a.kind, &at("kind"))?;
        let timeout = self.timeout(a.timeout.as_ref(), &at("timeout"), DEFAULT_ACTION_TIMEOUT);
        let retries = a.retries.as_ref().map(|r| r.value).unwrap_or(0);
        if let Some(r) = &a.retries
            && r.value > 10
        {
            self.push(
                pos(r.referenced),
                &at("retries"),
                format!("{} is more than 10", r.value),
            );
        }
        self.params(kind, a, a_line, &at);
        if kind.ends_agent() && i + 1 != count {
            self.push(
                pos(a.kind.referenced),
                &at("kind"),
                format!("{kind} must be the last action: the agent is gone after it"),
            );
        }
        let params = a
            .with
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        Some(ActionSpec {
            name: aname,
            kind,
            timeout,
            retries,
            params,
            guard: None,
        })
    }

    fn kind(&mut self, kind: &Spanned<String>, field: &str) -> Option<ActionKind> {
        let found = ActionKind::ALL
            .iter()
            .find(|(n, _)| *n == kind.value.trim())
            .map(|(_, k)| *k);
        if found.is_none() {
            let known: Vec<&str> = ActionKind::ALL.iter().map(|(n, _)| *n).collect();
            self.push(
                pos(kind.referenced),
                field,
                format!(
                    "unknown kind {:?} (one of {})",
                    kind.value,
                    known.join(", ")
                ),
            );
        }
        found
    }

    /// The `with` parameters: the kind's required ones present, no others,
    /// each valid template syntax, and a literal sha256 well-formed.
    fn params(
        &mut self,
        kind: ActionKind,
        a: &RawAction,
        a_line: (u64, u64),
        at: &dyn Fn(&str) -> String,
    ) {
        let (required, optional) = kind.params();
        for p in required {
            if !a.with.contains_key(*p) {
                self.push(a_line, &at("with"), format!("{kind} needs parameter {p:?}"));
            }
        }
        for (k, v) in &a.with {
            if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
                let allowed: Vec<&str> = required.iter().chain(optional).copied().collect();
                let list = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                };
                self.push(
                    pos(v.referenced),
                    &at(&format!("with.{k}")),
                    format!("{kind} takes no parameter {k:?} (it takes {list})"),
                );
            }
            if let Err(e) = check_syntax(&v.value) {
                self.push(pos(v.referenced), &at(&format!("with.{k}")), e);
            }
        }
        if let Some(sha) = a.with.get("sha256") {
            let s = sha.value.trim();
            if !s.contains("{{") && (s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit())) {
                self.push(
                    pos(sha.referenced),
                    &at("with.sha256"),
                    "must be 64 hex digits".into(),
                );
            }
        }
    }
}

/// Template engine: no loader (no file access), strict undefined variables,
/// bounded work ("fuel") so a template cannot spin.
fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(100_000));
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

fn check_syntax(source: &str) -> Result<(), String> {
    let env = environment();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| format!("template error: {}", e.detail().unwrap_or(&e.to_string())))
}

/// Values a template can use.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    pub hardware: HardwareView,
    /// Kiln's base URL as machines reach it.
    pub server: String,
    pub workflow: WorkflowView,
    /// Imported images by name: `{{ images["test-os"].url }}`, `.sha256`, `.size`.
    pub images: BTreeMap<String, ImageView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageView {
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkflowView {
    pub id: String,
    /// Where the installed OS reports that it is up (cloud-init's phone_home).
    pub phone_home_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HardwareView {
    pub hostname: String,
    pub mac: String,
    pub ip: String,
    pub netmask: String,
    pub prefix: u32,
    pub gateway: Option<String>,
    pub nameservers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub disk: String,
    pub vlan_id: Option<u16>,
}

impl From<&Hardware> for HardwareView {
    fn from(h: &Hardware) -> Self {
        HardwareView {
            hostname: h.hostname.clone(),
            mac: h.mac.to_string(),
            ip: h.ip.to_string(),
            netmask: h.netmask.to_string(),
            prefix: h.prefix_len(),
            gateway: h.gateway.map(|g| g.to_string()),
            nameservers: h.nameservers.iter().map(ToString::to_string).collect(),
            labels: h.labels.clone(),
            disk: h.disk.clone(),
            vlan_id: h.vlan_id,
        }
    }
}

/// Renders every parameter of every action for one machine.
pub fn render_actions(template: &Template, ctx: &RenderContext) -> Result<Vec<ActionSpec>, String> {
    let env = environment();
    let mut out = Vec::with_capacity(template.actions.len());
    for a in &template.actions {
        let mut params = BTreeMap::new();
        for (k, v) in &a.params {
            let rendered = env
                .render_str(v, minijinja::value::Serde(ctx))
                .map_err(|e| {
                    format!(
                        "action {:?}, parameter {k}: {}",
                        a.name,
                        e.detail().unwrap_or(&e.to_string())
                    )
                })?;
            params.insert(k.clone(), rendered);
        }
        if a.kind.params().1.contains(&"disk") {
            // The installed OS lives on the machine's disk unless the action says otherwise.
            params
                .entry("disk".into())
                .or_insert_with(|| ctx.hardware.disk.clone());
        }
        if a.kind == ActionKind::Image2disk {
            let sha = params
                .get("sha256")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "action {:?}: sha256 renders to {sha:?}, not 64 hex digits",
                    a.name
                ));
            }
        }
        out.push(ActionSpec {
            params,
            ..a.clone()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name: debian-test-os
timeout: 45m
actions:
  - name: stream-image
    kind: image2disk
    timeout: 20m
    retries: 2
    with:
      url: "{{ server }}/artifacts/test-os.raw.zst"
      sha256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  - name: seed
    kind: cloud-init
  - name: reboot
    kind: reboot
"#;

    #[test]
    fn parses_a_good_template() {
        let t = parse_template("t.yaml", GOOD).unwrap();
        assert_eq!(t.name, "debian-test-os");
        assert_eq!(t.timeout, Duration::from_secs(45 * 60));
        assert_eq!(t.actions.len(), 3);
        assert_eq!(t.actions[0].retries, 2);
        assert_eq!(t.actions[0].kind, ActionKind::Image2disk);
        assert_eq!(t.actions[2].timeout, DEFAULT_ACTION_TIMEOUT);
    }

    #[test]
    fn every_problem_has_its_line() {
        let bad = r#"name: Bad_Name
timeout: soon
actions:
  - name: a
    kind: image2dsk
  - name: a
    kind: image2disk
    with:
      url: "{{ server"
      colour: red
      sha256: "xyz"
  - name: r
    kind: reboot
  - name: after
    kind: exec
    with:
      command: "true"
"#;
        let errs = parse_template("bad.yaml", bad).unwrap_err();
        let text = errs.to_string();
        for want in [
            "bad.yaml:1:7: name:",
            "bad.yaml:2:10: timeout: \"soon\" is not a duration",
            "bad.yaml:5:11: actions[0].kind: unknown kind \"image2dsk\"",
            "bad.yaml:6:11: actions[1].name: \"a\" is already the name of the action on line 4",
            "bad.yaml:9:12: actions[1].with.url: template error",
            "bad.yaml:10:15: actions[1].with.colour: image2disk takes no parameter \"colour\"",
            "bad.yaml:11:15: actions[1].with.sha256: must be 64 hex digits",
            "bad.yaml:13:11: actions[2].kind: reboot must be the last action",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn wipe_and_poweroff() {
        let text = "name: wipe-disk\nactions:\n  - name: wipe\n    kind: wipe\n  - name: wipe-other\n    kind: wipe\n    with:\n      disk: /dev/sdb\n  - name: off\n    kind: poweroff\n";
        let t = parse_template("w.yaml", text).unwrap();
        let kinds: Vec<ActionKind> = t.actions.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [ActionKind::Wipe, ActionKind::Wipe, ActionKind::Poweroff]
        );
        assert!(!ActionKind::Wipe.ends_agent());
        assert!(ActionKind::Poweroff.ends_agent() && ActionKind::Poweroff.ends_workflow());
        assert!(!ActionKind::Reboot.ends_workflow());
        // The machine's disk unless the action names one; poweroff takes none.
        let actions = render_actions(&t, &ctx()).unwrap();
        assert_eq!(actions[0].params["disk"], "/dev/vda");
        assert_eq!(actions[1].params["disk"], "/dev/sdb");
        assert!(actions[2].params.is_empty());

        // The shipped deprovisioning workflow.
        let shipped = include_str!("../../../workflows/wipe-disk.yaml");
        let t = parse_template("wipe-disk.yaml", shipped).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<ActionKind> = t.actions.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [ActionKind::Wipe, ActionKind::Poweroff]);

        let bad = "name: w\nactions:\n  - name: off\n    kind: poweroff\n    with:\n      disk: /dev/sda\n  - name: wipe\n    kind: wipe\n    with:\n      size: \"1\"\n";
        let text = parse_template("w.yaml", bad).unwrap_err().to_string();
        for want in [
            "w.yaml:6:13: actions[0].with.disk: poweroff takes no parameter \"disk\" (it takes none)",
            "w.yaml:4:11: actions[0].kind: poweroff must be the last action",
            "w.yaml:10:13: actions[1].with.size: wipe takes no parameter \"size\" (it takes disk)",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn yaml_errors_and_unknown_fields_have_lines() {
        let errs = parse_template(
            "x.yaml",
            "name: a\nactions:\n  - name: b\n    kind: reboot\n    colour: red\n",
        )
        .unwrap_err();
        assert_eq!(errs.0[0].line, 5, "{errs}");
        let errs = parse_template("x.yaml", "name: a\nactions: [\n").unwrap_err();
        assert!(errs.0[0].line >= 2, "{errs}");
        let errs = parse_template("x.yaml", "actions: []\n").unwrap_err();
        assert!(errs.to_string().contains("name"), "{errs}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "10", "m", "1x", "0s", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn ctx() -> RenderContext {
        let csv = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
                   node1,,,,52:54:00:00:00:01,10.0.0.11,255.255.255.0,10.0.0.1,1.1.1.1|8.8.8.8,type=cp,/dev/vda\n";
        let hw = crate::csv::parse_hardware_csv("t.csv", csv)
            .unwrap()
            .remove(0);
        RenderContext {
            hardware: (&hw).into(),
            server: "http://10.0.0.1:8080".into(),
            workflow: WorkflowView {
                id: "wf1".into(),
                phone_home_url: "http://10.0.0.1:8080/v1/phone-home/t".into(),
            },
            images: BTreeMap::new(),
        }
    }

    #[test]
    fn renders_per_machine_and_fills_the_disk() {
        let t = parse_template("t.yaml", GOOD).unwrap();
        let actions = render_actions(&t, &ctx()).unwrap();
        assert_eq!(
            actions[0].params["url"],
            "http://10.0.0.1:8080/artifacts/test-os.raw.zst"
        );
        assert_eq!(actions[0].params["disk"], "/dev/vda");
        // Every action that works on the installed OS knows its disk.
        assert_eq!(actions[1].params["disk"], "/dev/vda", "cloud-init");
        assert!(
            !actions[2].params.contains_key("disk"),
            "reboot takes no disk"
        );
    }

    #[test]
    fn rendering_is_strict_and_sandboxed() {
        let mut t = parse_template("t.yaml", GOOD).unwrap();
        t.actions[0]
            .params
            .insert("url".into(), "{{ hardware.nosuchfield }}".into());
        assert!(render_actions(&t, &ctx()).unwrap_err().contains("url"));
        // No file access: include/import need a loader, and there is none.
        t.actions[0]
            .params
            .insert("url".into(), "{% include '/etc/passwd' %}".into());
        assert!(render_actions(&t, &ctx()).is_err());
        // Bounded work.
        t.actions[0].params.insert(
            "url".into(),
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                .into(),
        );
        assert!(render_actions(&t, &ctx()).is_err());
        t.actions[0].params.insert(
            "url".into(),
            "{{ hardware.labels.type }}-{{ hardware.nameservers | join(',') }}".into(),
        );
        assert_eq!(
            render_actions(&t, &ctx()).unwrap()[0].params["url"],
            "cp-1.1.1.1,8.8.8.8"
        );
    }
}

#[cfg(test)]
mod bomb_tests {
    use super::*;

    /// Nine levels of nine aliases ("billion laughs"): 9^9 strings if expanded.
    fn alias_bomb() -> String {
        let mut s = String::from("name: t\nactions:\n  - &a0 [\"lol\"]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(",");
            s.push_str(&format!("  - &a{i} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn an_alias_bomb_in_a_template_is_a_clear_error() {
        let bomb = alias_bomb();
        assert!(bomb.len() < 600, "{}", bomb.len());
        let e = parse_template("bomb.yaml", &bomb).unwrap_err().to_string();
        assert!(e.starts_with("bomb.yaml:3:"), "{e}");
        let big = format!(
            "name: t\n# {}\nactions: []\n",
            "x".repeat(MAX_TEMPLATE_BYTES)
        );
        let e = parse_template("big.yaml", &big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}
