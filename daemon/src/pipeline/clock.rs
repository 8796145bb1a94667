//! Time for events: converting the kernel's boot-time nanoseconds (`bpf_ktime_get_boot_ns`,
//! CLOCK_BOOTTIME) into wall-clock instants, and formatting them as RFC 3339 with nanoseconds
//! (`2026-11-22T02:51:12.123456789Z`, always UTC, always nine fraction digits).

/// Maps CLOCK_BOOTTIME nanoseconds to Unix-epoch nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    /// Wall-clock (CLOCK_REALTIME) nanoseconds since the epoch at boot-time zero.
    boot_epoch_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every supported kernel.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl BootClock {
    /// Measures the offset between CLOCK_REALTIME and CLOCK_BOOTTIME now.
    pub fn now() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        BootClock {
            boot_epoch_ns: real - boot,
        }
    }

    /// A clock whose boot happened at `boot_epoch_ns` (tests).
    #[cfg(test)]
    pub fn fixed(boot_epoch_ns: i128) -> Self {
        BootClock { boot_epoch_ns }
    }

    /// Current CLOCK_BOOTTIME in nanoseconds (the kernel's event time base).
    pub fn boot_now_ns() -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME) as u64
    }

    /// RFC 3339 (UTC, nanoseconds) of a boot-time instant.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        format_rfc3339_ns(self.boot_epoch_ns + boot_ns as i128)
    }

    /// RFC 3339 of the current wall-clock time.
    pub fn rfc3339_now(&self) -> String {
        format_rfc3339_ns(clock_ns(libc::CLOCK_REALTIME))
    }
}

/// Formats nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn format_rfc3339_ns(epoch_ns: i128) -> String {
    // Every event's times are after 1970 and fit 64 bits: their divisions need no 128-bit
    // arithmetic (a software routine, a visible share of the daemon's CPU per event).
    let (days, sod, nanos) = match u64::try_from(epoch_ns) {
        Ok(ns) => {
            let secs = ns / 1_000_000_000;
            (
                (secs / 86_400) as i64,
                (secs % 86_400) as u32,
                (ns % 1_000_000_000) as u32,
            )
        }
        Err(_) => {
            let secs = epoch_ns.div_euclid(1_000_000_000);
            (
                secs.div_euclid(86_400) as i64,
                secs.rem_euclid(86_400) as u32,
                epoch_ns.rem_euclid(1_000_000_000) as u32,
            )
        }
    };
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{nanos:09}Z");
    }
    // Every event carries several of these: digits into a fixed buffer, not `format!`.
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut b[0..4], y as u32);
    put_digits(&mut b[5..7], m);
    put_digits(&mut b[8..10], d);
    put_digits(&mut b[11..13], hh);
    put_digits(&mut b[14..16], mm);
    put_digits(&mut b[17..19], ss);
    put_digits(&mut b[20..29], nanos);
    String::from_utf8(b.to_vec()).expect("ASCII digits and separators")
}

/// Writes `v`'s last `out.len()` decimal digits into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut v: u32) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29T12:34:56.000000007Z (leap day)
        assert_eq!(
            format_rfc3339_ns(951_827_696_000_000_007),
            "2000-02-29T12:34:56.000000007Z"
        );
        // 2026-11-22T02:51:12.5Z
        assert_eq!(
            format_rfc3339_ns(1_795_315_872_500_000_000),
            "2026-11-22T02:51:12.500000000Z"
        );
        assert_eq!(format_rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn the_digit_buffer_agrees_with_format_across_the_calendar() {
        let reference = |ns: i128| {
            let secs = ns.div_euclid(1_000_000_000);
            let sod = secs.rem_euclid(86_400) as u32;
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400) as i64);
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
                sod / 3600,
                sod / 60 % 60,
                sod % 60,
                ns.rem_euclid(1_000_000_000)
            )
        };
        // Every ~37 days and a prime number of seconds and ns, from 1970 to past year 10000.
        let step: i128 = 3_200_017 * 1_000_000_000 + 123_456_789;
        let mut ns: i128 = -step;
        while ns < 253_402_300_800 * 1_000_000_000 + 10 * step {
            assert_eq!(format_rfc3339_ns(ns), reference(ns), "at {ns}");
            ns += step;
        }
    }

    #[test]
    fn boot_offset_is_applied() {
        let c = BootClock::fixed(1_000_000_000);
        assert_eq!(c.rfc3339(1), "1970-01-01T00:00:01.000000001Z");
        assert_ne!(c.rfc3339(0), BootClock::fixed(0).rfc3339(0));
        // The real clock puts boot in the past and "now" after it.
        let real = BootClock::now();
        assert!(real.boot_epoch_ns > 0);
        assert!(real.rfc3339(BootClock::boot_now_ns()).starts_with("20"));
    }
}
