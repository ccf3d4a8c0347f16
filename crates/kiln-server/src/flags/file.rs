//! `kiln serve --config FILE`: every `serve` flag (and `--data-dir`) from a TOML file.
//!
//! Keys are the flags' long names in snake_case (`http_port = 8080`, `interface = "eno1"`,
//! `http_header_timeout = "10s"`, `no_router_advert = true`). Precedence: a flag on the
//! command line, then its `KILN_*` environment variable, then the file, then the built-in
//! default. The file's values go through the flags' own parsers, so they accept exactly
//! what the flags accept; a bad value or an unknown key is reported as FILE:LINE:COLUMN.
//!
//! How: a first, lenient parse finds `--config` and where each flag's value came from; the
//! file's values for flags still at their defaults are then appended as `--flag=value`
//! arguments and the command line is parsed again, for real (the CLI's `main` does the two
//! parses). Reading the file itself (TOML, located errors) is [`crate::config`]'s; here is the
//! clap glue.

use std::collections::BTreeSet;
use std::ffi::OsStr;

use crate::config::{ConfigErrors, entries, toml_string};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The subcommand whose flags the file sets.
pub const SUBCOMMAND: &str = "serve";
/// Flags of `serve` that make no sense in the file itself.
const NOT_IN_FILE: &[&str] = &["config", "print_config", "help"];

/// One setting of the file, checked, as the argument that stands for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The flag's id (its long name in snake_case, as the key).
    pub id: String,
    /// `--flag=value`, or `--flag` for a switch set to true; None for a switch set to false.
    pub arg: Option<String>,
}

/// The keys the file may hold: `serve`'s flags and the global ones (`--data-dir`).
fn settable(root: &Command) -> Vec<&clap::Arg> {
    let serve = root
        .get_subcommands()
        .find(|c| c.get_name() == SUBCOMMAND)
        .expect("the CLI has a serve subcommand");
    let globals = root.get_arguments().filter(|a| a.is_global_set());
    serve
        .get_arguments()
        .chain(globals)
        .filter(|a| a.get_long().is_some() && !NOT_IN_FILE.contains(&a.get_id().as_str()))
        .filter(|a| a.get_id() != "version")
        .collect()
}

