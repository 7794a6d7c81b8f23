//! Leaf values of the config: durations, byte sizes, `${VAR}` expansion and
//! byte-offset-to-line conversion. Pure functions, no IO.

use std::time::Duration;

/// What every duration error says is expected.
pub(super) const DURATION_HINT: &str = r#"expected a duration like "90s", "15m", "1h""#;

/// What every size error says is expected.
pub(super) const SIZE_HINT: &str =
    r#"expected a byte count or a size like "512KiB", "32MiB", "1GiB""#;

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses a humantime duration (`"90s"`, `"1h 30m"`); `None` when it is not one.
pub(super) fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// Parses `"512KiB"`, `"32MiB"`, `"1GiB"`, `"100B"` or `"4096"` into bytes.
/// Units are binary and case-insensitive; `None` when it is not a size or
/// overflows.
pub(super) fn size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let count: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    count.checked_mul(multiplier)
}

/// Why a header value could not be expanded. Never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ExpandError {
    /// `${NAME}` names a variable that is not set.
    Missing(String),
    /// `${NAME}` names a variable that is set but empty.
    Empty(String),
    /// The `$` syntax is wrong; the text says how.
    Syntax(&'static str),
}

/// Expands `${NAME}` from `env` and `$$` to a literal `$`.
///
/// # Errors
///
/// [`ExpandError`] for an unset or empty variable or a malformed `$`.
pub(super) fn expand(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    expand_with_values(value, env).map(|(expanded, _)| expanded)
}

/// Like [`expand`], and also returns the value of each variable used (to be
/// redacted wherever the expanded text is shown).
///
/// # Errors
///
/// As [`expand`].
pub(super) fn expand_with_values(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), ExpandError> {
    let mut values = Vec::new();
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            return Err(ExpandError::Syntax(
                "a '$' must start ${NAME} (write $$ for a literal '$')",
            ));
        };
        let Some(end) = inner.find('}') else {
            return Err(ExpandError::Syntax("a '${' has no closing '}'"));
        };
        let found = lookup(&inner[..end], env)?;
        out.push_str(&found);
        values.push(found);
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok((out, values))
}

fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !is_var_name(name) {
        return Err(ExpandError::Syntax(
            "a ${...} must hold a variable name (letters, digits and '_', not starting with a digit)",
        ));
    }
    match env(name) {
        None => Err(ExpandError::Missing(name.to_owned())),
        Some(v) if v.is_empty() => Err(ExpandError::Empty(name.to_owned())),
        Some(v) => Ok(v),
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for a valid HTTP header name (an RFC 9110 token).
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-SECRET".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn lines_are_one_based_and_count_newlines_before_the_offset() {
        let text = "a\nbb\n\nc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 1), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 6), 4);
        assert_eq!(line_of(text, 999), 4);
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(duration("5 parsecs"), None);
        assert_eq!(duration(""), None);
    }

    #[test]
    fn sizes_accept_binary_units_and_plain_bytes() {
        assert_eq!(size("4096"), Some(4096));
        assert_eq!(size("100B"), Some(100));
        assert_eq!(size("512KiB"), Some(512 << 10));
        assert_eq!(size("32 MiB"), Some(32 << 20));
        assert_eq!(size("1gib"), Some(1 << 30));
        for bad in [
            "",
            "MiB",
            "12MB",
            "1.5MiB",
            "-3",
            "3 parsecs",
            "99999999999999999999GiB",
        ] {
            assert_eq!(size(bad), None, "{bad}");
        }
    }

    #[test]
    fn expands_variables_and_doubled_dollars() {
        assert_eq!(expand("Bearer ${KEY}", &env).unwrap(), "Bearer sk-SECRET");
        assert_eq!(expand("$$${KEY}$$", &env).unwrap(), "$sk-SECRET$");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn expansion_errors_name_the_variable_but_not_the_value() {
        assert_eq!(
            expand("Bearer ${NOPE}", &env),
            Err(ExpandError::Missing("NOPE".into()))
        );
        assert_eq!(
            expand("${EMPTY}", &env),
            Err(ExpandError::Empty("EMPTY".into()))
        );
        for bad in ["$KEY", "${KEY", "${}", "${1A}", "${A-B}", "trailing $"] {
            assert!(
                matches!(expand(bad, &env), Err(ExpandError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(is_header_name("Authorization"));
        assert!(is_header_name("X-Api-Key"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("Bad Header"));
        assert!(!is_header_name("Bad:Header"));
    }
}
