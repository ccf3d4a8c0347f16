//! Any bytes through DHCP decode → decide → encode, in every mode and on both
//! ports: it must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_dhcp::fuzz_entry(data);
});
