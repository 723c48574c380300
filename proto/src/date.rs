//! Calendar dates of Unix times (UTC, proleptic Gregorian), for the
//! timestamps people read: the CLI's `YYYY-MM-DDTHH:MM:SS.mmmZ` and the
//! fault harness' run stamps `YYYYMMDDTHHMMSSZ`. No time-zone database and
//! no dependency: UTC only.

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the Unix epoch as ISO 8601 extended UTC with
/// milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Seconds since the Unix epoch as ISO 8601 basic UTC: `YYYYMMDDTHHMMSSZ`
/// (fits file names).
pub fn utc_basic(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let r = secs % 86_400;
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", r / 3600, r % 3600 / 60, r % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known days map to their dates: the epoch, a leap day, the day after
    /// it, the last day of a century that is not a leap year's, a day
    /// before the epoch.
    #[test]
    fn date_civil_from_days_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    /// Every day from 1970 to 2100 follows the previous one: the day of
    /// month increases by one, or the month (or year) turns over at the
    /// month's length.
    #[test]
    fn date_civil_from_days_is_continuous() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(0);
        for z in 1..47_482 {
            let (y, m, d) = civil_from_days(z);
            let (py, pm, pd) = prev;
            let next = if pd < len(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), next, "day {z}");
            prev = (y, m, d);
        }
    }

    /// Both formats of known instants, with a leap day and the last
    /// millisecond of a year.
    #[test]
    fn date_formats() {
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_millis(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(utc_basic(0), "19700101T000000Z");
        assert_eq!(utc_basic(1_795_257_256), "20261121T103416Z");
    }
}
