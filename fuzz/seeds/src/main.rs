//! Writes the seed corpus: valid inputs for each target, so that the fuzzer
//! starts from the formats' insides. `cargo run --bin seeds` from this folder.

use confab_core::crypto::{DataKey, KeyRing};
use confab_core::session::{SessionState, Snapshot, SnapshotKey};
use confab_core::{Epoch, Uid};
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    let uid = Uid::new("fuzz-user").expect("uid");
    let ring = KeyRing::new([DataKey::new(1, &[1; 32]).expect("key")]);
    let snapshot = Snapshot::new(uid.clone(), 1, Epoch(1), SessionState::default());
    write(
        "snapshot",
        "sealed",
        &snapshot.seal(ring.current().expect("key"), [5; 12]),
    );
    write(
        "snapshot",
        "plaintext-v1",
        &snapshot.encode(&SnapshotKey::new(vec![3; 32]).expect("key")),
    );
    write(
        "sealed_value",
        "phone",
        ring.seal(&uid, "phone", "13912345678", [6; 12])
            .expect("sealed")
            .as_bytes(),
    );
    for (name, frame) in [
        ("say", r#"{"type":"say","id":"m-1","text":"你好"}"#),
        ("resume", r#"{"type":"resume","after_seq":3}"#),
        ("ping", r#"{"type":"ping"}"#),
    ] {
        write("frame", name, frame.as_bytes());
    }
    for entry in std::fs::read_dir("../config/flows/v1").expect("shipped flows") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        write("flow", &name, &std::fs::read(&path).expect("flow"));
    }
    write("flow", "filter.toml", &std::fs::read("../config/flows/filter.toml").expect("filter"));
    write("admin_body", "canary", br#"{"version":"v2","tails":[0,1]}"#);
    write("admin_body", "replay", br#"{"id":3,"all":false}"#);
    write(
        "token",
        "hs256",
        b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoiY2hhdCIsImV4cCI6NDAwMDAwMDAwMH0.c2ln",
    );
    write(
        "token",
        "es256",
        b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enotZWMifQ.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoiY2hhdCIsImV4cCI6NDAwMDAwMDAwMH0.c2ln",
    );
}
