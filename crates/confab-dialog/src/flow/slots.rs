//! Typed slots: how a value is found in a text and whether it is valid.
//!
//! Any text is searched with the slot's `patterns` (and, for `enum`, `phone` and
//! `date`, the words and shapes of its type). When the flow is waiting for this
//! slot, the whole text is also read as its value: a number, an enum word, a
//! phone, a date, an address or free text. A value found but not valid (a size
//! out of range, a phone of the wrong length) is reported as refused, and the
//! flow answers with the slot's `invalid` text.

use super::spec::{SlotKind, SlotSpec};
use super::template::Template;
use super::{FlowError, SourceFile, compile_regex, fold};
use regex::Regex;
use std::sync::LazyLock;
use toml::Spanned;

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^0-9])(?:\+?86[- ]?)?(1[3-9]\d{9})(?:$|[^0-9])").expect("phone regex")
});
static DIGITS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d[\d -]{2,}\d").expect("digits regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-?\d+(?:\.\d+)?").expect("number regex"));
static ISO_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d{4})-(\d{1,2})-(\d{1,2})").expect("date regex"));
static CN_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d{1,2})月(\d{1,2})[日号]").expect("date regex"));

/// One value of an enum slot.
#[derive(Debug)]
pub(crate) struct EnumValue {
    value: String,
    label: Option<String>,
    /// Folded, longest first, so that `黑色` is tried before `黑`.
    synonyms: Vec<String>,
}

/// A slot, compiled.
#[derive(Debug)]
pub(crate) struct Slot {
    kind: SlotKind,
    pub(crate) prompt: Template,
    pub(crate) invalid: Option<Template>,
    patterns: Vec<Regex>,
    min: Option<f64>,
    max: Option<f64>,
    values: Vec<EnumValue>,
    min_chars: usize,
    valid: Option<Regex>,
    when_asked: bool,
}

/// What a text says about one slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    Valid(String),
    Refused(String),
}

impl Slot {
    pub(crate) fn compile(
        name: &str,
        spec: &Spanned<SlotSpec>,
        file: &SourceFile,
    ) -> Result<Self, FlowError> {
        let at = spec.span().start;
        let s = spec.get_ref();
        let err =
            |m: String| FlowError::at(&file.path, &file.text, at, format!("slot {name}: {m}"));
        let no_slots = Default::default();
        let patterns = s
            .patterns
            .iter()
            .map(|p| compile_regex(p, file))
            .collect::<Result<Vec<_>, _>>()?;
        if s.kind == SlotKind::Enum && s.values.is_empty() {
            return Err(err("an enum needs values".into()));
        }
        if s.kind != SlotKind::Enum && !s.values.is_empty() {
            return Err(err("values are for enum slots".into()));
        }
        if s.kind != SlotKind::Number && (s.min.is_some() || s.max.is_some()) {
            return Err(err("min and max are for number slots".into()));
        }
        if let (Some(min), Some(max)) = (s.min, s.max)
            && min > max
        {
            return Err(err(format!("min {min} is above max {max}")));
        }
        let values = s
            .values
            .iter()
            .map(|v| {
                let mut synonyms: Vec<String> = std::iter::once(v.value.as_str())
                    .chain(v.synonyms.iter().map(String::as_str))
                    .map(fold)
                    .filter(|w| !w.is_empty())
                    .collect();
                synonyms.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
                EnumValue {
                    value: v.value.clone(),
                    label: v.label.clone(),
                    synonyms,
                }
            })
            .collect();
        Ok(Self {
            kind: s.kind,
            prompt: Template::compile(&s.prompt, &no_slots, file, at)?,
            invalid: s
                .invalid
                .as_deref()
                .map(|t| Template::compile(t, &no_slots, file, at))
                .transpose()?,
            patterns,
            min: s.min,
            max: s.max,
            values,
            min_chars: s.min_chars.unwrap_or(match s.kind {
                SlotKind::Address => 6,
                _ => 1,
            }),
            valid: s
                .valid
                .as_ref()
                .map(|v| compile_regex(v, file))
                .transpose()?,
            when_asked: s.when_asked,
        })
    }

    /// Whether values are masked wherever they leave the session.
    pub(crate) fn sensitive(&self) -> bool {
        matches!(self.kind, SlotKind::Phone | SlotKind::Address)
    }

    pub(crate) fn has_labels(&self) -> bool {
        self.values.iter().any(|v| v.label.is_some())
    }

