//! `doctor [--format json]`: the node's readiness for LWK containers (see doctor.rs).

use anyhow::Result;

use crate::cli::{DoctorArgs, ReportFormat};

pub fn run(args: &DoctorArgs) -> Result<i32> {
    let report = crate::doctor::run();
    print!(
        "{}",
        match args.format {
            ReportFormat::Text => crate::doctor::render_text(&report),
            ReportFormat::Json => crate::doctor::render_json(&report),
        }
    );
    Ok(if report.ready { 0 } else { 1 })
}
