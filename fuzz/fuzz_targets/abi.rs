#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cmr_fuzz::abi(data));
