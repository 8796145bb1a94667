//! Kernel integration tests of the engine: load the real programs, drive real processes and
//! sockets, check kill / EPERM / EACCES and the maps. Root and a real kernel are required;
//! without root these tests FAIL (they never skip silently). They share global hooks, so they
//! run one at a time (a mutex).

#[allow(dead_code)]
#[path = "../src/engine/mod.rs"]
mod engine;

use engine::{Engine, EngineOptions};

#[test]
fn loads_and_attaches_everything() {
    let e = Engine::load(&EngineOptions::default()).expect("engine load");
    assert_eq!(e.active_slot(), 0);
}
