//! What `hook: file` judges an open by when it cannot see the file: the accesses its flags ask
//! for (io_uring opens that fail closed), and the reason each such route gives.

use daemon_common::*;

#[test]
fn an_open_asks_for_the_accesses_its_flags_name() {
    assert_eq!(requested_access(0), FILE_ACCESS_READ);
    assert_eq!(requested_access(O_WRONLY), FILE_ACCESS_WRITE);
    assert_eq!(
        requested_access(O_RDWR),
        FILE_ACCESS_READ | FILE_ACCESS_WRITE
    );
    // O_TRUNC writes even read-only; O_CREAT creates (whether or not the file exists).
    assert_eq!(
        requested_access(O_TRUNC),
        FILE_ACCESS_READ | FILE_ACCESS_WRITE
    );
    assert_eq!(
        requested_access(O_WRONLY | O_CREAT),
        FILE_ACCESS_WRITE | FILE_ACCESS_CREATE
    );
    // O_PATH reads and writes nothing, whatever else is set.
    assert_eq!(requested_access(O_PATH | O_RDWR | O_CREAT), 0);
}

#[test]
fn every_unjudged_route_says_why_and_judged_ones_do_not() {
    assert_eq!(file_unjudged_reason(FILE_VIA_SYSCALL), None);
    assert_eq!(file_unjudged_reason(FILE_VIA_URING), None);
    for via in [
        FILE_VIA_URING_FIXED_SLOT,
        FILE_VIA_URING_NO_COMPLETION,
        FILE_VIA_URING_LATE_COMPLETION,
        FILE_VIA_URING_FIXED_FILE,
    ] {
        assert!(
            file_unjudged_reason(via).is_some_and(|r| r.starts_with("io_uring ")),
            "{via}"
        );
    }
}
