//! The input filter from config: `filter.toml` at the top of the flows dir.
//!
//! ```toml
//! # Texts matching an allow rule pass, whatever the block rules say.
//! allow = ['^select (size|colour) \d+$']
//!
//! [[block]]
//! name = "script"
//! regex = '(?i)<\s*script'
//! ```
//!
//! Before any rule, text is trimmed, and blank text or text holding control
//! characters is refused ([`BasicInputFilter`]). A refused text gets the
//! `rejected_input` error, is recorded as an audit event and goes no further.

use crate::flow::{FlowError, SourceFile, compile_regex};
use crate::{BasicInputFilter, InputFilter, Rejection};

/// Block rules per filter file, at most.
pub const FILTER_RULES_MAX: usize = 256;

/// The block and allow rules, compiled.
#[derive(Debug, Default)]
pub struct ConfigFilter {
    block: Vec<(String, regex::Regex)>,
    allow: Vec<regex::Regex>,
}

impl ConfigFilter {
    /// Compiles `filter.toml`.
    pub fn compile(path: &str, text: &str) -> Result<Self, FlowError> {
        let file = SourceFile {
            path: path.to_owned(),
            text: text.to_owned(),
        };
        let spec: crate::flow::spec::FilterFile = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            match e.span() {
                Some(span) => FlowError::at(path, text, span.start, message),
                None => FlowError::whole(path, message),
            }
        })?;
        if spec.block.len() > FILTER_RULES_MAX {
            return Err(FlowError::whole(
                path,
                format!("more than {FILTER_RULES_MAX} block rules"),
            ));
        }
        let block = spec
            .block
            .iter()
            .map(|rule| Ok((rule.name.clone(), compile_regex(&rule.regex, &file)?)))
            .collect::<Result<_, FlowError>>()?;
        let allow = spec
            .allow
            .iter()
            .map(|pattern| compile_regex(pattern, &file))
            .collect::<Result<_, _>>()?;
        Ok(Self { block, allow })
    }

    /// How many block rules.
    pub fn block_rules(&self) -> usize {
        self.block.len()
    }
}

impl InputFilter for ConfigFilter {
    fn filter(&self, text: &str) -> Result<String, Rejection> {
        let text = BasicInputFilter.filter(text)?;
        if self.allow.iter().any(|a| a.is_match(&text)) {
            return Ok(text);
        }
        if let Some((name, _)) = self.block.iter().find(|(_, re)| re.is_match(&text)) {
            return Err(Rejection {
                reason: format!("the text was refused by the input filter (rule {name})"),
            });
        }
        Ok(text)
    }
}
