//! Grant time windows: `DAYS HH:MM-HH:MM [ZONE]`, e.g. `mon-fri 09:00-18:00 UTC`,
//! `sat,sun 10:00-14:00 +02:00`, `daily 22:00-06:00` (crosses midnight: belongs to the
//! day it starts on).
//!
//! DAYS: `daily` or `*`, or a comma list of days (`mon`..`sun`) and ranges (`mon-fri`,
//! `fri-mon` wraps). ZONE: `UTC` (default) or a fixed offset `+HH:MM`/`-HH:MM`. Named
//! zones (`Europe/Paris`) are refused with a clear error for now: evaluating them needs
//! the tz database and its DST rules.
//!
//! Must never: accept a window it cannot evaluate exactly (a grant with an unparsable
//! window would otherwise be always or never usable by accident).

use std::fmt;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
pub const MAX_WINDOWS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit i = day i (0 = Monday).
    days: u8,
    start_min: u32,
    end_min: u32,
    /// Offset from UTC in minutes.
    offset_min: i32,
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
        let offset_min = if zone_s == "UTC" || zone_s == "Z" {
            0
        } else if let Some(rest) = zone_s
            .strip_prefix('+')
            .or_else(|| zone_s.strip_prefix('-'))
        {
            let m = hhmm(rest)
                .filter(|m| *m <= 14 * 60)
                .ok_or_else(|| err(text, &format!("bad offset '{zone_s}'")))?
                as i32;
            if zone_s.starts_with('-') {
                -m
            } else {
                m
            }
        } else {
            return Err(err(
                text,
                &format!(
                    "zone '{zone_s}' is not supported yet; use UTC or a fixed offset like +02:00"
                ),
            ));
        };
        Ok(Window {
            days,
            start_min,
            end_min,
            offset_min,
        })
    }

    /// Whether unix time `t` falls in the window.
    pub fn contains(&self, t: u64) -> bool {
        let local = t as i64 + self.offset_min as i64 * 60;
        let days_since_epoch = local.div_euclid(86400);
        let minute = (local.rem_euclid(86400) / 60) as u32;
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        let wd = (days_since_epoch + 3).rem_euclid(7) as u32;
        let prev = (wd + 6) % 7;
        let on = |d: u32| self.days & (1 << d) != 0;
        if self.start_min < self.end_min {
            on(wd) && minute >= self.start_min && minute < self.end_min
        } else {
            (on(wd) && minute >= self.start_min) || (on(prev) && minute < self.end_min)
        }
    }
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
    fn refuses_what_it_cannot_evaluate() {
        for bad in [
            "mon-fri 09:00-18:00 Europe/Paris",
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
        assert!(Window::parse("mon-fri 09:00-18:00 Europe/Paris")
            .unwrap_err()
            .to_string()
            .contains("not supported yet"));
    }
}