    pub(crate) fn label(&self, value: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|v| v.value == value)
            .and_then(|v| v.label.as_deref())
    }

    /// What `text` says about this slot. `awaited`: the flow asked for it, so
    /// the whole text is read as its value. `today` is the UTC day (days since
    /// 1970-01-01) that relative dates count from.
    pub(crate) fn find(&self, text: &str, awaited: bool, today: i64) -> Option<Found> {
        if self.when_asked && !awaited {
            return None;
        }
        for pattern in &self.patterns {
            if let Some(caps) = pattern.captures(text) {
                let raw = caps
                    .get(1)
                    .or_else(|| caps.get(0))
                    .map_or("", |m| m.as_str());
                return Some(self.judge(raw, today));
            }
        }
        let folded = fold(text);
        match self.kind {
            SlotKind::Enum => {
                if let Some(v) = self
                    .values
                    .iter()
                    .find(|v| v.synonyms.iter().any(|w| folded.contains(w.as_str())))
                {
                    return Some(Found::Valid(v.value.clone()));
                }
                awaited.then(|| Found::Refused(text.trim().to_owned()))
            }
            SlotKind::Phone => {
                let compact = compact_digits(text);
                if let Some(caps) = PHONE.captures(&compact) {
                    return Some(Found::Valid(caps[1].to_owned()));
                }
                awaited.then(|| {
                    let digits = DIGITS.find(text).map_or(text.trim(), |m| m.as_str());
                    Found::Refused(digits.to_owned())
                })
            }
            SlotKind::Date => {
                if let Some(date) = find_date(text, today) {
                    return Some(date);
                }
                awaited.then(|| Found::Refused(text.trim().to_owned()))
            }
            SlotKind::Number if awaited => Some(match NUMBER.find(text) {
                Some(m) => self.judge(m.as_str(), today),
                None => Found::Refused(text.trim().to_owned()),
            }),
            SlotKind::Text | SlotKind::Address if awaited => Some(self.judge(text.trim(), today)),
            _ => None,
        }
    }

    /// Whether a raw value is valid for this slot, normalised.
    fn judge(&self, raw: &str, today: i64) -> Found {
        let raw = raw.trim();
        let refused = || Found::Refused(raw.to_owned());
        match self.kind {
            SlotKind::Number => {
                let Ok(n) = raw.parse::<f64>() else {
                    return refused();
                };
                if self.min.is_some_and(|min| n < min) || self.max.is_some_and(|max| n > max) {
                    return refused();
                }
                Found::Valid(if n.fract() == 0.0 && n.abs() < 1e15 {
                    format!("{}", n as i64)
                } else {
                    format!("{n}")
                })
            }
            SlotKind::Enum => {
                let folded = fold(raw);
                self.values
                    .iter()
                    .find(|v| v.synonyms.iter().any(|w| folded.contains(w.as_str())))
                    .map_or_else(refused, |v| Found::Valid(v.value.clone()))
            }
            SlotKind::Phone => match PHONE.captures(&compact_digits(raw)) {
                Some(caps) => Found::Valid(caps[1].to_owned()),
                None => refused(),
            },
            SlotKind::Date => find_date(raw, today).unwrap_or_else(refused),
            SlotKind::Text | SlotKind::Address => {
                let long_enough = raw.chars().count() >= self.min_chars;
                let shaped = self.valid.as_ref().is_none_or(|v| {
                    v.find(raw)
                        .is_some_and(|m| m.start() == 0 && m.end() == raw.len())
                });
                if long_enough && shaped {
                    Found::Valid(raw.to_owned())
                } else {
                    refused()
                }
            }
        }
    }
}

/// The text with the spaces and dashes between digits taken out, so that
/// `138 1234-5678` reads as a phone.
fn compact_digits(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, c) in chars.iter().enumerate() {
        let between_digits = matches!(c, ' ' | '-')
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if !between_digits {
            out.push(*c);
        }
    }
    out
}

/// A date in the text: `2026-12-01`, `12月1日`, 今天, 明天, 后天 (relative to
/// `today`), as `YYYY-MM-DD`; a date that does not exist is refused.
fn find_date(text: &str, today: i64) -> Option<Found> {
    for (word, offset) in [("后天", 2), ("明天", 1), ("今天", 0)] {
        if text.contains(word) {
            let (y, m, d) = civil_from_days(today + offset);
            return Some(Found::Valid(format!("{y:04}-{m:02}-{d:02}")));
        }
    }
    let (y, m, d, raw): (i64, u32, u32, String) = if let Some(c) = ISO_DATE.captures(text) {
        (
            c[1].parse().ok()?,
            c[2].parse().ok()?,
            c[3].parse().ok()?,
            c[0].to_owned(),
        )
    } else if let Some(c) = CN_DATE.captures(text) {
        let (year, _, _) = civil_from_days(today);
        (
            year,
            c[1].parse().ok()?,
            c[2].parse().ok()?,
            c[0].to_owned(),
        )
    } else {
        return None;
    };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Some(Found::Refused(raw));
    }
    Some(Found::Valid(format!("{y:04}-{m:02}-{d:02}")))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
