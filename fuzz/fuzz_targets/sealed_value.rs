//! Sealed values: a stored string that claims to be a ciphertext.
#![no_main]

use confab_core::Uid;
use confab_core::crypto::{DataKey, KeyRing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let uid = Uid::new("fuzz-user").expect("a valid uid");
    let ring = KeyRing::new([DataKey::new(1, &[1; 32]).expect("32 bytes")]);
    if let Ok(plain) = ring.open(&uid, "phone", text) {
        // Only a real ciphertext of this session and field opens: sealing it
        // again opens to the same.
        let again = ring.seal(&uid, "phone", &plain, [9; 12]).expect("a ring with a key");
        assert_eq!(ring.open(&uid, "phone", &again).as_deref(), Ok(plain.as_str()));
        assert!(ring.open(&uid, "address", text).is_err());
    }
});
