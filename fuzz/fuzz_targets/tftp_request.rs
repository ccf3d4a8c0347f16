//! Any bytes as a TFTP request, then through option negotiation and the path
//! check: never a panic, never a path outside the root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(req) = kiln_tftp::parse_request(data) {
        let _ = kiln_tftp::negotiate(&req.options, &kiln_tftp::Limits::default(), 1 << 20);
        if let Ok(rel) = kiln_tftp::path::sanitize(&req.filename) {
            assert!(!rel.is_absolute(), "{rel:?} escapes the root");
            assert!(rel.components().all(|c| matches!(c, std::path::Component::Normal(_))), "{rel:?}");
        }
    }
});
