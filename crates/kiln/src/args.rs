//! The command line, with `serve --config FILE` applied: the file's settings (checked by
//! [`kiln_server::flags::file`]) become arguments for the flags still at their defaults.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use kiln_server::flags::file::{SUBCOMMAND, describe, effective, lenient, settings};

/// Parses the command line ARGV for the CLI T, with `serve --config FILE` applied; clap's own
/// errors (and --help) exit as `T::parse()` would. `serve --print-config` prints the settings
/// `serve` would start with and exits.
pub fn parse<T: clap::Parser>(argv: Vec<OsString>) -> anyhow::Result<T> {
    let first = lenient(T::command())
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| {
            // --help and errors as the real CLI words them (its usage names required flags).
            T::try_parse_from(&argv).err().unwrap_or(e).exit()
        });
    let Some((SUBCOMMAND, serve)) = first.subcommand() else {
        return Ok(T::try_parse_from(argv).unwrap_or_else(|e| e.exit()));
    };
    let mut from_file = BTreeSet::new();
    let mut argv = argv;
    if let Some(path) = serve.get_one::<PathBuf>("config") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let settings = settings(&path.display().to_string(), &text, &T::command())?;
        for s in effective(settings, serve) {
            from_file.insert(s.id);
            argv.extend(s.arg.map(OsString::from));
        }
    }
    let mut matches = T::command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| e.exit());
    if let Some((_, serve)) = matches.subcommand()
        && serve.get_flag("print_config")
    {
        print!("{}", describe(&T::command(), serve, &from_file));
        std::process::exit(0);
    }
    Ok(T::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit()))
}
