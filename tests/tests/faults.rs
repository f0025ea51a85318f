//! Issue 18's fault matrix, the subset CI runs (the whole table: `cargo xtask faults`,
//! see `tests/FAULTS.md`): smith-hostd frozen and the NSS cache damaged while in use,
//! each crossed with an allowed login, refused logins, sudo, `getent` and audit delivery
//! on one fleet host (real CA, sshd, smith-hostd, sudo, glibc, pamtester). Every cell
//! must count 0 lockouts, 0 admissions, no call over 1 s and no record lost or repeated,
//! and must count at least one failure when run again with its protection switched off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use anyhow::Result;
use smith_tests::e2e_available;
use smith_tests::faults::{run_cells, table, verdict, Fault, Matrix, LIBFAKETIME, OPS};

#[test]
fn a_frozen_hostd_and_a_damaged_cache_neither_lock_out_nor_let_in_nor_lose_records() -> Result<()> {
    if !e2e_available() {
        return Ok(());
    }
    if !std::path::Path::new(LIBFAKETIME).exists() {
        let msg = format!("{LIBFAKETIME} is missing (cargo xtask test installs libfaketime)");
        if std::env::var("SMITH_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return Ok(());
    }
    let mut m = Matrix::new()?;
    let cells: Vec<_> = [Fault::HostdFrozen, Fault::CacheCorrupted]
        .into_iter()
        .flat_map(|f| OPS.into_iter().map(move |op| (f, op)))
        .collect();
    let cells = run_cells(&mut m, &cells, true, &mut |line| {
        eprintln!("faults: {line}")
    })?;
    eprintln!("{}", table(&cells));
    verdict(&cells)
}
