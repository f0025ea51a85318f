#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smith_fuzz_targets::ca_requests(data));