/// Parses FILE's TEXT into checked settings for `serve` under ROOT (the whole CLI).
pub fn settings(file: &str, text: &str, root: &Command) -> Result<Vec<Setting>, ConfigErrors> {
    let args = settable(root);
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for entry in entries(file, text)? {
        let name = entry.key.as_str();
        let Some(arg) = args.iter().find(|a| a.get_id() == name) else {
            let hint = if args
                .iter()
                .any(|a| a.get_id() == name.replace('-', "_").as_str())
            {
                format!(" (keys are snake_case: {})", name.replace('-', "_"))
            } else {
                String::new()
            };
            errors.push(entry.error(
                file,
                true,
                format!("unknown key{hint}; `kiln serve --help` lists the flags, each settable here under its long name in snake_case"),
            ));
            continue;
        };
        match checked(arg, entry.boolean, &entry.scalar) {
            Ok(arg) => out.push(Setting {
                id: name.to_string(),
                arg,
            }),
            Err(message) => errors.push(entry.error(file, false, message)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A value for ARG as the argument that stands for it, checked by the flag's own parser.
fn checked(
    arg: &clap::Arg,
    boolean: Option<bool>,
    scalar: &Result<String, String>,
) -> Result<Option<String>, String> {
    let long = arg.get_long().expect("settable args have a long name");
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        let b = boolean.ok_or_else(|| "expected true or false".to_string())?;
        return Ok(b.then(|| format!("--{long}")));
    }
    let flag = format!("--{long}={}", scalar.clone()?);
    // The flag's own parser: the file accepts exactly what the flag does.
    Command::new("kiln")
        .no_binary_name(true)
        .arg(arg.clone().required(false))
        .try_get_matches_from([&flag])
        .map_err(|e| clap_message(&e))?;
    Ok(Some(flag))
}

/// clap's message without its "error: " prefix and usage hints: the part that says why.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The file's arguments that take effect: those whose flag was neither on the command line
/// nor in the environment (there the first parse's MATCHES say where each value came from).
pub fn effective(settings: Vec<Setting>, matches: &ArgMatches) -> Vec<Setting> {
    settings
        .into_iter()
        .filter(|s| {
            !matches!(
                matches.value_source(&s.id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .collect()
}

/// ROOT with every `serve` flag optional: the first parse only looks for `--config`, so a
/// flag the file will supply (`address`) must not be missing yet.
pub fn lenient(root: Command) -> Command {
    root.mut_subcommand(SUBCOMMAND, |mut serve| {
        let ids: Vec<_> = serve.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            serve = serve.mut_arg(id, |a| a.required(false));
        }
        serve
    })
}

/// The settings `serve` would start with, as a config file (each with where it came from).
pub fn describe(root: &Command, serve: &ArgMatches, from_file: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for arg in settable(root) {
        let id = arg.get_id().as_str();
        let source = if from_file.contains(id) {
            "file"
        } else {
            match serve.value_source(id) {
                Some(ValueSource::CommandLine) => "command line",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::DefaultValue) => "default",
                _ => "not set",
            }
        };
        let raw: Vec<&OsStr> = serve.get_raw(id).map(Iterator::collect).unwrap_or_default();
        let line = if matches!(arg.get_action(), ArgAction::SetTrue) {
            format!("{id} = {}", serve.get_flag(id))
        } else if let Some(v) = raw.last() {
            let v = v.to_string_lossy();
            // A store URL may hold a password: never printed.
            let v = if id == "store" {
                kiln_store::redacted_url(&v)
            } else {
                v.into_owned()
            };
            format!("{id} = {}", toml_string(&v))
        } else {
            format!("# {id} =")
        };
        out.push_str(&format!("{line:<60} # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
    use std::ffi::OsString;
    use std::path::PathBuf;

    /// The real `serve` flags under a CLI shaped like kiln's.
    #[derive(Parser)]
    struct Cli {
        #[arg(long, global = true, default_value = "/var/lib/kiln")]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        Serve(super::super::ServeArgs),
    }

    fn settings_of(text: &str) -> Result<Vec<Setting>, ConfigErrors> {
        settings("kiln.toml", text, &Cli::command())
    }

    /// The final matches of `serve` for ARGV with the file TEXT applied (no environment:
    /// the env precedence is covered by tests/config.rs, which runs the binary).
    fn serve_with(argv: &[&str], text: &str) -> ArgMatches {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let first = lenient(Cli::command()).try_get_matches_from(&argv).unwrap();
        let (_, serve) = first.subcommand().unwrap();
        let mut argv = argv.clone();
        for s in effective(settings_of(text).unwrap(), serve) {
            argv.extend(s.arg.map(OsString::from));
        }
        let m = Cli::command().try_get_matches_from(&argv).unwrap();
        Cli::from_arg_matches(&m).unwrap();
        m
    }

    fn raw(m: &ArgMatches, id: &str) -> String {
        let (_, serve) = m.subcommand().unwrap();
        serve
            .get_raw(id)
            .unwrap()
            .next_back()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn file_values_fill_what_the_command_line_left_at_default() {
        let text = "address = \"10.0.0.1\"\nhttp_port = 9090\ninterface = \"eno1\"\n\
                    http_header_timeout = \"20s\"\nno_router_advert = true\n\
                    data_dir = \"/srv/kiln\"\nlog_format = \"json\"\n";
        let m = serve_with(&["kiln", "serve", "--http-port", "8081"], text);
        assert_eq!(raw(&m, "http_port"), "8081", "the flag beats the file");
        assert_eq!(
            raw(&m, "address"),
            "10.0.0.1",
            "a required flag may come from the file"
        );
        assert_eq!(raw(&m, "interface"), "eno1");
        assert_eq!(raw(&m, "http_header_timeout"), "20s");
        assert_eq!(raw(&m, "log_format"), "json");
        assert_eq!(
            raw(&m, "data_dir"),
            "/srv/kiln",
            "the global --data-dir too"
        );
        assert!(m.subcommand().unwrap().1.get_flag("no_router_advert"));
        assert_eq!(raw(&m, "tftp_port"), "69", "unset in both: the default");
    }

    #[test]
    fn a_flag_given_on_the_command_line_keeps_its_value_over_the_file() {
        let text = "address = \"10.0.0.1\"\ndata_dir = \"/srv/kiln\"\n";
        let m = serve_with(
            &[
                "kiln",
                "--data-dir",
                "/tmp/d",
                "serve",
                "--address",
                "10.9.9.9",
            ],
            text,
        );
        assert_eq!(raw(&m, "address"), "10.9.9.9");
        assert_eq!(raw(&m, "data_dir"), "/tmp/d");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_column() {
        let err = settings_of("http_port = 8080\n  colour = \"blue\"\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        let e = &err.0[0];
        assert_eq!((e.line, e.column, e.key.as_str()), (2, 3, "colour"));
        assert!(
            err.to_string()
                .starts_with("kiln.toml:2:3: colour: unknown key"),
            "{err}"
        );
    }

    #[test]
    fn a_kebab_case_key_is_unknown_with_a_hint() {
        let err = settings_of("http-port = 8080\n").unwrap_err();
        assert!(err.to_string().contains("snake_case: http_port"), "{err}");
    }

    #[test]
    fn bad_values_are_named_with_their_position_and_the_parsers_reason() {
        let text = "http_port = 70000\ndhcp_mode = \"sometimes\"\n\
                    http_idle_timeout = \"soon\"\nno_router_advert = \"yes\"\ninterface = [\"a\"]\n";
        let err = settings_of(text).unwrap_err();
        let found: Vec<(usize, usize, &str)> = err
            .0
            .iter()
            .map(|e| (e.line, e.column, e.key.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (2, 13, "dhcp_mode"),
                (3, 21, "http_idle_timeout"),
                (1, 13, "http_port"),
                (5, 13, "interface"),
                (4, 20, "no_router_advert"),
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("kiln.toml:1:13: http_port: invalid value '70000'"),
            "{text}"
        );
        assert!(text.contains("sometimes"), "{text}");
        assert!(text.contains("expected true or false"), "{text}");
        assert!(text.contains("not an array"), "{text}");
    }

    #[test]
    fn a_toml_syntax_error_has_a_position() {
        let err = settings_of("http_port = 8080\naddress = \n").unwrap_err();
        assert_eq!(err.0[0].line, 2, "{err}");
        assert!(err.to_string().starts_with("kiln.toml:2:"), "{err}");
    }

    #[test]
    fn the_file_cannot_name_config_itself() {
        let err = settings_of("config = \"/etc/other.toml\"\n").unwrap_err();
        assert_eq!(err.0[0].key, "config");
    }

    #[test]
    fn a_switch_set_false_adds_no_argument() {
        let s = settings_of("no_router_advert = false\n").unwrap();
        assert_eq!(
            s,
            [Setting {
                id: "no_router_advert".into(),
                arg: None
            }]
        );
    }

    #[test]
    fn every_serve_flag_is_settable_and_has_a_kiln_env_var() {
        let root = Cli::command();
        let args = settable(&root);
        assert!(args.len() >= 20, "{} flags", args.len());
        for a in args.iter().filter(|a| a.get_id() != "data_dir") {
            let want = format!("KILN_{}", a.get_id().as_str().to_uppercase());
            assert_eq!(
                a.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(want),
                "--{}",
                a.get_long().unwrap()
            );
        }
    }

    #[test]
    fn described_settings_read_back_as_the_same_settings() {
        let text = "address = \"10.0.0.1\"\nkernel_args = \"console=ttyS0 a=\\\"b\\\"\"\n";
        let m = serve_with(&["kiln", "serve"], text);
        let from_file = ["address", "kernel_args"].map(String::from).into();
        let out = describe(&Cli::command(), m.subcommand().unwrap().1, &from_file);
        assert!(out.contains("# file"), "{out}");
        let again = settings_of(&out).unwrap();
        let args: Vec<_> = again.iter().filter_map(|s| s.arg.clone()).collect();
        assert!(
            args.contains(&"--kernel-args=console=ttyS0 a=\"b\"".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"--http-port=8080".to_string()), "{args:?}");
    }

    #[test]
    fn a_store_password_is_never_printed() {
        let text = "address = \"10.0.0.1\"\nstore = \"postgres://kiln:s3cret-pw@db:5432/kiln\"\n";
        let m = serve_with(&["kiln", "serve"], text);
        let from_file = ["address", "store"].map(String::from).into();
        let out = describe(&Cli::command(), m.subcommand().unwrap().1, &from_file);
        assert!(
            out.contains("store = \"postgres://kiln:***@db:5432/kiln\""),
            "{out}"
        );
        assert!(!out.contains("s3cret-pw"), "{out}");
    }

    #[test]
    fn the_packaged_sample_names_only_real_flags() {
        let sample = include_str!("../../../../packaging/kiln.toml");
        assert!(settings("kiln.toml", sample, &Cli::command()).is_ok());
        // Every commented-out example, uncommented, is a valid setting too (api_listen
        // only once serve has the flag).
        let root = Cli::command();
        let has = |id: &str| settable(&root).iter().any(|a| a.get_id() == id);
        let all: String = sample
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' '))
            .filter(|l| has("api_listen") || !l.starts_with("api_listen"))
            .map(|l| format!("{l}\n"))
            .collect();
        let found = settings_of(&all).unwrap();
        assert!(found.len() >= 18, "{found:?}");
    }
}
