//! The client frame decoder: any text a WebSocket may carry.
#![no_main]

use confab_proto::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // An error is an answer (`bad_frame`); only a panic or a hang is a finding.
    if let Ok(frame) = ClientFrame::parse(text) {
        // What parses, round-trips.
        let _ = serde_json::to_string(&frame);
    }
});
