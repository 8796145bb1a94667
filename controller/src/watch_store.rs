//! A watched, in-memory copy of one resource type ([`WatchStore`]) that heals itself.
//!
//! kube-runtime's watcher already re-lists after 410 Gone and retries with backoff after
//! errors. One case it cannot see: an API server that comes back with its data wiped (etcd
//! restored or replaced) hands out resource versions again, so a watch resumed from an old
//! version can silently miss every object created since. [`WatchStore::audit`] therefore lists
//! the resource directly from time to time; when the set of objects (by UID) differs from the
//! store, it adopts the listed state and restarts the watch from a fresh list.
//!
//! What wakes the reader is chosen per store ([`Wake`]): every change, or only changes of what
//! an object asks for (its `metadata.generation`), so a store of policies is not woken by the
//! status writes that every node's watch receives.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};

type Key = (String, String);

fn key_of<K: Resource>(o: &K) -> Key {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Which changes poke the store's `changed` notifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Every added, changed or deleted object.
    Always,
    /// Added and deleted objects and changes of `metadata.generation` (the spec); a change of
    /// status or metadata only is stored but wakes nobody.
    SpecChange,
}

/// The current objects plus the machinery to keep them current.
pub struct WatchStore<K> {
    objects: Arc<RwLock<BTreeMap<Key, Arc<K>>>>,
    ready: watch::Receiver<bool>,
    restart: Arc<Notify>,
    api: Api<K>,
    list_params: ListParams,
    /// The watch task; dropping the store stops it.
    task: tokio::task::AbortHandle,
}

impl<K> Drop for WatchStore<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Apply one watcher event to `live`, using `buffer` for the re-list in progress. Returns true
/// when `live` changed in a way `wake` asks to be told about (or a re-list completed).
pub fn apply_event<K: Resource>(
    ev: watcher::Event<K>,
    live: &RwLock<BTreeMap<Key, Arc<K>>>,
    buffer: &mut Option<BTreeMap<Key, Arc<K>>>,
    wake: Wake,
) -> bool {
    match ev {
        watcher::Event::Init => {
            *buffer = Some(BTreeMap::new());
            false
        }
        watcher::Event::InitApply(o) => {
            buffer
                .get_or_insert_with(BTreeMap::new)
                .insert(key_of(&o), Arc::new(o));
            false
        }
        watcher::Event::InitDone => {
            let fresh = buffer.take().unwrap_or_default();
            if let Ok(mut l) = live.write() {
                *l = fresh;
            }
            true
        }
        watcher::Event::Apply(o) => {
            let Ok(mut l) = live.write() else {
                return true;
            };
            let spec_of = |m: &kube::api::ObjectMeta| (m.uid.clone(), m.generation);
            let same_spec = l
                .get(&key_of(&o))
                .is_some_and(|old| spec_of(old.meta()) == spec_of(o.meta()));
            l.insert(key_of(&o), Arc::new(o));
            wake == Wake::Always || !same_spec
        }
        watcher::Event::Delete(o) => {
            if let Ok(mut l) = live.write() {
                l.remove(&key_of(&o));
            }
            true
        }
    }
}

