//! CycloneDX 1.5 SBOMs (JSON) for the packages, from `cargo metadata` and `Cargo.lock`.
//!
//! - One per package file, `<package file>.cdx.json` beside it: the crates compiled
//!   into that package's binaries (scope `required`), and the crates only used to build
//!   them: build scripts, proc macros and their dependencies (scope `excluded`), for
//!   the build machine's target and the features of the release build (`cargo tree -p`
//!   the five packaged crates at once, as debian/rules and the spec build them). Each with version, SPDX license expression, purl
//!   (`pkg:cargo/NAME@VERSION` for crates.io) and the SHA-256 that `Cargo.lock` pins;
//!   the package file's own SHA-256 in `metadata.component`.
//! - One for the whole lock file, `smith-VERSION.workspace.cdx.json`: every crate of
//!   `Cargo.lock` (all platforms, development and tooling crates included), `required`
//!   if some package's binaries link it, else `excluded`, with a `smith:packages`
//!   property naming the packages that link it.
//!
//! Byte for byte reproducible: components sorted, the timestamp is
//! `SOURCE_DATE_EPOCH`, and the serial number is derived from the content (a UUIDv8
//! from its SHA-256), not random; this is why it is generated here rather than by
//! `cargo cyclonedx`, whose output carries a random serial number and the current time.
//!
//! Must never: list a crate that is not in `Cargo.lock`, or leave one without a
//! version and license (generation fails instead).

use crate::release;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which workspace crates make up each package's binaries.
pub const PACKAGE_CRATES: &[(&str, &[&str])] = &[
    ("smith-host", &["smith-hostd", "nss_smith", "pam_smith"]),
    ("smith-ca", &["smith-ca"]),
    ("smith", &["smith-cli"]),
];

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// A crate of the lock file, as cargo metadata describes it.
#[derive(Clone, Debug)]
struct Crate {
    name: String,
    version: String,
    license: String,
    source: Option<String>,
    description: Option<String>,
}

/// The dependency graph for one platform filter.
struct Graph {
    crates: HashMap<String, Crate>,
    /// id -> (dep id, normal?, build?)
    deps: HashMap<String, Vec<(String, bool, bool)>>,
    /// workspace crate name -> id
    members: HashMap<String, String>,
}

/// Everything the SBOMs are made from, read once per `cargo xtask package`.
pub struct Inputs {
    all: Graph,
    host: Graph,
    /// (name, version) -> id in `host`.
    by_name_version: HashMap<(String, String), String>,
    /// Per packaged workspace crate: what `cargo tree -e normal,build` shows under it.
    tree_all: HashMap<String, BTreeSet<(String, String)>>,
    /// Per packaged workspace crate: what it links (normal edges, not into proc macros).
    tree_linked: HashMap<String, BTreeSet<(String, String)>>,
    checksums: HashMap<(String, String), String>,
    version: String,
    timestamp: String,
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV printed no host triple")
}

/// SPDX expression from Cargo's `license` field (old `MIT/Apache-2.0` form included).
fn spdx(license: &str) -> String {
    license
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" OR ")
}

