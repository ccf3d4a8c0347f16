//! The workflow templates shipped in the repository's `workflows/`, built into the binary
//! (a packaged server has no source tree), and template validation for the admin API.

use kiln_api::{Detail, TemplateCheck, TemplateInfo};
use kiln_model::template::{Template, TemplateErrors, parse_template};

/// Every file of `workflows/` (a test checks the list against the directory).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "debian-custom.yaml",
        include_str!("../../../workflows/debian-custom.yaml"),
    ),
    (
        "debian-test-os-kexec.yaml",
        include_str!("../../../workflows/debian-test-os-kexec.yaml"),
    ),
    (
        "debian-test-os.yaml",
        include_str!("../../../workflows/debian-test-os.yaml"),
    ),
    (
        "wipe-disk.yaml",
        include_str!("../../../workflows/wipe-disk.yaml"),
    ),
];

fn outline(file: &str, t: &Template) -> TemplateInfo {
    TemplateInfo {
        file: file.into(),
        name: t.name.clone(),
        timeout_seconds: t.timeout.as_secs_f64(),
        actions: t.actions.iter().map(|a| a.name.clone()).collect(),
        source: t.source.clone(),
    }
}

/// The shipped templates, outlined.
pub fn shipped() -> Vec<TemplateInfo> {
    SHIPPED
        .iter()
        .filter_map(|(file, text)| parse_template(file, text).ok().map(|t| outline(file, &t)))
        .collect()
}

/// Template problems as located details (`file:line:column: field: message`).
pub fn details(errors: TemplateErrors) -> Vec<Detail> {
    errors
        .0
        .into_iter()
        .map(|e| Detail {
            file: Some(e.file),
            line: Some(e.line as u64),
            column: Some(e.column as u64),
            field: (!e.field.is_empty()).then_some(e.field),
            message: e.message,
        })
        .collect()
}

/// Parses a template: its outline, or every problem found.
pub fn check(file: &str, text: &str) -> TemplateCheck {
    match parse_template(file, text) {
        Ok(t) => TemplateCheck {
            valid: true,
            name: Some(t.name.clone()),
            actions: t.actions.iter().map(|a| a.name.clone()).collect(),
            diagnostics: Vec::new(),
        },
        Err(errors) => TemplateCheck {
            valid: false,
            name: None,
            actions: Vec::new(),
            diagnostics: details(errors),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_in_workflows_dir_is_shipped_and_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = SHIPPED.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            on_disk, listed,
            "SHIPPED must list every file of workflows/"
        );
        for (file, text) in SHIPPED {
            if let Err(e) = parse_template(file, text) {
                panic!("{e}");
            }
        }
        assert_eq!(shipped().len(), SHIPPED.len());
    }

    #[test]
    fn problems_come_back_located() {
        let ok = check(
            "t.yaml",
            "name: t\nactions:\n  - name: b\n    kind: reboot\n",
        );
        assert!(ok.valid && ok.diagnostics.is_empty());
        assert_eq!(ok.actions, ["b"]);
        let bad = check(
            "t.yaml",
            "name: t\nactions:\n  - name: b\n    kind: teleport\n",
        );
        assert!(!bad.valid);
        let d = &bad.diagnostics[0];
        assert_eq!(d.file.as_deref(), Some("t.yaml"));
        assert_eq!(d.line, Some(4), "{d}");
        assert!(d.column.is_some_and(|c| c > 1), "{d}");
        assert!(d.to_string().starts_with("t.yaml:4:"), "{d}");
    }
}
