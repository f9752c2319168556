//! Config errors: every problem carries the file and a byte span, turned into
//! `PATH:LINE:COL` once, here, so `rampart check`, reload logs and the status
//! page all print the same thing.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl ConfigError {
    /// An error at a byte span of `source` (the file's text).
    pub fn at(path: &Path, source: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, col) = span.map(|s| line_col(source, s.start)).unwrap_or((1, 1));
        ConfigError { path: path.to_path_buf(), line, col, message: one_line(message.into()) }
    }

    /// An error about the file as a whole (unreadable, say).
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Self {
        ConfigError { path: path.to_path_buf(), line: 1, col: 1, message: message.into() }
    }
}

/// One line, never empty: the TOML parser's messages can span lines
/// (`invalid table header` / `duplicate key ...`) or say nothing at all
/// (a key without a value at the end of the file), and each error is one
/// `PATH:LINE:COL: error: ...` line.
fn one_line(message: String) -> String {
    let joined = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ");
    if joined.is_empty() {
        "incomplete TOML here (a key without its value, or a cut-off file?)".to_string()
    } else {
        joined
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: {}", self.path.display(), self.line, self.col, self.message)
    }
}

/// All problems of one load; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// serde's message with the Rust types it names in words: `expected f64`
/// reads `expected a number`.
pub fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, words) in [
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u16", "expected a whole number, 0 or more"),
        ("expected u8", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
    ] {
        if out.ends_with(rust) {
            out.truncate(out.len() - rust.len());
            out.push_str(words);
        }
    }
    out
}

/// Line starts of one text, computed once, so that many offsets (one per
/// route in a file with thousands) turn into line:col without rescanning
/// the text from the start each time.
#[derive(Debug, Clone)]
pub struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset at which each line starts; `starts[0] == 0`.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0).chain(source.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { source, starts }
    }

    /// Where `key = ...` is written in the `[table]` table, for settings
    /// whose values carry no position of their own (durations, sizes).
    /// `None` if it is not written there as such (a dotted or inline
    /// spelling): the error then points at the file.
    pub fn key_span(&self, table: &str, key: &str) -> Option<std::ops::Range<usize>> {
        let header = format!("[{table}]");
        let mut inside = false;
        for (i, &start) in self.starts.iter().enumerate() {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.source.len());
            let line = self.source.get(start..end)?;
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                inside = trimmed.split('#').next().is_some_and(|h| h.trim() == header);
                continue;
            }
            let Some(rest) = trimmed.strip_prefix(key) else { continue };
            if inside && rest.trim_start().starts_with('=') {
                let at = start + (line.len() - line.trim_start().len());
                return Some(at..at + key.len());
            }
        }
        None
    }

    /// The keys written as `key = ...` (or `key.sub = ...`) in the table
    /// whose header is on the line holding `header`, up to the next
    /// header: each key and where it is. For errors found after parsing,
    /// about a value whose own position serde did not keep (a middleware
    /// definition's: a tagged enum is buffered). A line of a multi-line
    /// array or string that looks like a key may be taken for one; no
    /// error names such a key.
    pub fn keys_of_table(&self, header: usize) -> Vec<(String, std::ops::Range<usize>)> {
        let first = self.starts.partition_point(|&s| s <= header);
        let mut keys = Vec::new();
        for (i, &start) in self.starts.iter().enumerate().skip(first) {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.source.len());
            let Some(line) = self.source.get(start..end) else { break };
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                break;
            }
            let Some((key, _)) = trimmed.split_once('=') else { continue };
            let key = key.split('.').next().unwrap_or("").trim();
            // `"name"` is a key; `"k=v",` (an array's line) is not.
            let key = match key.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"').unwrap_or(""),
                None => key,
            };
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                let at = start + (line.len() - trimmed.len());
                keys.push((key.to_string(), at..at + key.len()));
            }
        }
        keys
    }

    /// Same answer as [`line_col`], in O(log lines + line length).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let col = self.source.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        (line, col)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_line_and_column() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn a_tables_keys_are_found_up_to_the_next_header() {
        let src = "[a]\nx = 1\n\n# c = 2\n  y.z = \"q\"\nlist = [\n  \"k=v\",\n]\n[a.sub]\nw = 3\n";
        let index = LineIndex::new(src);
        let keys: Vec<(String, (usize, usize))> =
            index.keys_of_table(0).into_iter().map(|(k, at)| (k, index.line_col(at.start))).collect();
        assert_eq!(keys, [("x".to_string(), (2, 1)), ("y".to_string(), (5, 3)), ("list".to_string(), (6, 1))],);
    }

    #[test]
    fn rust_type_names_read_as_words() {
        assert_eq!(
            plain_types("invalid type: string \"x\", expected f64"),
            "invalid type: string \"x\", expected a number"
        );
        assert_eq!(
            plain_types("invalid value: integer `-1`, expected u32"),
            "invalid value: integer `-1`, expected a whole number, 0 or more"
        );
        assert_eq!(plain_types("expected a string"), "expected a string");
    }

    #[test]
    fn the_line_index_agrees_with_line_col() {
        for src in ["", "a = 1\nbb = 2\n", "\n\nx", "é = \"ü\"\nz", "no newline"] {
            let index = LineIndex::new(src);
            for offset in 0..=src.len() + 2 {
                if src.is_char_boundary(offset.min(src.len())) {
                    assert_eq!(index.line_col(offset), line_col(src, offset), "{src:?} at {offset}");
                }
            }
        }
    }
}
