//! `checkpoint` and `restore`: answered with a clear refusal. An LWK process's
//! memory lives in the LWK, out of CRIU's reach, so a checkpoint could not be
//! faithful for the containers this runtime exists for.

use anyhow::{bail, Result};

pub fn unsupported(what: &str) -> Result<i32> {
    bail!("{what} is not supported by lwk-runc: CRIU cannot capture processes running on a lightweight kernel; use runc for containers that need {what}")
}
