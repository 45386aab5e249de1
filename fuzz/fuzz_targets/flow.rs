//! The flow file compiler: any text as a flow file, and as the input filter.
#![no_main]

use confab_dialog::flow::{PolicySet, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = PolicySet::compile(&[SourceFile {
        path: "v1/fuzz.toml".into(),
        text: text.into(),
    }]);
    let _ = PolicySet::compile(&[
        SourceFile {
            path: "filter.toml".into(),
            text: text.into(),
        },
        SourceFile {
            path: "v1/ok.toml".into(),
            text: "[[intents]]\nname = \"hi\"\nkeywords = [\"hi\"]\n\n[[steps]]\nreply = \"hello\"\n"
                .into(),
        },
    ]);
});
