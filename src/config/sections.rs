//! Every problem serde finds, not only the first. `toml::from_str` stops at
//! the first bad value; when it does, this parses the file again once per
//! section (`[listen]`, `[server]`, each upstream, middleware and route),
//! with every other section blanked out, and collects each one's
//! problems (the first, then, with the key it is about blanked too, the
//! next), so `rampart check` lists them all at once as the contract asks.
//! Blanking keeps every byte offset, so positions are exact, and the same
//! strict parse reads each section: it cannot judge one differently.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table};

use super::raw::RawConfig;

/// A problem's position and message.
pub type Problem = (Option<Range<usize>>, String);

/// Each section's problems. Empty if the text is not valid TOML at all
/// (that one error is already known).
pub fn problems(text: &str) -> Vec<Problem> {
    let Ok(doc) = ImDocument::parse(text) else { return Vec::new() };
    // Where each table header starts, and the section it belongs to: a
    // `[upstreams.api.health]` goes with its `[upstreams.api]`.
    let mut headers: Vec<(usize, usize)> = Vec::new();
    let mut sections = 0;
    for (key, item) in doc.as_table().iter() {
        match item {
            Item::Table(t) if key == "upstreams" || key == "middleware" => {
                header(t, &mut sections, &mut headers);
                for (_, entry) in t.iter() {
                    sections += 1;
                    headers_of(entry, sections, &mut headers);
                }
            }
            Item::ArrayOfTables(tables) => {
                for t in tables.iter() {
                    sections += 1;
                    headers_of(&Item::Table(t.clone()), sections, &mut headers);
                }
            }
            Item::Table(_) => {
                sections += 1;
                headers_of(item, sections, &mut headers);
            }
            // Keys before the first header stay in every copy.
            Item::Value(_) | Item::None => {}
        }
    }
    headers.sort_unstable();
    let mut found = Vec::new();
    for section in 1..=sections {
        let mut only = text.as_bytes().to_vec();
        for (i, &(start, owner)) in headers.iter().enumerate() {
            if owner != section {
                let end = headers.get(i + 1).map_or(text.len(), |&(next, _)| next);
                blank(&mut only[start..end]);
            }
        }
        // Spaces for bytes, newlines kept: still UTF-8, same offsets.
        let Ok(mut only) = String::from_utf8(only) else { continue };
        for round in 0..MAX_PER_SECTION {
            let Err(e) = toml::from_str::<RawConfig>(&only) else { break };
            let message = e.message().trim_end().to_string();
            // A key blanked here may be one the section needs: that
            // problem is this reading's, not the file's.
            if round > 0 && message.starts_with("missing field") {
                break;
            }
            let problem = at_the_key(&only, &doc, (e.span(), message));
            let Some(key_value) = problem.0.as_ref().and_then(|at| key_value_at(doc.as_table(), at.start)) else {
                found.push(problem);
                break;
            };
            found.push(problem);
            let mut next = only.into_bytes();
            blank(&mut next[key_value]);
            let Ok(next) = String::from_utf8(next) else { break };
            only = next;
        }
    }
    found
}

/// The most problems read from one section: each costs a parse.
const MAX_PER_SECTION: usize = 16;

/// The `key = value` (from the key to the value's end) holding `offset`,
/// at any depth.
fn key_value_at(table: &Table, offset: usize) -> Option<Range<usize>> {
    for (key, item) in table.iter() {
        match item {
            Item::Value(v) => {
                let (Some(k), Some(v)) = (table.key(key).and_then(|k| k.span()), v.span()) else { continue };
                if (k.start..v.end).contains(&offset) {
                    return Some(k.start..v.end);
                }
            }
            Item::Table(t) => {
                if let Some(found) = key_value_at(t, offset) {
                    return Some(found);
                }
            }
            Item::ArrayOfTables(tables) => {
                if let Some(found) = tables.iter().find_map(|t| key_value_at(t, offset)) {
                    return Some(found);
                }
            }
            Item::None => {}
        }
    }
    None
}

/// A problem serde placed on a whole middleware definition (its fields
/// carry no positions: serde buffers a tagged enum), moved to the key whose
/// value it is about, when one is: the key without which the definition,
/// alone in `only`, no longer has this problem.
fn at_the_key(only: &str, doc: &ImDocument<&str>, problem: Problem) -> Problem {
    let (Some(span), message) = &problem else { return problem };
    let Some(Item::Table(all)) = doc.get("middleware") else { return problem };
    let Some((name, table)) = all.iter().find_map(|(name, item)| match item {
        Item::Table(t) if t.span().is_some_and(|s| s.contains(&span.start)) => Some((name, t)),
        _ => None,
    }) else {
        return problem;
    };
    for (key, item) in table.iter().filter(|(key, _)| *key != "type") {
        let (Some(from), Some(value)) = (table.key(key).and_then(|k| k.span()), item.span()) else { continue };
        let mut without = only.as_bytes().to_vec();
        blank(&mut without[from.start..value.end]);
        let Ok(without) = String::from_utf8(without) else { continue };
        let same = toml::from_str::<RawConfig>(&without).err().is_some_and(|e| e.message().trim_end() == message);
        if !same {
            // An unknown key is the key's problem; any other, its value's.
            let at = if message.starts_with("unknown field") { from } else { value };
            return (Some(at), format!("middleware {name:?}: {key}: {message}"));
        }
    }
    problem
}

/// The header of an explicit `[upstreams]` or `[middleware]` table, as a
/// section of its own (it holds no keys of ours).
fn header(t: &Table, sections: &mut usize, headers: &mut Vec<(usize, usize)>) {
    if let Some(span) = t.span().filter(|_| !t.is_implicit()) {
        *sections += 1;
        headers.push((span.start, *sections));
    }
}

/// Every header within `item` (itself, its subtables), all for `section`.
fn headers_of(item: &Item, section: usize, headers: &mut Vec<(usize, usize)>) {
    match item {
        Item::Table(t) => {
            if let Some(span) = t.span().filter(|_| !t.is_implicit()) {
                headers.push((span.start, section));
            }
            for (_, child) in t.iter() {
                headers_of(child, section, headers);
            }
        }
        Item::ArrayOfTables(tables) => {
            for t in tables.iter() {
                headers_of(&Item::Table(t.clone()), section, headers);
            }
        }
        Item::Value(_) | Item::None => {}
    }
}

fn blank(bytes: &mut [u8]) {
    for b in bytes {
        if *b != b'\n' && *b != b'\r' {
            *b = b' ';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid file using every section, nested tables included, shows no
    /// problem when read a section at a time either.
    #[test]
    fn a_valid_file_read_a_section_at_a_time_has_no_problem() {
        let text = include_str!("../../deploy/rampart.toml");
        for section in ["listen", "server", "tls", "acme", "upstreams", "middleware", "routes"] {
            assert!(text.contains(&format!("[{section}")), "deploy/rampart.toml has no [{section}]");
        }
        assert!(toml::from_str::<RawConfig>(text).is_ok());
        assert_eq!(problems(text), Vec::<Problem>::new());
    }
}
