//! `conexec`: run this MPI rank in its job's container on this node (see conexec/).

use anyhow::Result;

use super::Ctx;
use crate::cli::ConexecArgs;

pub fn run(ctx: &Ctx, args: &ConexecArgs) -> Result<i32> {
    crate::conexec::run(ctx, args)
}
