//! Reply templates: text with `{slot}` placeholders.
//!
//! - `{size}`: a slot's value, masked if the slot is sensitive;
//! - `{colour.label}`: an enum slot's label (`黑色` for `black`);
//! - `{action.NAME}`: a field of the action's result, `{action.status}` (`ok` or
//!   `failed`), `{action.reason}`;
//! - `{limit.max}`, `{limit.used}`, `{limit.left}`: an action's daily limit;
//! - `{value}`: the refused value, in a slot's `invalid` text.
//!
//! `{{` and `}}` stand for braces. A placeholder naming no slot is refused when
//! the file loads.

use super::slots::Slot;
use super::{FlowError, SourceFile};
use crate::{mask, mask_value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Slot(String),
    Label(String),
    Var(String),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

/// What a template is rendered with.
pub(crate) struct Vars<'a> {
    pub(crate) slots: &'a BTreeMap<String, String>,
    pub(crate) defs: &'a BTreeMap<String, Slot>,
    /// `action.*`, `limit.*` and `value`.
    pub(crate) extra: &'a BTreeMap<String, String>,
}

impl Template {
    pub(crate) fn compile(
        text: &str,
        slots: &BTreeMap<String, Slot>,
        file: &SourceFile,
        at: usize,
    ) -> Result<Self, FlowError> {
        let err = |m: String| FlowError::at(&file.path, &file.text, at, m);
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(err(format!("template {text:?}: unclosed {{")));
                            }
                        }
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(
                        placeholder(&name, slots)
                            .map_err(|m| err(format!("template {text:?}: {m}")))?,
                    );
                }
                '}' => return Err(err(format!("template {text:?}: lone }}; write }}}}"))),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self(pieces))
    }

    pub(crate) fn render(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(name) => {
                    if let Some(value) = vars.slots.get(name) {
                        if vars.defs.get(name).is_some_and(Slot::sensitive) {
                            out.push_str(&mask(value));
                        } else {
                            out.push_str(&mask_value(name, value));
                        }
                    }
                }
                Piece::Label(name) => {
                    if let Some(value) = vars.slots.get(name) {
                        let label = vars.defs.get(name).and_then(|s| s.label(value));
                        out.push_str(label.unwrap_or(value));
                    }
                }
                Piece::Var(name) => {
                    if let Some(value) = vars.extra.get(name) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

fn placeholder(name: &str, slots: &BTreeMap<String, Slot>) -> Result<Piece, String> {
    let name = name.trim();
    if name == "value" || name.starts_with("action.") || name.starts_with("limit.") {
        if let Some(field) = name.strip_prefix("limit.")
            && !matches!(field, "max" | "used" | "left")
        {
            return Err(format!("{{{name}}}: limit has max, used and left"));
        }
        return Ok(Piece::Var(name.to_owned()));
    }
    if let Some(slot) = name.strip_suffix(".label") {
        return match slots.get(slot) {
            Some(s) if s.has_labels() => Ok(Piece::Label(slot.to_owned())),
            Some(_) => Err(format!(
                "{{{name}}}: slot {slot} is not an enum with labels"
            )),
            None => Err(format!("{{{name}}}: no slot {slot}")),
        };
    }
    if slots.contains_key(name) {
        Ok(Piece::Slot(name.to_owned()))
    } else {
        Err(format!(
            "{{{name}}} names no slot (declare [slots.{name}], or use action.*, limit.*)"
        ))
    }
}
