//! The event trace: one record per step of the engine. Every record goes into
//! a running 128-bit hash (the `trace=` of a run's last line); `replay --trace`
//! also writes them as JSONL.

use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::io::Write;

/// One step, as traced. `node` and `session` are -1 when none applies; `a` and
/// `b` carry the step's numbers (see docs/simulation.md for each `ev`).
#[derive(Debug, Clone, Hash, Serialize)]
pub struct Record {
    /// Simulated time (ms).
    pub t: u64,
    /// What happened.
    pub ev: &'static str,
    /// The node's number (`n3` is 3), or -1.
    pub node: i64,
    /// The session's index (`u17` is 17), or -1.
    pub session: i64,
    /// A number that depends on `ev`.
    pub a: u64,
    /// Another.
    pub b: u64,
}

/// A stable hasher: the same records give the same hash in any process.
#[derive(Debug, Clone)]
struct Stable {
    lanes: [u64; 2],
}

impl Hasher for Stable {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word) ^ ((chunk.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.word(n);
    }

    fn write_i64(&mut self, n: i64) {
        self.word(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.word(n as u64);
    }

    fn finish(&self) -> u64 {
        self.lanes[0]
    }
}

impl Stable {
    fn word(&mut self, w: u64) {
        self.lanes[0] = (self.lanes[0] ^ w)
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(23);
        self.lanes[1] = (self.lanes[1] ^ w.rotate_left(29))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(31)
            ^ self.lanes[0];
    }
}

/// The trace of a run.
pub struct Trace {
    hash: Stable,
    records: u64,
    out: Option<Box<dyn Write>>,
    error: Option<std::io::Error>,
}

impl Trace {
    /// A trace that is only hashed, or also written as JSONL to `out`.
    pub fn new(out: Option<Box<dyn Write>>) -> Self {
        Self {
            hash: Stable {
                lanes: [0xCBF2_9CE4_8422_2325, 0x6C62_272E_07BB_0142],
            },
            records: 0,
            out,
            error: None,
        }
    }

    /// Adds one record.
    pub fn record(&mut self, record: Record) {
        record.hash(&mut self.hash);
        self.records += 1;
        if let Some(out) = &mut self.out
            && self.error.is_none()
        {
            let line = serde_json::to_string(&record).expect("a record serializes");
            if let Err(e) = writeln!(out, "{line}") {
                self.error = Some(e);
            }
        }
    }

    /// How many records.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The hash, as 32 hex digits; and the first write error, if writing failed.
    pub fn finish(mut self) -> (String, Option<std::io::Error>) {
        if let Some(out) = &mut self.out
            && self.error.is_none()
            && let Err(e) = out.flush()
        {
            self.error = Some(e);
        }
        let [a, b] = self.hash.lanes;
        (format!("{a:016x}{b:016x}"), self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u64, ev: &'static str) -> Record {
        Record {
            t,
            ev,
            node: 1,
            session: -1,
            a: 0,
            b: 0,
        }
    }

    #[test]
    fn the_hash_depends_on_every_record_and_their_order() {
        let hash = |records: &[Record]| {
            let mut trace = Trace::new(None);
            for r in records {
                trace.record(r.clone());
            }
            trace.finish().0
        };
        let ab = hash(&[rec(1, "a"), rec(2, "b")]);
        assert_eq!(ab, hash(&[rec(1, "a"), rec(2, "b")]));
        assert_ne!(ab, hash(&[rec(2, "b"), rec(1, "a")]));
        assert_ne!(ab, hash(&[rec(1, "a"), rec(3, "b")]));
        assert_eq!(ab.len(), 32);
    }

    #[test]
    fn records_are_written_as_jsonl() {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut trace = Trace::new(Some(Box::new(Shared(buffer.clone()))));
        trace.record(rec(5, "commit"));
        assert!(trace.finish().1.is_none());
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"t\":5,\"ev\":\"commit\",\"node\":1,\"session\":-1,\"a\":0,\"b\":0}\n"
        );
    }
}
