//! Builds the sample plugins and stages them, with a configuration serving them all, in
//! `target/samples/` (or the folder given as the only argument). Prints the configuration's path.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(sample_plugins::staging_dir, PathBuf::from);
    match sample_plugins::stage(&dir) {
        Ok(config) => {
            println!("{}", config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot stage the samples in {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
