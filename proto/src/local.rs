//! The host's local accounts, read from the files directly (never through NSS, which
//! would ask nss_smith itself): the one parser pam_smith, nss_smith and hostd share
//! (issue 14; there were three, with three different answers).
//!
//! One rule set for everyone:
//! - blank lines and `#` comments are skipped;
//! - the name is the first field, with a NIS `+`/`-` prefix removed (`+alice` is local);
//! - a line without `:` still reserves its name (on doubt, local);
//! - the id is the third field when it is a number;
//! - a file that cannot be read, other than "it does not exist", makes every name count
//!   as local ([`Presence::Unreadable`]): Smith never acts on a name it cannot rule out.
//!
//! Subordinate id files (`/etc/subuid`, `/etc/subgid`: `owner:start:count`) give the
//! ranges [`SubRange`] that rootless containers of local users run as.
//!
//! Must never: allocate per line (callers iterate borrowed entries), or treat an
//! unreadable file as "nobody is local".

use std::path::Path;

/// One account line: its name and, if the line has one, its numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a [u8],
    pub id: Option<u32>,
}

/// The entries of a passwd- or group-format file.
pub fn entries(text: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b'#' {
            return None;
        }
        let mut fields = line.split(|&b| b == b':');
        let raw = fields.next().unwrap_or(b"");
        let name = match raw.first() {
            Some(b'+') | Some(b'-') => &raw[1..],
            _ => raw,
        };
        if name.is_empty() {
            return None;
        }
        let id = fields
            .nth(1)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.trim().parse::<u32>().ok());
        Some(Entry { name, id })
    })
}

/// Whether a name is in a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    /// The file exists but could not be read (errno): treat the name as local.
    Unreadable(i32),
}

impl Presence {
    /// "On doubt, local": `Present` or `Unreadable`.
    pub fn is_local(self) -> bool {
        !matches!(self, Presence::Absent)
    }
}

/// Reads a whole local file; `Ok(None)` if it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, i32> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Whether `name` has a line in the passwd- or group-format file at `path`.
pub fn find(path: &Path, name: &[u8]) -> Presence {
    match read(path) {
        Ok(Some(text)) => {
            if entries(&text).any(|e| e.name == name) {
                Presence::Present
            } else {
                Presence::Absent
            }
        }
        Ok(None) => Presence::Absent,
        Err(errno) => Presence::Unreadable(errno),
    }
}

/// A subordinate id range: `[start, start + count)`, clamped to u32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRange {
    /// The owner as written (a name or a uid).
    pub owner: String,
    pub start: u32,
    /// Last id of the range (inclusive).
    pub last: u32,
}

impl SubRange {
    pub fn contains(&self, id: u32) -> bool {
        (self.start..=self.last).contains(&id)
    }
}

/// The ranges of a `/etc/subuid`- or `/etc/subgid`-format file (malformed lines and
/// empty ranges skipped).
pub fn sub_ranges(text: &[u8]) -> Vec<SubRange> {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut f = line.split(':');
            let owner = f.next()?.to_string();
            let start: u64 = f.next()?.trim().parse().ok()?;
            let count: u64 = f.next()?.trim().parse().ok()?;
            if count == 0 || start > u32::MAX as u64 {
                return None;
            }
            let last = start.saturating_add(count - 1).min(u32::MAX as u64);
            Some(SubRange {
                owner,
                start: start as u32,
                last: last as u32,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_set_for_names_and_ids() {
        let text = b"root:x:0:0:root:/root:/bin/bash\n# comment\n\nbob:x:200005:200005::/home/bob:/bin/sh\r\nbroken\n+nis:x:1501:1501::/:/bin/sh\n-gone\n+\nops:x:notanumber\n";
        let v: Vec<(String, Option<u32>)> = entries(text)
            .map(|e| (String::from_utf8_lossy(e.name).into_owned(), e.id))
            .collect();
        assert_eq!(
            v,
            vec![
                ("root".into(), Some(0)),
                ("bob".into(), Some(200_005)),
                ("broken".into(), None),
                ("nis".into(), Some(1501)),
                ("gone".into(), None),
                ("ops".into(), None),
            ]
        );
    }

    #[test]
    fn presence_and_the_unreadable_file() {
        let d = std::env::temp_dir().join(format!("proto-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("passwd");
        std::fs::write(&p, "deploy:x:1000:1000::/home/deploy:/bin/sh\nbroken\n").unwrap();
        assert_eq!(find(&p, b"deploy"), Presence::Present);
        assert_eq!(find(&p, b"broken"), Presence::Present);
        assert_eq!(find(&p, b"dep"), Presence::Absent);
        assert_eq!(find(&d.join("missing"), b"deploy"), Presence::Absent);
        // A directory where the file should be: unreadable, so local.
        let p2 = d.join("dir");
        std::fs::create_dir_all(&p2).unwrap();
        assert!(matches!(find(&p2, b"anyone"), Presence::Unreadable(_)));
        assert!(find(&p2, b"anyone").is_local());
    }

    #[test]
    fn subordinate_ranges() {
        let r = sub_ranges(
            b"alice:100000:65536\nbob:165536:65536\n1002:231072:65536\nbad\nzero:5:0\nbig:4294967000:100000\n",
        );
        assert_eq!(r.len(), 4);
        assert!(r[1].contains(200_000));
        assert!(r[2].contains(231_072) && r[2].contains(296_607) && !r[2].contains(296_608));
        assert_eq!(r[3].last, u32::MAX);
    }
}
