//! `cargo xtask demo`: the story on one machine (filled in as the parts land).

use anyhow::Result;

pub fn run(_no_install: bool, _keep: bool) -> Result<()> {
    anyhow::bail!("the demo is not written yet")
}
