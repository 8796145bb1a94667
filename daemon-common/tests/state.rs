//! A watched socket's verdict as the egress programs read it: which streams are classified
//! encrypted (they leave the watch; the backstop lets their payload through) and which are not.

use daemon_common::*;

fn state(verdict: u8, unseen: u8) -> SockState {
    let mut st = SockState::new(1, 2);
    st.scan.verdict = verdict;
    st.unseen = unseen;
    st
}

#[test]
fn tls_ssh_and_declared_streams_are_classified_encrypted() {
    for verdict in [ENC_TLS, ENC_ENCRYPTED] {
        let st = state(verdict, 0);
        assert!(st.classified_encrypted(), "verdict {verdict}");
        assert_eq!(st.verdict(), verdict);
    }
    // Undecided (a hello on its way) and plaintext streams stay judged.
    for verdict in [ENC_PENDING, ENC_PLAINTEXT] {
        assert!(
            !state(verdict, 0).classified_encrypted(),
            "verdict {verdict}"
        );
    }
}

#[test]
fn a_stream_whose_start_was_unseen_is_plaintext_whatever_the_scanner_says() {
    for verdict in [ENC_PENDING, ENC_PLAINTEXT, ENC_TLS, ENC_ENCRYPTED] {
        let st = state(verdict, REASON_TCP_FAST_OPEN);
        assert!(!st.classified_encrypted(), "verdict {verdict}");
        assert_eq!(st.verdict(), ENC_PLAINTEXT);
    }
}
