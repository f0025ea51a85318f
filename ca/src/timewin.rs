//! Grant time windows: `DAYS HH:MM-HH:MM [ZONE]`, e.g. `mon-fri 09:00-18:00 UTC`,
//! `sat,sun 10:00-14:00 +02:00`, `daily 22:00-06:00` (crosses midnight: belongs to the
//! day it starts on).
//!
//! DAYS: `daily` or `*`, or a comma list of days (`mon`..`sun`) and ranges (`mon-fri`,
//! `fri-mon` wraps). ZONE: `UTC` (default), a fixed offset `+HH:MM`/`-HH:MM`, or an IANA
//! time zone name (`Europe/Paris`, `America/New_York`), evaluated with the tz database
//! compiled in (`chrono-tz`), so office hours follow daylight saving time: `mon-fri
//! 09:00-18:00 Europe/Paris` is 08:00-17:00 UTC in winter and 07:00-16:00 UTC in summer.
//! Days and hours are those of the zone's local time.
//!
//! Must never: accept a window it cannot evaluate exactly (a grant with an unparsable
//! window would otherwise be always or never usable by accident).

use chrono::{Datelike, TimeZone, Timelike};
use std::fmt;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
pub const MAX_WINDOWS: usize = 8;

/// A parsed window; it displays as the text it was parsed from (trimmed), which is how
/// it is stored and listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    text: String,
    /// Bit i = day i (0 = Monday).
    days: u8,
    start_min: u32,
    end_min: u32,
    zone: Zone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Zone {
    /// Offset from UTC in minutes.
    Fixed(i32),
    /// An IANA zone, with its DST rules.
    Named(chrono_tz::Tz),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError(pub String);

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WindowError {}

fn err(text: &str, why: &str) -> WindowError {
    WindowError(format!(
        "time window '{}': {why} (expected e.g. 'mon-fri 09:00-18:00 UTC' or 'daily 22:00-06:00 +02:00')",
        text.escape_debug()
    ))
}

fn day(s: &str) -> Option<u32> {
    DAYS.iter().position(|d| *d == s).map(|i| i as u32)
}

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if h == 24 && m == 0 {
        return Some(24 * 60);
    }
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        if text.len() > 64 || text.chars().any(|c| c.is_control()) {
            return Err(err(text, "too long or contains control characters"));
        }
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (days_s, hours_s, zone_s) = match parts.as_slice() {
            [d, h] => (*d, *h, "UTC"),
            [d, h, z] => (*d, *h, *z),
            _ => return Err(err(text, "needs DAYS HH:MM-HH:MM [ZONE]")),
        };
        let mut days = 0u8;
        if days_s == "daily" || days_s == "*" {
            days = 0x7f;
        } else {
            for item in days_s.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (
                            day(a).ok_or_else(|| err(text, &format!("unknown day '{a}'")))?,
                            day(b).ok_or_else(|| err(text, &format!("unknown day '{b}'")))?,
                        );
                        let mut d = a;
                        loop {
                            days |= 1 << d;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => {
                        let d =
                            day(item).ok_or_else(|| err(text, &format!("unknown day '{item}'")))?;
                        days |= 1 << d;
                    }
                }
            }
        }
        let (a, b) = hours_s
            .split_once('-')
            .ok_or_else(|| err(text, "hours must be HH:MM-HH:MM"))?;
        let start_min = hhmm(a).ok_or_else(|| err(text, &format!("bad time '{a}'")))?;
        let end_min = hhmm(b).ok_or_else(|| err(text, &format!("bad time '{b}'")))?;
        if start_min == end_min || start_min >= 24 * 60 {
            return Err(err(text, "the window is empty"));
        }
        let zone = if zone_s == "UTC" || zone_s == "Z" {
            Zone::Fixed(0)
        } else if let Some(rest) = zone_s
            .strip_prefix('+')
            .or_else(|| zone_s.strip_prefix('-'))
        {
            let m = hhmm(rest)
                .filter(|m| *m <= 14 * 60)
                .ok_or_else(|| err(text, &format!("bad offset '{zone_s}'")))?
                as i32;
            Zone::Fixed(if zone_s.starts_with('-') { -m } else { m })
        } else {
            Zone::Named(zone_s.parse::<chrono_tz::Tz>().map_err(|_| {
                err(
                    text,
                    &format!(
                        "unknown time zone '{zone_s}'; use an IANA name like Europe/Paris, UTC, \
                         or a fixed offset like +02:00"
                    ),
                )
            })?)
        };
        Ok(Window {
            text: parts.join(" "),
            days,
            start_min,
            end_min,
            zone,
        })
    }

    /// Weekday (0 = Monday) and minute of the day of unix time `t` in the window's zone.
    fn local(&self, t: u64) -> (u32, u32) {
        match self.zone {
            Zone::Fixed(offset_min) => {
                let local = t as i64 + offset_min as i64 * 60;
                let days_since_epoch = local.div_euclid(86400);
                // 1970-01-01 was a Thursday (index 3 with Monday = 0).
                let wd = (days_since_epoch + 3).rem_euclid(7) as u32;
                (wd, (local.rem_euclid(86400) / 60) as u32)
            }
            Zone::Named(tz) => match tz.timestamp_opt(t.min(i64::MAX as u64) as i64, 0) {
                chrono::LocalResult::Single(d) | chrono::LocalResult::Ambiguous(d, _) => (
                    d.weekday().num_days_from_monday(),
                    d.hour() * 60 + d.minute(),
                ),
                // Cannot happen for instants; fail closed (no day matches).
                chrono::LocalResult::None => (7, 0),
            },
        }
    }

    /// `t` in the window's zone, e.g. `Mon 11:00 Europe/Paris`; `None` for UTC.
    pub fn describe_local(&self, t: u64) -> Option<String> {
        let name = match self.zone {
            Zone::Fixed(0) => return None,
            Zone::Fixed(m) => format!(
                "{}{:02}:{:02}",
                if m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            ),
            Zone::Named(tz) => tz.name().to_string(),
        };
        let (wd, minute) = self.local(t);
        let day = DAYS.get(wd as usize)?;
        Some(format!(
            "{}{} {:02}:{:02} {name}",
            day[..1].to_uppercase(),
            &day[1..],
            minute / 60,
            minute % 60
        ))
    }

    /// Whether unix time `t` falls in the window.
    pub fn contains(&self, t: u64) -> bool {
        let (wd, minute) = self.local(t);
        if wd > 6 {
            return false;
        }
        let prev = (wd + 6) % 7;
        let on = |d: u32| self.days & (1 << d) != 0;
        if self.start_min < self.end_min {
            on(wd) && minute >= self.start_min && minute < self.end_min
        } else {
            (on(wd) && minute >= self.start_min) || (on(prev) && minute < self.end_min)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How long from `now` (at most `limit` seconds) one of `windows` stays open without a
/// break: windows open and close on whole minutes, so each minute boundary is checked.
/// 0 when none is open at `now`.
pub fn open_for(windows: &[Window], now: u64, limit: u64) -> u64 {
    if !windows.iter().any(|w| w.contains(now)) {
        return 0;
    }
    let mut t = (now / 60 + 1) * 60;
    while t < now.saturating_add(limit) {
        if !windows.iter().any(|w| w.contains(t)) {
            return t - now;
        }
        t += 60;
    }
    limit
}

/// `t` in UTC and in the zones of `windows`, e.g. `Mon 10:00 UTC (Mon 11:00
/// Europe/Paris)`, for denial messages.
pub fn describe_for(windows: &[Window], t: u64) -> String {
    let mut s = describe(t);
    let mut locals: Vec<String> = windows.iter().filter_map(|w| w.describe_local(t)).collect();
    locals.dedup();
    if !locals.is_empty() {
        s.push_str(&format!(" ({})", locals.join(", ")));
    }
    s
}

/// A human form of `t` in UTC, e.g. `Sat 10:05 UTC`.
pub fn describe(t: u64) -> String {
    let days = t / 86400;
    let wd = ((days + 3) % 7) as usize;
    let m = (t % 86400) / 60;
    let name = DAYS[wd];
    let mut cap = name[..1].to_uppercase();
    cap.push_str(&name[1..]);
    format!("{cap} {:02}:{:02} UTC", m / 60, m % 60)
}

/// A window travels as its text, parsed again on the way in (the store's change log).
impl serde::Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Window::parse(&s).map_err(|e| serde::de::Error::custom(e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-01-01 00:00:00 UTC was a Monday.
    const MON: u64 = 1_704_067_200;
    const H: u64 = 3600;

    #[test]
    fn office_hours() {
        let w = Window::parse("mon-fri 09:00-18:00 UTC").unwrap();
        assert!(!w.contains(MON + 8 * H + 59 * 60));
        // Open at 17:30 for half an hour; at 12:00 for the whole limit of 2 h; closed at 20:00.
        let ws = [w.clone()];
        assert_eq!(
            open_for(&ws, MON + 17 * H + 30 * 60 + 7, 8 * H),
            30 * 60 - 7
        );
        assert_eq!(open_for(&ws, MON + 12 * H, 2 * H), 2 * H);
        assert_eq!(open_for(&ws, MON + 20 * H, 2 * H), 0);
        assert!(w.contains(MON + 9 * H));
        assert!(w.contains(MON + 17 * H + 59 * 60));
        assert!(!w.contains(MON + 18 * H));
        assert!(w.contains(MON + 4 * 86400 + 12 * H), "friday");
        assert!(!w.contains(MON + 5 * 86400 + 12 * H), "saturday");
        assert_eq!(describe(MON + 5 * 86400 + 12 * H), "Sat 12:00 UTC");
    }

    #[test]
    fn offsets_and_midnight() {
        // 09:00-18:00 at +02:00 is 07:00-16:00 UTC.
        let w = Window::parse("mon 09:00-18:00 +02:00").unwrap();
        assert!(w.contains(MON + 7 * H));
        assert!(!w.contains(MON + 16 * H));
        let n = Window::parse("fri 22:00-06:00").unwrap();
        let fri = MON + 4 * 86400;
        assert!(n.contains(fri + 23 * H));
        assert!(
            n.contains(fri + 86400 + 5 * H),
            "saturday morning belongs to friday's night"
        );
        assert!(
            !n.contains(fri + 5 * H),
            "friday morning is thursday's night"
        );
        let wrap = Window::parse("fri-mon 10:00-11:00").unwrap();
        assert!(wrap.contains(MON + 6 * 86400 + 10 * H), "sunday");
        assert!(!wrap.contains(MON + 86400 + 10 * H), "tuesday");
    }

    #[test]
    fn named_zones_follow_daylight_saving_time() {
        let w = Window::parse("mon-fri 09:00-18:00 Europe/Paris").unwrap();
        // Winter (CET, UTC+1): Monday 2024-01-01 09:00 Paris = 08:00 UTC.
        assert!(!w.contains(MON + 7 * H + 59 * 60));
        assert!(w.contains(MON + 8 * H));
        assert!(w.contains(MON + 16 * H + 59 * 60));
        assert!(!w.contains(MON + 17 * H));
        // Summer (CEST, UTC+2): Monday 2024-07-01 09:00 Paris = 07:00 UTC.
        let jul = 1_719_792_000; // 2024-07-01 00:00 UTC, a Monday
        assert!(w.contains(jul + 7 * H));
        assert!(!w.contains(jul + 6 * H + 59 * 60));
        assert!(!w.contains(jul + 16 * H));
        // Local days: Friday 23:30 UTC is Saturday 00:30 in Tokyo.
        let t = Window::parse("sat 00:00-01:00 Asia/Tokyo").unwrap();
        let fri = MON + 4 * 86400;
        assert!(t.contains(fri + 15 * H + 30 * 60));
        assert_eq!(
            t.describe_local(fri + 15 * H + 30 * 60).as_deref(),
            Some("Sat 00:30 Asia/Tokyo")
        );
        // The DST switch day in New York (2024-03-10, clocks 02:00 -> 03:00):
        // 09:00 local is 13:00 UTC that day (EDT), 14:00 UTC the day before (EST).
        let ny = Window::parse("daily 09:00-09:30 America/New_York").unwrap();
        let mar10 = 1_710_028_800; // 2024-03-10 00:00 UTC
        assert!(ny.contains(mar10 + 13 * H));
        assert!(!ny.contains(mar10 + 14 * H));
        assert!(ny.contains(mar10 - 86400 + 14 * H));
        assert_eq!(
            describe_for(
                &[Window::parse("mon 09:00-10:00 Europe/Paris").unwrap()],
                MON + 10 * H
            ),
            "Mon 10:00 UTC (Mon 11:00 Europe/Paris)"
        );
    }

    #[test]
    fn a_window_displays_as_the_text_it_was_parsed_from() {
        let w = Window::parse("  mon-fri   09:00-18:00 Europe/Paris ").unwrap();
        assert_eq!(w.to_string(), "mon-fri 09:00-18:00 Europe/Paris");
        assert_eq!(Window::parse(&w.to_string()).unwrap(), w);
    }

    #[test]
    fn refuses_what_it_cannot_evaluate() {
        for bad in [
            "mon-fri 09:00-18:00 Europe/Pariss",
            "mon-fri 09:00-18:00 CEST",
            "weekdays 09:00-18:00",
            "mon 9:00-18:00",
            "mon 09:00-09:00",
            "mon 25:00-26:00",
            "mon",
            "mon 09:00-18:00 +15:00",
            "mon 09:00-18:00 UTC extra",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert!(Window::parse("mon-fri 09:00-18:00 Mars/Olympus")
            .unwrap_err()
            .to_string()
            .contains("unknown time zone"));
    }
}
