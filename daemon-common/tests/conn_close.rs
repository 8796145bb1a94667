//! How a connection ended, read from the state it left for TCP_CLOSE (the close record's
//! byte totals subtract the FINs these say were counted).

use daemon_common::*;

fn fins(fin_acked: bool, fin_received: bool, orderly: bool) -> CloseFins {
    CloseFins {
        fin_acked,
        fin_received,
        orderly,
    }
}

#[test]
fn every_way_a_connection_reaches_tcp_close() {
    // (state left, nothing outstanding, SOCK_DONE, expected)
    let cases = [
        // We closed first: our FIN acked, then the peer's FIN (time-wait) or, for an orphan,
        // before it; both orderly.
        (TCP_FIN_WAIT2, true, true, fins(true, true, true)),
        (TCP_FIN_WAIT2, true, false, fins(true, false, true)),
        // The peer closed first: our FIN acked ends LAST_ACK; a reset or timeout with it
        // outstanding does not.
        (TCP_LAST_ACK, true, true, fins(true, true, true)),
        (TCP_LAST_ACK, false, true, fins(false, true, false)),
        // Both at once.
        (TCP_CLOSING, true, true, fins(true, true, true)),
        (TCP_CLOSING, false, true, fins(false, true, false)),
        // Resets and errors.
        (TCP_CLOSE_WAIT, true, true, fins(false, true, false)),
        (TCP_ESTABLISHED, true, false, fins(false, false, false)),
        (TCP_FIN_WAIT1, false, false, fins(false, false, false)),
        (TCP_FIN_WAIT1, true, false, fins(false, false, false)),
    ];
    for (old, all_acked, done, want) in cases {
        assert_eq!(
            CloseFins::of(old, all_acked, || done),
            want,
            "left state {old}, all acked {all_acked}, SOCK_DONE {done}"
        );
    }
}

#[test]
fn the_socket_flag_is_read_only_when_the_state_cannot_tell() {
    for old in [
        TCP_ESTABLISHED,
        TCP_FIN_WAIT1,
        TCP_CLOSE_WAIT,
        TCP_LAST_ACK,
        TCP_CLOSING,
    ] {
        CloseFins::of(old, true, || panic!("SOCK_DONE read for state {old}"));
    }
    let mut read = false;
    CloseFins::of(TCP_FIN_WAIT2, true, || {
        read = true;
        false
    });
    assert!(read, "FIN_WAIT2 needs SOCK_DONE");
}
