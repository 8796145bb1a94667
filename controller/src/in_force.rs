//! What connection observation is configured with right now ([`InForce`]): the cluster CIDRs
//! that make a peer `scope: cluster` and the declared encrypted protocols the classifier knows,
//! each with where it came from. Set by whoever changes them (the daemon at start, the
//! controller's [`crate::conn_config`] watches after) and served on `/metrics` as info gauges,
//! so an operator can see what a node uses without reading its logs. Bounded: one series per
//! configured range or declared protocol.

use std::sync::RwLock;

/// Where a cluster CIDR in force comes from.
pub const CIDR_CONFIGURED: &str = "configured";
/// A pod CIDR of this node's Node object.
pub const CIDR_NODE: &str = "node";
/// Where a declared protocol in force comes from.
pub const PROTOCOL_FILE: &str = "file";
pub const PROTOCOL_KUBERNETES: &str = "kubernetes";

/// `(value, source)` pairs of what is in force.
#[derive(Debug, Default)]
pub struct InForce {
    cluster_cidrs: RwLock<Vec<(String, &'static str)>>,
    protocols: RwLock<Vec<(String, &'static str)>>,
}

impl InForce {
    /// The cluster CIDRs now in force (`cidr`, source).
    pub fn set_cluster_cidrs(&self, cidrs: Vec<(String, &'static str)>) {
        if let Ok(mut c) = self.cluster_cidrs.write() {
            *c = cidrs;
        }
    }

    /// The declared protocols now in force (name, source).
    pub fn set_protocols(&self, protocols: Vec<(String, &'static str)>) {
        if let Ok(mut p) = self.protocols.write() {
            *p = protocols;
        }
    }

    pub fn cluster_cidrs(&self) -> Vec<(String, &'static str)> {
        self.cluster_cidrs
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn protocols(&self) -> Vec<(String, &'static str)> {
        self.protocols.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Prometheus text: `bulwark_cluster_cidr_info` and `bulwark_declared_protocol_info`.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        for (name, label, help, rows) in [
            (
                "bulwark_cluster_cidr_info",
                "cidr",
                "Address ranges whose peers are scope=cluster (--cluster-cidrs or its defaults, plus this node's pod CIDRs with --kubernetes).",
                self.cluster_cidrs(),
            ),
            (
                "bulwark_declared_protocol_info",
                "protocol",
                "Declared encrypted protocols the classifier knows (--protocols file, accepted EncryptedProtocol objects).",
                self.protocols(),
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (value, source) in rows {
                out.push_str(&format!(
                    "{name}{{{label}=\"{value}\",source=\"{source}\"}} 1\n"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_series_per_value_in_force() {
        let f = InForce::default();
        assert!(!f.render_prometheus().contains("} 1\n"));
        f.set_cluster_cidrs(vec![
            ("10.0.0.0/8".into(), CIDR_CONFIGURED),
            ("10.244.1.0/24".into(), CIDR_NODE),
        ]);
        f.set_protocols(vec![("acme".into(), PROTOCOL_KUBERNETES)]);
        let text = f.render_prometheus();
        assert!(
            text.contains("bulwark_cluster_cidr_info{cidr=\"10.244.1.0/24\",source=\"node\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "bulwark_declared_protocol_info{protocol=\"acme\",source=\"kubernetes\"} 1\n"
            ),
            "{text}"
        );
        f.set_protocols(Vec::new());
        assert!(!f.render_prometheus().contains("acme"));
    }
}
