//! The daemon's userspace event pipeline: raw ring-buffer records -> process cache -> JSON
//! events, plus the workload registry and policy-directory loading that feed the kernel engine.
