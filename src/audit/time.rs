//! The audit record's `time`: the moment as a `SystemTime`, written as RFC
//! 3339 UTC with milliseconds (`2026-11-26T04:10:00.123Z`) when the record is
//! encoded; the date and time of day are formatted once per second per
//! thread, only the milliseconds per record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A record's time; encodes as `YYYY-MM-DDThh:mm:ss.mmmZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }

    /// `millis` after the Unix epoch.
    pub fn from_unix_millis(millis: u64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_millis(millis))
    }

    /// The 24 ASCII bytes of the RFC 3339 form. Times before 1970 are
    /// written as the epoch, after 9999 as 9999-12-31T23:59:59.999Z (the
    /// clock would have to be far off for either).
    pub fn rfc3339(&self) -> [u8; 24] {
        const LAST: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let millis = self
            .0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(LAST))
            .min(LAST);
        let secs = millis / 1000;
        let mut out = SECOND.with(|last| match last.get() {
            (s, text) if s == secs => text,
            _ => {
                let text = second(secs);
                last.set((secs, text));
                text
            }
        });
        digits(&mut out[20..23], millis % 1000);
        out
    }
}

thread_local! {
    /// The last second this thread formatted, and its text.
    static SECOND: std::cell::Cell<(u64, [u8; 24])> =
        const { std::cell::Cell::new((u64::MAX, [0; 24])) };
}

/// `YYYY-MM-DDThh:mm:ss.000Z` of `secs` after the epoch.
fn second(secs: u64) -> [u8; 24] {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], month);
    digits(&mut out[8..10], day);
    digits(&mut out[11..13], of_day / 3600);
    digits(&mut out[14..16], of_day / 60 % 60);
    digits(&mut out[17..19], of_day % 60);
    out
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.rfc3339();
        // ASCII digits and separators only.
        f.write_str(std::str::from_utf8(&bytes).unwrap_or("1970-01-01T00:00:00.000Z"))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Writes `n` as zero-padded decimal filling `out`.
fn digits(out: &mut [u8], mut n: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Year, month (1-12) and day (1-31) of the `days`-th day after 1970-01-01,
/// in the proleptic Gregorian calendar: days are counted in 400-year eras
/// of 146,097 days starting on March 1st, so the leap day ends a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719,468 counted from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March ... 11 = February.
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn humantime_form(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }

    #[test]
    fn the_same_text_as_humantime() {
        // Fixed points: the epoch, leap days, century rules, year ends.
        for millis in [
            0u64,
            951_782_400_000,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999
            4_107_542_400_000,   // 2100-03-01 (2100 is not a leap year)
            1_709_164_800_123,   // 2024-02-29T00:00:00.123
            1_798_761_599_999,   // 2026-12-31T23:59:59.999
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(Timestamp(t).to_string(), humantime_form(t), "{millis}");
        }
        // About one step a day to 2200, then one every ~37 days to 9999,
        // each landing at a different time of day.
        for (end, step) in [
            (7_258_118_400_000u64, 86_399_997u64),
            (253_402_300_799_999, 3_199_999_993),
        ] {
            let mut millis: u64 = 0;
            while millis < end {
                let t = UNIX_EPOCH + Duration::from_millis(millis);
                assert_eq!(Timestamp(t).to_string(), humantime_form(t), "{millis}");
                millis += step + millis % 7919;
            }
        }
    }

    #[test]
    fn records_within_one_second_share_its_text_and_keep_their_milliseconds() {
        // Within a second (the cached text), across it, and back to an
        // earlier second.
        let base = 1_798_761_598_000u64; // 2026-12-31T23:59:58.000
        for millis in [
            base,
            base + 1,
            base + 999,
            base + 1_000,
            base + 1_999,
            base + 2_000, // 2027-01-01T00:00:00.000
            base + 500,
            base + 2_001,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(Timestamp(t).to_string(), humantime_form(t), "{millis}");
        }
    }

    #[test]
    fn out_of_range_times_are_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Timestamp(before).to_string(), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(Timestamp(after).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn serialises_as_a_json_string() {
        let t = Timestamp::from_unix_millis(1_795_666_200_123);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-26T04:10:00.123Z\""
        );
    }
}
