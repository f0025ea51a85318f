//! The bench's results: figures with their same-run baselines and targets, printed as one
//! table and written as JSON for tracking.
//!
//! Owns: the [`Figure`] model, the met/not-met decision, the table layout and the JSON
//! shape. Must never: measure anything, or invent a value for a figure that was not
//! measured (a part that could not run is a row saying so).

use serde_json::{json, Value};
use std::fmt::Write as _;

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// Lower is better, target is a ceiling.
    AtMost(f64),
    /// Higher is better, target is a floor.
    AtLeast(f64),
    /// Shown for context; no target.
    Info,
}

/// The figure an operator would otherwise get, measured in the same run.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub label: String,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    /// `None`: not measured (see `note`).
    pub value: Option<f64>,
    pub unit: &'static str,
    pub baseline: Option<Baseline>,
    pub goal: Goal,
    pub note: String,
}

impl Figure {
    pub fn new(
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            section,
            name: name.into(),
            value: Some(value),
            unit,
            baseline: None,
            goal: Goal::Info,
            note: String::new(),
        }
    }

    /// A row for something that could not be measured, saying why.
    pub fn missing(
        section: &'static str,
        name: impl Into<String>,
        why: impl Into<String>,
    ) -> Figure {
        Figure {
            section,
            name: name.into(),
            value: None,
            unit: "",
            baseline: None,
            goal: Goal::Info,
            note: why.into(),
        }
    }

    pub fn baseline(mut self, label: impl Into<String>, value: f64) -> Figure {
        self.baseline = Some(Baseline {
            label: label.into(),
            value,
        });
        self
    }

    pub fn goal(mut self, goal: Goal) -> Figure {
        self.goal = goal;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }

    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?;
        let v = self.value?;
        (b.value > 0.0).then(|| v / b.value)
    }

    pub fn met(&self) -> Option<bool> {
        let v = self.value?;
        match self.goal {
            Goal::AtMost(t) => Some(v <= t),
            Goal::AtLeast(t) => Some(v >= t),
            Goal::Info => None,
        }
    }
}

/// A number with about 3 significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "" => num(v),
        "%" => format!("{}%", num(v)),
        u => format!("{} {u}", num(v)),
    }
}

fn target_text(f: &Figure) -> String {
    match f.goal {
        Goal::AtMost(t) => format!("≤ {}", with_unit(t, f.unit)),
        Goal::AtLeast(t) => format!("≥ {}", with_unit(t, f.unit)),
        Goal::Info => String::new(),
    }
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n >= w {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

/// The whole table, one figure per line, grouped by section.
pub fn table(figs: &[Figure]) -> String {
    let rows: Vec<[String; 6]> = figs
        .iter()
        .map(|f| {
            let value = match f.value {
                Some(v) => with_unit(v, f.unit),
                None => "not measured".into(),
            };
            let baseline = f
                .baseline
                .as_ref()
                .map(|b| format!("{} ({})", with_unit(b.value, f.unit), b.label))
                .unwrap_or_default();
            let ratio = f
                .ratio()
                .map(|r| format!("{}x", num(r)))
                .unwrap_or_default();
            let met = match f.met() {
                Some(true) => "met".to_string(),
                Some(false) => "NOT MET".to_string(),
                None => String::new(),
            };
            [f.name.clone(), value, baseline, ratio, target_text(f), met]
        })
        .collect();
    let heads = [
        "figure",
        "value",
        "baseline (same run)",
        "ratio",
        "target",
        "",
    ];
    let mut w = heads.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    // Long baselines would make every line wrap: cap that column.
    w[2] = w[2].min(52);
    let mut out = String::new();
    let line = |cells: &[String; 6]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(&pad(c, w[i]));
            s.push_str("  ");
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&heads.map(String::from)));
    let mut section = "";
    for (f, r) in figs.iter().zip(&rows) {
        if f.section != section {
            section = f.section;
            let _ = writeln!(
                out,
                "── {section} {}",
                "─".repeat(60usize.saturating_sub(section.len()))
            );
        }
        let _ = writeln!(out, "{}", line(r));
        if !f.note.is_empty() {
            let _ = writeln!(out, "    {}", f.note);
        }
    }
    out
}

pub fn to_json(figs: &[Figure], meta: Value) -> Value {
    let list: Vec<Value> = figs
        .iter()
        .map(|f| {
            let (goal, target) = match f.goal {
                Goal::AtMost(t) => ("at_most", Some(t)),
                Goal::AtLeast(t) => ("at_least", Some(t)),
                Goal::Info => ("info", None),
            };
            json!({
                "section": f.section,
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "baseline": f.baseline.as_ref().map(|b| json!({"label": b.label, "value": b.value})),
                "ratio": f.ratio(),
                "goal": goal,
                "target": target,
                "met": f.met(),
                "note": f.note,
            })
        })
        .collect();
    json!({ "meta": meta, "figures": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_follows_the_goal_direction() {
        let f = Figure::new("x", "a", 2.0, "µs").goal(Goal::AtMost(1.0));
        assert_eq!(f.met(), Some(false));
        let f = Figure::new("x", "a", 2.0, "/s").goal(Goal::AtLeast(1.0));
        assert_eq!(f.met(), Some(true));
        let f = Figure::missing("x", "a", "no nscd");
        assert_eq!(f.met(), None);
        assert!(table(&[f]).contains("not measured"));
    }

    #[test]
    fn ratio_is_value_over_baseline() {
        let f = Figure::new("x", "a", 1.0, "µs").baseline("files", 4.0);
        assert_eq!(f.ratio(), Some(0.25));
        let v = to_json(&[f], json!({}));
        assert_eq!(v["figures"][0]["ratio"], json!(0.25));
    }
}
