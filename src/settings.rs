//! Start settings from a TOML file (`ash-gen-server start --config FILE`), merged under the
//! command line and the environment: a flag beats its environment variable, which beats the
//! file, which beats the default.
//!
//! The file's keys are the long flag names with `_` or `-` (`net_ticktime = 30`,
//! `metrics-addr = "127.0.0.1:9568"`, `join = ["a@h", "b@h"]`, `enable_fault_injection = true`).
//! Each one not given on the command line nor in its environment variable is added to the
//! arguments as its flag, so clap checks it exactly as if typed; an unknown key is an error
//! naming it.

use clap::parser::ValueSource;
use std::ffi::OsString;
use std::path::Path;

/// Why the settings file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML.
    #[error("{path} is not valid TOML: {source}")]
    Toml {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// A key names no flag of the command.
    #[error("{path}: unknown setting {key:?} (no --{flag} flag)")]
    Unknown {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// The flag looked for.
        flag: String,
    },
    /// A value has a type no flag takes (a table, or a list for a single-valued flag).
    #[error("{path}: setting {key:?} cannot be {value}")]
    Value {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

/// The arguments with the settings of `subcommand`'s `--config FILE` added where neither the
/// command line nor the environment sets them. Arguments that do not parse are returned as
/// they are (clap then reports the problem itself).
pub fn with_config_file(
    command: clap::Command,
    subcommand: &str,
    args: Vec<OsString>,
) -> Result<Vec<OsString>, SettingsError> {
    let Ok(matches) = command.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some(sub) = matches.subcommand_matches(subcommand) else {
        return Ok(args);
    };
    let Some(file) = sub.get_one::<std::path::PathBuf>("config") else {
        return Ok(args);
    };
    let spec = command
        .find_subcommand(subcommand)
        .expect("the subcommand matched")
        .clone();
    let extra = settings(&spec, sub, file)?;
    let mut args = args;
    args.extend(extra);
    Ok(args)
}

fn settings(
    spec: &clap::Command,
    given: &clap::ArgMatches,
    file: &Path,
) -> Result<Vec<OsString>, SettingsError> {
    let path = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| SettingsError::Toml {
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(arg) = spec
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
        else {
            return Err(SettingsError::Unknown { path, key, flag });
        };
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let bad = |value: &toml::Value| SettingsError::Value {
            path: path.clone(),
            key: key.clone(),
            value: value.to_string(),
        };
        let scalar = |value: &toml::Value| -> Result<String, SettingsError> {
            match value {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(bad(other)),
            }
        };
        match &value {
            toml::Value::Boolean(true) => out.push(format!("--{flag}").into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    out.push(format!("--{flag}").into());
                    out.push(scalar(item)?.into());
                }
            }
            other => {
                out.push(format!("--{flag}").into());
                out.push(scalar(other)?.into());
            }
        }
    }
    Ok(out)
}
