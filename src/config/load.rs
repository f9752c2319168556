//! Reading a config file: its bytes as UTF-8 text, the strict parse (and,
//! when it fails, every section's problems, `sections.rs`), then the
//! validation into [`Config`] (`compile.rs`).

use std::path::Path;

use super::raw::RawConfig;
use super::{compile, error, sections, Config, ConfigError, ConfigErrors, MiddlewareSpec};

/// A file that did not pass: its problems, and the middleware definitions
/// that did parse. Their values are checked where they are compiled
/// (`state::load_config`), which adds what it finds, so that one `rampart
/// check` prints a file's every problem rather than these first.
#[derive(Debug)]
pub struct Rejected {
    pub errors: ConfigErrors,
    pub middleware: Vec<MiddlewareSpec>,
}

impl From<ConfigErrors> for Rejected {
    fn from(errors: ConfigErrors) -> Self {
        Rejected { errors, middleware: Vec::new() }
    }
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_checked(path).map_err(|r| r.errors)
    }

    /// [`Config::load`], keeping the middleware definitions of a file
    /// that did not pass.
    pub fn load_checked(path: &Path) -> Result<Config, Rejected> {
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigErrors(vec![ConfigError::whole_file(path, format!("cannot read config file: {e}"))]))?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            // Where: the text up to the first bad byte is valid.
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
                let message = "not UTF-8: the config file must be UTF-8 text";
                return Err(ConfigErrors(vec![ConfigError::at(path, &valid, Some(at..at), message)]).into());
            }
        };
        Config::parse_checked(path, &text)
    }

    /// Validate config text; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_checked(path, text).map_err(|r| r.errors)
    }

    /// [`Config::parse`], keeping the middleware definitions of a text
    /// that did not pass.
    fn parse_checked(path: &Path, text: &str) -> Result<Config, Rejected> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // serde stops at the first problem; the other sections may
            // have theirs too. Read a section at a time, the first is
            // among them (placed better, when it is a middleware value's).
            let mut all: Vec<ConfigError> = Vec::new();
            for (span, message) in sections::problems(text) {
                let more = ConfigError::at(path, text, span, error::plain_types(&message));
                if !all.iter().any(|known| known.line == more.line && known.col == more.col) {
                    all.push(more);
                }
            }
            if all.is_empty() {
                all.push(ConfigError::at(path, text, e.span(), error::plain_types(e.message().trim_end())));
            }
            all.sort_by_key(|e| (e.line, e.col));
            ConfigErrors(all)
        })?;
        compile::Compiler::new(path, text).compile(raw)
    }
}
