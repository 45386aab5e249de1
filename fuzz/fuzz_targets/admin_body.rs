//! The admin API's request bodies, as the handlers take them.
#![no_main]

use confab_proto::admin::{CanarySet, DlqReplay};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = serde_json::from_slice::<CanarySet>(bytes);
    let _ = serde_json::from_slice::<DlqReplay>(bytes);
});
