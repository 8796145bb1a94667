//! Kubernetes namespace interning: namespace name <-> `u32` id. The ids are what the kernel
//! compares (`WorkloadEntry::namespace_id`, `NamespaceKey::namespace_id`), so one interner must
//! be shared by the compiler and the workload registry and live as long as the daemon: an id,
//! once handed out, keeps naming the same namespace across rule-set swaps.

use std::collections::HashMap;

/// Interner of Kubernetes namespace names. Id 0 is reserved for "no namespace" (host processes)
/// and is never handed out for a name; the first name gets 1.
#[derive(Clone, Debug, Default)]
pub struct NamespaceIds {
    by_name: HashMap<String, u32>,
    /// `names[id - 1]`.
    names: Vec<String>,
}

impl NamespaceIds {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `name`, interning it on first use. The empty name means "no namespace" and
    /// returns 0 without interning.
    pub fn id(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        // 4 billion distinct names would exhaust memory long before this saturates.
        let id = u32::try_from(self.names.len() + 1).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.by_name.insert(name.to_owned(), id);
        id
    }

    /// The id of `name` if it was interned already (0 for the empty name).
    pub fn get(&self, name: &str) -> Option<u32> {
        if name.is_empty() {
            return Some(0);
        }
        self.by_name.get(name).copied()
    }

    /// The name behind `id`; `None` for 0 (host) and for ids never handed out.
    pub fn name(&self, id: u32) -> Option<&str> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.names.get(index).map(String::as_str)
    }

    /// Number of interned names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no name was interned yet.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_start_at_one() {
        let mut ids = NamespaceIds::new();
        assert!(ids.is_empty());
        let a = ids.id("payments");
        let b = ids.id("staging");
        assert_eq!(a, 1);
        assert_eq!(b, 2);
        assert_eq!(ids.id("payments"), 1, "same name, same id");
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.name(1), Some("payments"));
        assert_eq!(ids.name(2), Some("staging"));
        assert_eq!(ids.get("staging"), Some(2));
        assert_eq!(ids.get("unknown"), None);
    }

    #[test]
    fn zero_is_the_host_and_never_a_name() {
        let mut ids = NamespaceIds::new();
        assert_eq!(ids.id(""), 0);
        assert!(ids.is_empty(), "the empty name is not interned");
        assert_eq!(ids.name(0), None);
        assert_eq!(ids.name(7), None);
        assert_eq!(ids.name(u32::MAX), None);
        assert_eq!(ids.get(""), Some(0));
    }
}
