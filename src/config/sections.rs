//! Every problem serde finds, not only the first. `toml::from_str` stops at
//! the first bad value; when it does, this reads the file again, section by
//! section (each upstream, middleware and route on its own), and collects
//! each section's first problem, so `rampart check` lists them all at once
//! as the contract asks. Positions stay exact: `toml_edit`'s immutable
//! document keeps every value's span in the original text.

use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, Item, Value};

use super::raw::{RawAcme, RawListen, RawMiddleware, RawRoute, RawServerSettings, RawTls, RawUpstream};

/// A problem's position and message.
pub type Problem = (Option<Range<usize>>, String);

/// Each section's first problem, in the order of the file. Empty if the
/// text is not valid TOML at all (that one error is already known).
pub fn problems(text: &str) -> Vec<Problem> {
    let Ok(doc) = ImDocument::parse(text.to_owned()) else { return Vec::new() };
    let mut found = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let key_span = doc.as_table().key(key).and_then(|k| k.span());
        match key {
            "listen" => check::<RawListen>(item, &mut found),
            "server" => check::<RawServerSettings>(item, &mut found),
            "tls" => check::<RawTls>(item, &mut found),
            "acme" => check::<RawAcme>(item, &mut found),
            "upstreams" => each_entry::<RawUpstream>(item, &mut found),
            "middleware" => each_entry::<RawMiddleware>(item, &mut found),
            "routes" => match item {
                Item::ArrayOfTables(routes) => {
                    for route in routes.iter() {
                        check::<RawRoute>(&Item::Table(route.clone()), &mut found);
                    }
                }
                other => check::<Vec<RawRoute>>(other, &mut found),
            },
            unknown => found.push((
                key_span,
                // The words serde's own check uses, should it come first.
                format!(
                    "unknown field `{unknown}`, expected one of `listen`, `server`, `tls`, `acme`, `upstreams`, \
                     `middleware`, `routes`"
                ),
            )),
        }
    }
    found.sort_by_key(|(span, _)| span.as_ref().map_or(0, |s| s.start));
    found
}

/// Every entry of a `[name.X]` table, each on its own.
fn each_entry<T: DeserializeOwned>(item: &Item, found: &mut Vec<Problem>) {
    match item.as_table_like() {
        Some(entries) => {
            for (_, entry) in entries.iter() {
                check::<T>(entry, found);
            }
        }
        None => check::<std::collections::BTreeMap<String, T>>(item, found),
    }
}

fn check<T: DeserializeOwned>(item: &Item, found: &mut Vec<Problem>) {
    let value = match item.clone() {
        Item::Value(v) => v,
        Item::Table(t) => Value::InlineTable(t.into_inline_table()),
        Item::ArrayOfTables(a) => Value::Array(a.into_array()),
        Item::None => return,
    };
    if let Err(e) = T::deserialize(value.into_deserializer()) {
        // A missing key has no span of its own: point at the section.
        found.push((e.span().or_else(|| item.span()), e.message().trim_end().to_string()));
    }
}
