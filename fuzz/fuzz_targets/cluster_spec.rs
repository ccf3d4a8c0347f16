//! Any bytes as a cluster spec (either format; bytes that are not UTF-8 go in lossily):
//! errors, never a panic, never unbounded time or memory (alias bombs, deep nesting), and
//! every error and warning names the file and a 1-based line and column.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let positioned =
        |d: &kiln_cluster::Diagnostic| d.file == "fuzz.yaml" && d.line >= 1 && d.column >= 1;
    match kiln_cluster::ClusterSpec::parse_with_warnings(&text, "fuzz.yaml") {
        Ok(parsed) => {
            assert!(
                parsed.warnings.iter().all(positioned),
                "{:?}",
                parsed.warnings
            );
            let _ = (
                parsed.spec.machine_count(),
                parsed.spec.control_plane_taints(),
            );
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            assert!(errors.0.iter().all(positioned), "{errors:?}");
        }
    }
});
