//! Any bytes as a config file: errors are fine, panics are not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = rampart::config::Config::parse(std::path::Path::new("fuzz.toml"), text) {
            let _ = rampart::state::Snapshot::compile(config, None);
        }
    }
});