impl<K> WatchStore<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Start watching `api` (with `cfg`'s selectors) in a background task; `changed` is poked
    /// after every change. `label` names the resource in logs.
    pub fn spawn(
        api: Api<K>,
        cfg: watcher::Config,
        changed: Arc<Notify>,
        label: String,
    ) -> WatchStore<K> {
        Self::spawn_waking(api, cfg, changed, label, Wake::Always)
    }

    /// [`WatchStore::spawn`], poking `changed` only for the changes `wake` names.
    pub fn spawn_waking(
        api: Api<K>,
        cfg: watcher::Config,
        changed: Arc<Notify>,
        label: String,
        wake: Wake,
    ) -> WatchStore<K> {
        let objects: Arc<RwLock<BTreeMap<Key, Arc<K>>>> = Arc::default();
        let (ready_tx, ready) = watch::channel(false);
        let restart = Arc::new(Notify::new());
        let mut list_params = ListParams::default();
        if let Some(f) = &cfg.field_selector {
            list_params = list_params.fields(f);
        }
        if let Some(l) = &cfg.label_selector {
            list_params = list_params.labels(l);
        }
        let (live, api2, restart2) = (objects.clone(), api.clone(), restart.clone());
        let task = tokio::spawn(async move {
            loop {
                let stream = watcher(api2.clone(), cfg.clone()).default_backoff();
                let mut stream = std::pin::pin!(stream);
                let mut buffer = None;
                let mut last_err: Option<Instant> = None;
                loop {
                    tokio::select! {
                        ev = stream.next() => match ev {
                            Some(Ok(ev)) => {
                                let done = matches!(ev, watcher::Event::InitDone);
                                if apply_event(ev, &live, &mut buffer, wake) {
                                    changed.notify_one();
                                }
                                if done {
                                    let _ = ready_tx.send(true);
                                }
                            }
                            Some(Err(e)) => {
                                if last_err.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                    log::warn!(
                                        "watch of {label} failed (retrying with backoff): {e}; check \
                                         that the API server is reachable and the CRD is installed"
                                    );
                                    last_err = Some(Instant::now());
                                }
                            }
                            None => break,
                        },
                        _ = restart2.notified() => {
                            log::info!("restarting the watch of {label} from a fresh list");
                            break;
                        }
                    }
                }
            }
        })
        .abort_handle();
        WatchStore {
            objects,
            ready,
            restart,
            api,
            list_params,
            task,
        }
    }

    /// Wait until the first complete list is in the store.
    pub async fn wait_ready(&self) {
        let mut r = self.ready.clone();
        let _ = r.wait_for(|v| *v).await;
    }

    /// True once the first list is in.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// A snapshot of the objects.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.objects
            .read()
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default()
    }

    /// List directly and compare with the store. When the UIDs differ, adopt the listed
    /// objects and restart the watch. Returns `Ok(true)` when the store was out of sync.
    pub async fn audit(&self) -> Result<bool, kube::Error> {
        let listed = crate::timed(self.api.list(&self.list_params)).await?;
        let uids = |it: &mut dyn Iterator<Item = &K>| -> BTreeSet<String> {
            it.filter_map(|o| o.meta().uid.clone()).collect()
        };
        let have = uids(&mut self.state().iter().map(|a| a.as_ref()));
        let want = uids(&mut listed.items.iter());
        if have == want {
            return Ok(false);
        }
        if let Ok(mut l) = self.objects.write() {
            *l = listed
                .items
                .into_iter()
                .map(|o| (key_of(&o), Arc::new(o)))
                .collect();
        }
        self.restart.notify_one();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, uid: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn relist_replaces_and_events_update() {
        let live = RwLock::new(BTreeMap::new());
        let mut buf = None;
        assert!(apply_event(
            watcher::Event::Apply(cm("stale", "u0")),
            &live,
            &mut buf,
            Wake::Always
        ));
        assert!(!apply_event(
            watcher::Event::Init,
            &live,
            &mut buf,
            Wake::Always
        ));
        assert!(!apply_event(
            watcher::Event::InitApply(cm("a", "u1")),
            &live,
            &mut buf,
            Wake::Always
        ));
        // Until the re-list is done, readers still see the old state.
        assert!(live
            .read()
            .unwrap()
            .contains_key(&("ns".to_string(), "stale".to_string())));
        assert!(apply_event(
            watcher::Event::InitDone,
            &live,
            &mut buf,
            Wake::Always
        ));
        let names: Vec<String> = live.read().unwrap().keys().map(|k| k.1.clone()).collect();
        assert_eq!(names, vec!["a"]);
        assert!(apply_event(
            watcher::Event::Apply(cm("b", "u2")),
            &live,
            &mut buf,
            Wake::Always
        ));
        assert!(apply_event(
            watcher::Event::Delete(cm("a", "u1")),
            &live,
            &mut buf,
            Wake::Always
        ));
        let names: Vec<String> = live.read().unwrap().keys().map(|k| k.1.clone()).collect();
        assert_eq!(names, vec!["b"]);
    }

    #[test]
    fn spec_change_wakes_on_generation_add_and_delete_but_not_status_only() {
        let live = RwLock::new(BTreeMap::new());
        let mut buf = None;
        let at = |generation: i64, rv: &str| {
            let mut o = cm("p", "u1");
            o.metadata.generation = Some(generation);
            o.metadata.resource_version = Some(rv.into());
            o
        };
        let ev = |o| watcher::Event::Apply(o);
        assert!(
            apply_event(ev(at(1, "1")), &live, &mut buf, Wake::SpecChange),
            "added"
        );
        assert!(
            !apply_event(ev(at(1, "2")), &live, &mut buf, Wake::SpecChange),
            "status only"
        );
        // Stored all the same: the reader sees the newest object when it next looks.
        let rv = |l: &RwLock<BTreeMap<Key, Arc<ConfigMap>>>| {
            l.read()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .metadata
                .resource_version
                .clone()
        };
        assert_eq!(rv(&live).as_deref(), Some("2"));
        assert!(
            apply_event(ev(at(2, "3")), &live, &mut buf, Wake::SpecChange),
            "new spec"
        );
        assert!(apply_event(ev(at(2, "4")), &live, &mut buf, Wake::Always));
        assert!(apply_event(
            watcher::Event::Delete(at(2, "5")),
            &live,
            &mut buf,
            Wake::SpecChange
        ));
    }
}
