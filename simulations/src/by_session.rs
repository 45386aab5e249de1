//! A map keyed by session index. Sessions are numbered densely from 0, so the
//! map is a vector of slots: a lookup is an index instead of a search through
//! a B-tree of 10,000 keys, and iteration still runs in key order, as a
//! `BTreeMap<u32, T>`'s does (the trace depends on that order).

/// Values by session index, in a vector that grows to the largest index held.
#[derive(Debug, Clone)]
pub(crate) struct BySession<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for BySession<T> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<T> BySession<T> {
    /// The value of session `s`.
    pub(crate) fn get(&self, s: &u32) -> Option<&T> {
        self.slots.get(*s as usize).and_then(Option::as_ref)
    }

    /// The value of session `s`, to change.
    pub(crate) fn get_mut(&mut self, s: &u32) -> Option<&mut T> {
        self.slots.get_mut(*s as usize).and_then(Option::as_mut)
    }

    /// Whether session `s` has a value.
    pub(crate) fn contains_key(&self, s: &u32) -> bool {
        self.get(s).is_some()
    }

    /// Sets session `s`'s value; the one it replaced.
    pub(crate) fn insert(&mut self, s: u32, value: T) -> Option<T> {
        self.slot(s).replace(value)
    }

    /// Takes session `s`'s value out.
    pub(crate) fn remove(&mut self, s: &u32) -> Option<T> {
        self.slots.get_mut(*s as usize).and_then(Option::take)
    }

    /// Session `s`'s value, made with `Default` if it has none.
    pub(crate) fn or_default(&mut self, s: u32) -> &mut T
    where
        T: Default,
    {
        self.slot(s).get_or_insert_with(T::default)
    }

    /// Forgets every value.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }

    /// The values, in session order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, v)| Some((s as u32, v.as_ref()?)))
    }

    fn slot(&mut self, s: u32) -> &mut Option<T> {
        let i = s as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        &mut self.slots[i]
    }
}

impl<T> std::ops::Index<&u32> for BySession<T> {
    type Output = T;

    fn index(&self, s: &u32) -> &T {
        self.get(s).expect("the session has a value")
    }
}

impl<T> IntoIterator for BySession<T> {
    type Item = (u32, T);
    type IntoIter = std::iter::FilterMap<
        std::iter::Enumerate<std::vec::IntoIter<Option<T>>>,
        fn((usize, Option<T>)) -> Option<(u32, T)>,
    >;

    /// The values, in session order.
    fn into_iter(self) -> Self::IntoIter {
        self.slots
            .into_iter()
            .enumerate()
            .filter_map(|(s, v)| Some((s as u32, v?)))
    }
}

#[cfg(test)]
mod tests {
    use super::BySession;
    use std::collections::BTreeMap;

    #[test]
    fn it_answers_as_a_btree_map_does_and_iterates_in_session_order() {
        let mut dense = BySession::default();
        let mut tree = BTreeMap::new();
        for (i, s) in [7u32, 3, 7, 12, 0, 3, 5].into_iter().enumerate() {
            assert_eq!(dense.insert(s, i), tree.insert(s, i));
        }
        assert_eq!(dense.remove(&5), tree.remove(&5));
        assert_eq!(dense.remove(&5), None);
        assert_eq!(dense.remove(&400), None);
        *dense.or_default(9) += 1;
        *tree.entry(9).or_default() += 1;
        *dense.or_default(9) += 1;
        *tree.entry(9).or_default() += 1;
        assert_eq!(dense.iter().count(), tree.len());
        assert!(dense.contains_key(&12) && !dense.contains_key(&5) && !dense.contains_key(&99));
        assert_eq!(dense[&3], tree[&3]);
        let in_order: Vec<(u32, usize)> = dense.iter().map(|(s, v)| (s, *v)).collect();
        assert_eq!(in_order, tree.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(
            dense.into_iter().collect::<Vec<_>>(),
            tree.into_iter().collect::<Vec<_>>()
        );
    }
}
