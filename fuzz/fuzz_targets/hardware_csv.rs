//! Any text as hardware.csv: errors, never panics; every error has a position.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = kiln_model::csv::parse_hardware_csv("fuzz.csv", text) {
            assert!(errors.0.iter().all(|e| e.line >= 1 && e.column >= 1));
        }
    }
});