fn metadata(root: &Path, platform: Option<&str>) -> Result<Graph> {
    let mut c = Command::new(cargo());
    c.current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked"]);
    if let Some(p) = platform {
        c.args(["--filter-platform", p]);
    }
    let out = c.output().context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let members: BTreeSet<&str> = v["workspace_members"]
        .as_array()
        .context("no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut g = Graph {
        crates: HashMap::new(),
        deps: HashMap::new(),
        members: HashMap::new(),
    };
    for p in v["packages"].as_array().context("no packages")? {
        let id = p["id"].as_str().context("package without id")?.to_string();
        let name = p["name"]
            .as_str()
            .context("package without name")?
            .to_string();
        let version = p["version"].as_str().context("no version")?.to_string();
        let Some(license) = p["license"].as_str().filter(|l| !l.trim().is_empty()) else {
            bail!(
                "{name} {version} declares no SPDX license in its Cargo.toml (license_file: {}): the SBOM cannot say what it is licensed under",
                p["license_file"]
            );
        };
        if members.contains(id.as_str()) {
            g.members.insert(name.clone(), id.clone());
        }
        g.crates.insert(
            id,
            Crate {
                name,
                version,
                license: spdx(license),
                source: p["source"].as_str().map(str::to_string),
                description: p["description"].as_str().map(str::to_string),
            },
        );
    }
    for n in v["resolve"]["nodes"].as_array().context("no resolve")? {
        let id = n["id"].as_str().context("node without id")?.to_string();
        let mut deps = Vec::new();
        for d in n["deps"].as_array().into_iter().flatten() {
            let pkg = d["pkg"].as_str().context("dep without pkg")?.to_string();
            let kinds: Vec<&str> = d["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k["kind"].as_str().unwrap_or("normal"))
                .collect();
            deps.push((pkg, kinds.contains(&"normal"), kinds.contains(&"build")));
        }
        g.deps.insert(id, deps);
    }
    Ok(g)
}

/// Every workspace crate the packages are built from, as the packaging build compiles
/// them (`cargo build --release -p` all of them at once: features unified across those
/// crates only, not across xtask and the tests), with what `cargo tree -e EDGES` shows
/// under it. With `normal` edges, what sits under a proc macro is not counted: a proc
/// macro runs inside rustc and is not linked.
fn tree(root: &Path, edges: &str) -> Result<HashMap<String, BTreeSet<(String, String)>>> {
    let mut c = Command::new(cargo());
    c.current_dir(root).args([
        "tree",
        "--locked",
        "--no-dedupe",
        "--prefix",
        "depth",
        "--format",
        "{p}",
        "-e",
        edges,
    ]);
    for (_, crates) in PACKAGE_CRATES {
        for k in *crates {
            c.args(["-p", k]);
        }
    }
    let out = c.output().context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut sections: HashMap<String, BTreeSet<(String, String)>> = HashMap::new();
    let mut current: Option<String> = None;
    // Depth of the proc macro whose subtree is being skipped.
    let mut skip_below: Option<usize> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(depth) = line[..digits].parse::<usize>() else {
            continue;
        };
        let mut words = line[digits..].split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let version = version.trim_start_matches('v');
        if let Some(d) = skip_below {
            if depth > d {
                continue;
            }
            skip_below = None;
        }
        if depth == 0 {
            current = Some(name.to_string());
        }
        let Some(cur) = &current else {
            bail!("cargo tree: {line:?} before any root");
        };
        if edges == "normal" && line.ends_with("(proc-macro)") {
            skip_below = Some(depth);
            continue;
        }
        sections
            .entry(cur.clone())
            .or_default()
            .insert((name.to_string(), version.to_string()));
    }
    Ok(sections)
}

/// `(name, version) -> checksum` from Cargo.lock.
fn lock_checksums(root: &Path) -> Result<HashMap<(String, String), String>> {
    let text = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    Ok(crate::audit::parse_lock(&text)?
        .into_iter()
        .filter_map(|p| p.checksum.map(|c| ((p.name, p.version), c)))
        .collect())
}

impl Inputs {
    pub fn read(root: &Path, version: &str, epoch: i64) -> Result<Inputs> {
        let triple = host_triple()?;
        let host = metadata(root, Some(&triple))?;
        let mut by_name_version = HashMap::new();
        for (id, c) in &host.crates {
            let key = (c.name.clone(), c.version.clone());
            if by_name_version.insert(key, id.clone()).is_some() {
                bail!("two crates named {} {} in Cargo.lock", c.name, c.version);
            }
        }
        Ok(Inputs {
            all: metadata(root, None)?,
            host,
            by_name_version,
            tree_all: tree(root, "normal,build")?,
            tree_linked: tree(root, "normal")?,
            checksums: lock_checksums(root)?,
            version: version.to_string(),
            timestamp: release::rfc3339(epoch)?,
        })
    }

