//! The snapshot decoder, with the key that sealed the seeds and with a wrong one:
//! tampered, truncated or foreign bytes are refused, never trusted or a panic.
#![no_main]

use confab_core::crypto::{DataKey, KeyRing};
use confab_core::session::{Snapshot, SnapshotKey};
use confab_core::Uid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let uid = Uid::new("fuzz-user").expect("a valid uid");
    let right = KeyRing::new([DataKey::new(1, &[1; 32]).expect("32 bytes")]);
    let wrong = KeyRing::new([DataKey::new(1, &[2; 32]).expect("32 bytes")]);
    let legacy = SnapshotKey::new(vec![3; 32]).expect("32 bytes");
    if let Ok(snapshot) = Snapshot::open(bytes, &uid, &right, Some(&legacy)) {
        assert_eq!(snapshot.uid, uid, "a snapshot opens only as its own session");
    }
    // Under the wrong key nothing of format 2 may open.
    if Snapshot::key_version(bytes).is_some() {
        assert!(Snapshot::open(bytes, &uid, &wrong, None).is_err());
    }
});
