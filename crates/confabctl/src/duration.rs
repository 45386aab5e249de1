//! Durations on the command line, written as people write them: `500ms`, `5s`,
//! `10m`, `1h30m` (the humantime crate's grammar, the same in every confab
//! binary).

use std::time::Duration;

/// Parses a duration flag (`--timeout 5s`, `--wait 10m`, `--interval 1s`).
/// A bare number is refused: `5` could mean seconds or milliseconds.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit: write {text}s, {text}ms or {text}m"
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it as 500ms, 5s, 10m or 1h30m")
    })?;
    if duration.is_zero() {
        return Err(format!("{text:?} is zero; give a duration above 0"));
    }
    Ok(duration)
}

/// A duration as people read it back: `5s`, `10m`, `1h 30m`.
pub(crate) fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_people_write_them() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn bad_durations_say_how_to_write_one() {
        let err = parse("banana").unwrap_err();
        assert!(
            err.contains("not a duration") && err.contains("5s"),
            "{err}"
        );
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse("0s").unwrap_err().contains("zero"));
        assert!(parse("").is_err());
    }

    #[test]
    fn durations_read_back_as_written() {
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_secs(600)), "10m");
    }
}