    /// (linked into the binaries, only used to build them) for these workspace crates,
    /// as ids of `self.host`.
    fn closure(&self, roots: &[&str]) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let ids = |set: BTreeSet<(String, String)>| -> Result<BTreeSet<String>> {
            set.into_iter()
                .map(|nv| {
                    self.by_name_version
                        .get(&nv)
                        .cloned()
                        .with_context(|| format!("cargo tree shows {nv:?}, cargo metadata not"))
                })
                .collect()
        };
        let mut all = BTreeSet::new();
        let mut runtime = BTreeSet::new();
        for r in roots {
            all.extend(
                self.tree_all
                    .get(*r)
                    .with_context(|| format!("{r} is not a packaged crate"))?
                    .iter()
                    .cloned(),
            );
            runtime.extend(
                self.tree_linked
                    .get(*r)
                    .with_context(|| format!("{r} is not a packaged crate"))?
                    .iter()
                    .cloned(),
            );
        }
        let runtime = ids(runtime)?;
        let build_time = ids(all)?
            .into_iter()
            .filter(|id| !runtime.contains(id))
            .collect();
        Ok((runtime, build_time))
    }

    fn component(&self, c: &Crate, scope: &str, extra: Vec<Value>) -> Result<Value> {
        let mut v = json!({
            "type": "library",
            "bom-ref": bom_ref(c),
            "name": c.name,
            "version": c.version,
            "scope": scope,
            "licenses": [{"expression": c.license}],
        });
        if c.source.as_deref() == Some(CRATES_IO) {
            v["purl"] = json!(format!("pkg:cargo/{}@{}", c.name, c.version));
            let sum = self
                .checksums
                .get(&(c.name.clone(), c.version.clone()))
                .with_context(|| {
                    format!("{} {} has no checksum in Cargo.lock", c.name, c.version)
                })?;
            v["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
        } else if let Some(src) = &c.source {
            bail!(
                "{} {} comes from {src}: only crates.io and workspace crates can be described (and shipped)",
                c.name,
                c.version
            );
        } else {
            v["type"] = json!("application");
            v["properties"] = json!([{"name": "smith:source", "value": "workspace"}]);
        }
        if let Some(d) = &c.description {
            v["description"] = json!(d);
        }
        if !extra.is_empty() {
            let props = v["properties"].as_array().cloned().unwrap_or_default();
            v["properties"] = Value::Array(props.into_iter().chain(extra).collect());
        }
        Ok(v)
    }

    /// The SBOM of one package file (`package`: smith-host, smith-ca, smith; a
    /// `-dbgsym` package describes the same binaries).
    pub fn package_sbom(&self, package: &str, file: &Path, purl: &str) -> Result<Value> {
        let base = package.trim_end_matches("-dbgsym");
        let roots = PACKAGE_CRATES
            .iter()
            .find(|(p, _)| *p == base)
            .map(|(_, r)| *r)
            .with_context(|| format!("no crate list for package {package}"))?;
        let (runtime, build_time) = self.closure(roots)?;
        let g = &self.host;
        let mut components = Vec::new();
        let mut dependencies = Vec::new();
        let included: BTreeSet<&String> = runtime.iter().chain(&build_time).collect();
        for (ids, scope) in [(&runtime, "required"), (&build_time, "excluded")] {
            for id in ids {
                let c = g.crates.get(id).with_context(|| format!("unknown {id}"))?;
                components.push(self.component(c, scope, Vec::new())?);
                let mut on: Vec<String> = g
                    .deps
                    .get(id)
                    .into_iter()
                    .flatten()
                    .filter(|(d, _, _)| included.contains(d))
                    .filter_map(|(d, _, _)| g.crates.get(d).map(bom_ref))
                    .collect();
                on.sort();
                on.dedup();
                dependencies.push(json!({"ref": bom_ref(c), "dependsOn": on}));
            }
        }
        let mut root_refs: Vec<String> = roots
            .iter()
            .filter_map(|r| g.members.get(*r))
            .filter_map(|id| g.crates.get(id).map(bom_ref))
            .collect();
        root_refs.sort();
        dependencies.push(json!({"ref": purl, "dependsOn": root_refs}));
        let file_name = file
            .file_name()
            .and_then(|n| n.to_str())
            .context("package file name")?;
        let top = json!({
            "type": "application",
            "bom-ref": purl,
            "name": package,
            "version": self.version,
            "purl": purl,
            "licenses": [{"expression": "Apache-2.0"}],
            "hashes": [{"alg": "SHA-256", "content": release::sha256_file(file)?}],
            "properties": [{"name": "smith:file", "value": file_name}],
        });
        self.document(top, components, dependencies)
    }

    /// The SBOM of the whole lock file.
    pub fn workspace_sbom(&self) -> Result<Value> {
        let mut linked_by: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (package, roots) in PACKAGE_CRATES {
            for id in self.closure(roots)?.0 {
                linked_by.entry(id).or_default().push(package);
            }
        }
        let g = &self.all;
        let mut components = Vec::new();
        let mut dependencies = Vec::new();
        for (id, c) in g.crates.iter() {
            let packages = linked_by.get(id).map(|p| p.join(",")).unwrap_or_default();
            let scope = if packages.is_empty() {
                "excluded"
            } else {
                "required"
            };
            components.push(self.component(
                c,
                scope,
                vec![json!({"name": "smith:packages", "value": packages})],
            )?);
            let mut on: Vec<String> = g
                .deps
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|(d, _, _)| g.crates.get(d).map(bom_ref))
                .collect();
            on.sort();
            on.dedup();
            dependencies.push(json!({"ref": bom_ref(c), "dependsOn": on}));
        }
        let top_ref = format!("smith@{}", self.version);
        let mut members: Vec<String> = g
            .members
            .values()
            .filter_map(|id| g.crates.get(id).map(bom_ref))
            .collect();
        members.sort();
        dependencies.push(json!({"ref": top_ref, "dependsOn": members}));
        let top = json!({
            "type": "application",
            "bom-ref": top_ref,
            "name": "smith",
            "version": self.version,
            "licenses": [{"expression": "Apache-2.0"}],
            "description": "Every crate of Smith's Cargo.lock, for every platform, with the packages whose binaries link it",
        });
        self.document(top, components, dependencies)
    }

    fn document(
        &self,
        top: Value,
        mut components: Vec<Value>,
        mut dependencies: Vec<Value>,
    ) -> Result<Value> {
        let key = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        components.sort_by_key(|c| key(c, "bom-ref"));
        dependencies.sort_by_key(|d| key(d, "ref"));
        let mut doc = json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "version": 1,
            "metadata": {
                "timestamp": self.timestamp,
                "tools": {"components": [{
                    "type": "application",
                    "name": "cargo xtask package",
                    "version": self.version,
                    "description": "xtask/src/sbom.rs: cargo metadata --locked and Cargo.lock checksums",
                }]},
                "component": top,
            },
            "components": components,
            "dependencies": dependencies,
        });
        // The serial number is a hash of everything else: same content, same number.
        let digest = Sha256::digest(serde_json::to_vec(&doc)?);
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x80; // UUIDv8: custom
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
        let h = hex::encode(b);
        doc["serialNumber"] = json!(format!(
            "urn:uuid:{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ));
        Ok(doc)
    }
}

fn bom_ref(c: &Crate) -> String {
    if c.source.as_deref() == Some(CRATES_IO) {
        format!("pkg:cargo/{}@{}", c.name, c.version)
    } else {
        format!("{}@{}", c.name, c.version)
    }
}

/// Writes `value` as pretty JSON with a final newline.
pub fn write(path: &Path, value: &Value) -> Result<PathBuf> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_license_fields_become_spdx_expressions() {
        assert_eq!(spdx("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(spdx("Apache-2.0 / MIT"), "Apache-2.0 OR MIT");
        assert_eq!(spdx("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(
            spdx("(MIT OR Apache-2.0) AND Unicode-3.0"),
            "(MIT OR Apache-2.0) AND Unicode-3.0"
        );
    }
}
