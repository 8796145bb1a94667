//! What connection observation takes from the cluster, with `ControllerOptions::conn_config`
//! set: this node's pod CIDRs as cluster CIDRs ([`crate::node_cidrs`]) and the
//! `EncryptedProtocol` objects ([`crate::protocol_watch`]), each followed by its own watch and
//! handed, as the whole set in force, to the node's [`crate::ConnObservation`].

use kube::Client;

use crate::options::ConnConfig;
use crate::ControllerOptions;

/// Run both watches until one fails fatally (they retry API errors forever).
pub async fn run(
    client: Client,
    node: String,
    cfg: ConnConfig,
    opts: ControllerOptions,
) -> crate::Result<()> {
    tokio::select! {
        r = crate::node_cidrs::run(
            client.clone(),
            node.clone(),
            cfg.clone(),
            opts.node_resource.clone(),
            opts.stats.clone(),
            opts.resync_interval,
        ) => r,
        r = crate::protocol_watch::run(client, node, cfg, opts.clone()) => r,
    }
}
