//! Showing text that came from elsewhere (audit fields a user could choose: command
//! lines, working directories, reasons, host-reported names) on a terminal or in a log
//! line, where a control character could forge a line (`\n`), drive the terminal (ESC
//! sequences: hide text, write the clipboard) or reorder what is read (Unicode
//! bidirectional overrides).
//!
//! Must never: let a C0 or C1 control character, DEL, or a bidirectional control through
//! unescaped; change text that has none (the common case borrows).

use std::borrow::Cow;

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `s` with every control character written as `\xNN` (below 0x80) or `\u{NNNN}`; a
/// backslash is doubled only when something was escaped, so escaped text reads back
/// unambiguously.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_as_text() {
        assert!(matches!(escape_controls("sudo id -u"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb"), "a\\x0ab");
        assert_eq!(
            escape_controls("\x1b[31mred\x1b[0m"),
            "\\x1b[31mred\\x1b[0m"
        );
        assert_eq!(escape_controls("x\u{9b}y"), "x\\u{009b}y");
        assert_eq!(
            escape_controls("evil\u{202e}txt.exe"),
            "evil\\u{202e}txt.exe"
        );
        assert_eq!(escape_controls("a\\b\tc"), "a\\\\b\\x09c");
        assert_eq!(escape_controls("a\\b"), "a\\b", "nothing to escape: as is");
        for s in ["\x07", "\x7f", "\r", "\u{2066}"] {
            assert!(!escape_controls(s).chars().any(needs_escape), "{s:?}");
        }
    }
}
