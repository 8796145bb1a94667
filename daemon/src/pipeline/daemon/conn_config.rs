//! What connection observation uses while the daemon runs, each entering through one call on
//! the main loop's thread: the declared encrypted protocols ([`Daemon::set_declared_protocols`])
//! and the cluster CIDRs ([`Daemon::set_cluster_cidrs`]). `bulwark run` calls them at start
//! (`--protocols`, `--cluster-cidrs`); in Kubernetes mode the controller sends every later set
//! in force as a [`super::Request`] (accepted `EncryptedProtocol` objects, this node's pod
//! CIDRs), so a change takes effect without a restart.

use super::Daemon;
use crate::pipeline::kernel::{Kernel, Rules};
use crate::pipeline::policy_backend::PolicyBackend;
use bulwark_conns::{ClusterCidrs, Signatures};

impl<B, K> Daemon<B, K>
where
    B: PolicyBackend,
    B::Rules: Rules,
    K: Kernel<B::Rules>,
{
    /// The one entry point of the declared-protocol set in force (the whole set, replacing the
    /// previous one). The classifier of first payloads and the kernel's payload verdicts
    /// (`matchEncryption` on egress and ingress) get the same set; on error (a set that does
    /// not fit the kernel table) neither changes.
    pub fn set_declared_protocols(&mut self, protocols: Signatures) -> anyhow::Result<()> {
        let table = protocols
            .kernel_table()
            .map_err(|e| anyhow::anyhow!("declared encrypted protocols: {e}; {}", e.hint()))?;
        self.kernel.set_encrypted_protocols(&table)?;
        self.pipeline.conns.set_signatures(protocols);
        Ok(())
    }

    /// The ranges whose peers are `scope: cluster` from now on (the whole set).
    pub fn set_cluster_cidrs(&mut self, cidrs: ClusterCidrs) {
        self.pipeline.conns.set_cluster_cidrs(cidrs);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Request;
    use crate::pipeline::fakes::cluster_daemon;
    use crate::record::Record;
    use bulwark_conns::{ClusterCidrs, Signature, Signatures};
    use bulwark_events::{Body, Protocol, Scope};
    use daemon_common::{
        ConnEvent, ConnPayloadEvent, Destination, EventHeader, CONN_DIR_SENT, CONN_PREFIX_LEN,
        CONN_ROLE_CLIENT, EVENT_CONN_CLOSE, EVENT_CONN_PAYLOAD, PROTO_TCP,
    };

    /// A client connection (cookie `cookie`) to `remote:9000` that sent `first` and closed.
    fn connection(cookie: u64, remote: [u8; 4], first: &[u8]) -> Vec<Record> {
        let mut data = [0u8; CONN_PREFIX_LEN];
        data[..first.len()].copy_from_slice(first);
        let payload = ConnPayloadEvent {
            header: EventHeader {
                kind: EVENT_CONN_PAYLOAD,
                ..EventHeader::default()
            },
            cookie,
            direction: CONN_DIR_SENT,
            len: first.len() as u32,
            data,
        };
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&remote);
        let close = ConnEvent {
            header: EventHeader {
                kind: EVENT_CONN_CLOSE,
                tgid: 1,
                time_ns: 2_000,
                start_ns: 1,
            },
            cookie,
            open_ns: 1_000,
            bytes_sent: first.len() as u64,
            remote: Destination {
                addr,
                port: 9000,
                family: libc::AF_INET as u8,
                protocol: PROTO_TCP,
            },
            role: CONN_ROLE_CLIENT,
            ..ConnEvent::default()
        };
        vec![Record::ConnPayload(Box::new(payload)), Record::Conn(close)]
    }

    /// The connection of the close event the records make.
    fn closed(
        d: &mut crate::pipeline::fakes::FakeDaemon,
        records: Vec<Record>,
    ) -> bulwark_events::Connection {
        let events: Vec<_> = records
            .into_iter()
            .flat_map(|r| d.pipeline.handle_record(Ok(r)))
            .collect();
        match events.last().map(|e| &e.body) {
            Some(Body::ProcessClose { connection, .. }) => connection.clone(),
            other => panic!("no process_close: {other:?}"),
        }
    }

    #[test]
    fn sets_sent_by_the_controller_change_classification_and_scope_without_a_restart() {
        let (mut d, _out) = cluster_daemon();
        let (tx, rx) = std::sync::mpsc::channel::<Request<String>>();
        let first = [0xac, 0x3e, 0x01, 0x02];
        let before = closed(&mut d, connection(1, [203, 0, 113, 9], &first));
        assert_eq!(before.sent.protocol, Protocol::Other);
        assert_eq!(before.encrypted, Some(false));
        assert_eq!(before.scope, Scope::Internet);

        let acme = Signature::new("acme-tunnel", 0, vec![0xac, 0x3e], None).unwrap();
        tx.send(Request::DeclaredProtocols(Signatures::new(vec![acme])))
            .unwrap();
        tx.send(Request::ClusterCidrs(
            ClusterCidrs::parse("203.0.113.0/24").unwrap(),
        ))
        .unwrap();
        d.on_requests(&rx);
        let after = closed(&mut d, connection(2, [203, 0, 113, 9], &first));
        assert_eq!(after.sent.protocol, Protocol::Custom("acme-tunnel".into()));
        assert_eq!(after.encrypted, Some(true));
        assert_eq!(after.scope, Scope::Cluster);

        // Taken out of force again (the object deleted): plaintext we do not name.
        tx.send(Request::DeclaredProtocols(Signatures::default()))
            .unwrap();
        d.on_requests(&rx);
        let gone = closed(&mut d, connection(3, [203, 0, 113, 9], &first));
        assert_eq!(gone.sent.protocol, Protocol::Other);
        assert_eq!(gone.encrypted, Some(false));
    }
}
