//! A seeded generator for the tests' small deterministic worlds (xorshift64*):
//! enough to draw a schedule, and the same sequence for the same seed everywhere.

pub(crate) struct TestRng(u64);

impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number in `0..below` (0 when `below` is 0).
    pub(crate) fn below(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below.max(1)
    }
}
