//! The sessions alive on one node, by holder id, and the holders of each
//! session: the checks that ask "is user s active here?" read the few holders
//! of s rather than every session the node holds.

use super::Held;
use crate::by_session::BySession;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub(super) struct Holds {
    /// Boxed: a `Held` is over a kilobyte, and a B-tree node moves its
    /// neighbours' values at every insert and remove.
    by_hid: BTreeMap<u64, Box<Held>>,
    /// The holders of each session, in holder id order. A holder's session
    /// never changes, so this is kept by `insert`, `remove` and `clear` alone.
    by_session: BySession<BTreeSet<u64>>,
}

impl Holds {
    pub(super) fn insert(&mut self, hid: u64, held: Held) {
        let s = held.s;
        if let Some(old) = self.by_hid.insert(hid, Box::new(held)) {
            self.unindex(old.s, hid);
        }
        self.by_session.or_default(s).insert(hid);
    }

    pub(super) fn remove(&mut self, hid: &u64) -> Option<Held> {
        let held = self.by_hid.remove(hid)?;
        self.unindex(held.s, *hid);
        Some(*held)
    }

    fn unindex(&mut self, s: u32, hid: u64) {
        if let Some(hids) = self.by_session.get_mut(&s) {
            hids.remove(&hid);
            if hids.is_empty() {
                self.by_session.remove(&s);
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_hid.clear();
        self.by_session.clear();
    }

    pub(super) fn get(&self, hid: &u64) -> Option<&Held> {
        self.by_hid.get(hid).map(|held| &**held)
    }

    /// The holder, to change: its session (`s`) must stay as it is.
    pub(super) fn get_mut(&mut self, hid: &u64) -> Option<&mut Held> {
        self.by_hid.get_mut(hid).map(|held| &mut **held)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_hid.is_empty()
    }

    /// The holders of session `s`, in holder id order.
    pub(super) fn of(&self, s: u32) -> impl Iterator<Item = (u64, &Held)> {
        self.by_session
            .get(&s)
            .into_iter()
            .flatten()
            .map(|hid| (*hid, &*self.by_hid[hid]))
    }
}

impl std::ops::Index<&u64> for Holds {
    type Output = Held;

    fn index(&self, hid: &u64) -> &Held {
        &self.by_hid[hid]
    }
}
