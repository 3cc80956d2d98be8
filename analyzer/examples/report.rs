//! Writes the reports of a run directory, like `isolab report` does:
//! `cargo run -p isolab-analyzer --example report -- RUN_DIR [OUT_DIR]`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let run_dir = args.next().ok_or("usage: report RUN_DIR [OUT_DIR]")?;
    let out = args.next().unwrap_or_else(|| run_dir.clone());
    let paths = isolab_analyzer::write_report(&run_dir, &out)?;
    println!("{}", paths.report_html.display());
    println!("{}", paths.report_md.display());
    println!("{}", paths.summary_json.display());
    Ok(())
}
