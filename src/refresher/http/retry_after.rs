//! `Retry-After` values: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a `Retry-After` value asks to wait, counted from `now`.
///
/// Accepts delta-seconds (`"120"`) and the three HTTP-date forms
/// (`"Sun, 06 Nov 1994 08:49:37 GMT"`, the obsolete RFC 850
/// `"Sunday, 06-Nov-94 08:49:37 GMT"` and asctime
/// `"Sun Nov  6 08:49:37 1994"`). A date in the past means no wait
/// (`Some(Duration::ZERO)`); anything else unparsable gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP-date in any of its three forms.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [weekday, day, month, year, time, "GMT"] if weekday.ends_with(',') => {
            (day.parse().ok()?, *month, year.parse().ok()?, *time)
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [weekday, date, time, "GMT"] if weekday.ends_with(',') => {
            let mut parts = date.split('-');
            let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
            (day.parse().ok()?, month, two_digit_year(year)?, *time)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, month, day, time, year] => (day.parse().ok()?, *month, year.parse().ok()?, *time),
        _ => return None,
    };
    let month = month_number(month)?;
    let seconds_of_day = parse_time(time)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days.checked_mul(86_400)?.checked_add(seconds_of_day)?;
    let seconds = u64::try_from(seconds).unwrap_or(0);
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// RFC 850 two-digit years: 70-99 are 19xx, the rest 20xx.
fn two_digit_year(year: &str) -> Option<i64> {
    if year.len() != 2 {
        return None;
    }
    let yy: i64 = year.parse().ok()?;
    Some(if yy >= 70 { 1900 + yy } else { 2000 + yy })
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let index = MONTHS.iter().position(|m| *m == name)?;
    u32::try_from(index + 1).ok()
}

/// `hh:mm:ss` as seconds since midnight (a leap second is accepted).
fn parse_time(time: &str) -> Option<i64> {
    let mut parts = time.split(':');
    let mut next = |max: i64| -> Option<i64> {
        let part = parts.next()?;
        let value: i64 = part.parse().ok()?;
        (part.len() == 2 && (0..=max).contains(&value)).then_some(value)
    };
    let (hours, minutes, seconds) = (next(23)?, next(59)?, next(60)?);
    parts
        .next()
        .is_none()
        .then_some(hours * 3600 + minutes * 60 + seconds)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, the RFC's example date.
    const RFC_EXAMPLE: u64 = 784_111_777;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn all_three_date_forms() {
        let now = at(RFC_EXAMPLE - 30);
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(value, now),
                Some(Duration::from_secs(30)),
                "{value}"
            );
        }
    }

    #[test]
    fn a_past_date_means_no_wait() {
        let now = at(RFC_EXAMPLE + 1000);
        let wait = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now);
        assert_eq!(wait, Some(Duration::ZERO));
    }

    #[test]
    fn leap_years_and_far_dates() {
        let epoch = at(0);
        let leap_day = parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", epoch);
        assert_eq!(leap_day, Some(Duration::from_secs(1_709_164_800)));
        let far = parse_retry_after("Fri, 31 Dec 2100 23:59:59 GMT", epoch);
        assert_eq!(far, Some(Duration::from_secs(4_133_980_799)));
    }

    #[test]
    fn garbage_is_none() {
        let now = SystemTime::now();
        for value in [
            "soon",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(value, now), None, "{value}");
        }
    }
}
