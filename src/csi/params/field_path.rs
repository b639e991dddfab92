//! The path of `objectJsonKey` and `objectYamlKey`: which value of a JSON or YAML secret to
//! write, e.g. `db.hosts[0]`, `["tls.crt"]`, `[2].name`.
//!
//! Grammar (pure, bounded by the parameter's length limit):
//! - a path is a first step followed by steps;
//! - a bare key is one or more characters other than `.`, `[`, `]`; it starts the path or
//!   follows `.`;
//! - `[N]` is an array index (decimal, at most 7 digits);
//! - `["k"]` or `['k']` is a key that may hold any character, `\\` and the quote escaped
//!   with a backslash;
//! - a step after `]` is `.key`, `[N]` or `[…]`.
//!
//! A path that matches a top-level key exactly (`a.b` as one key) is that key: lookups try
//! the whole text as a key of the top-level mapping first, so values written for the
//! one-key `objectJsonKey` keep their meaning. Paths never echo values, only keys the
//! SecretProviderClass names.

/// The syntax of the secret's value a path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `objectJsonKey`.
    Json,
    /// `objectYamlKey`.
    Yaml,
}

impl Document {
    /// `JSON` or `YAML`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML",
        }
    }
}

/// Which value of a JSON or YAML secret an object writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector {
    /// The secret's syntax.
    pub document: Document,
    /// The path, as written (a whole top-level key first, else [`parse`]d).
    pub path: String,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A key of a mapping (JSON object, YAML mapping).
    Key(String),
    /// An index of an array (sequence).
    Index(usize),
}

/// Largest index accepted (7 digits).
const MAX_INDEX: usize = 9_999_999;

/// Parses a path; the error says what is wrong and at which character (0-based).
pub fn parse(path: &str) -> Result<Vec<Step>, String> {
    let chars: Vec<char> = path.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let at = |i: usize| format!("at character {}", i + 1);
    if chars.is_empty() {
        return Err("is empty".to_owned());
    }
    // The first step: a bare key or a bracket.
    let mut expect_key = chars.first() != Some(&'[');
    while i < chars.len() {
        if expect_key {
            let start = i;
            while i < chars.len() && !matches!(chars.get(i), Some('.' | '[' | ']')) {
                i += 1;
            }
            if i == start {
                return Err(format!("has an empty key {}", at(start)));
            }
            steps.push(Step::Key(
                chars.get(start..i).unwrap_or_default().iter().collect(),
            ));
            expect_key = false;
            continue;
        }
        match chars.get(i) {
            Some('.') => {
                i += 1;
                if i == chars.len() {
                    return Err(format!("ends with '.' {}", at(i - 1)));
                }
                expect_key = true;
            }
            Some('[') => {
                i += 1;
                match chars.get(i) {
                    Some(q @ ('"' | '\'')) => {
                        let quote = *q;
                        i += 1;
                        let mut key = String::new();
                        loop {
                            match chars.get(i) {
                                None => return Err(format!("has an unclosed quote {}", at(i - 1))),
                                Some('\\') => {
                                    match chars.get(i + 1) {
                                        Some(c @ ('\\' | '"' | '\'')) => key.push(*c),
                                        _ => {
                                            return Err(format!(
                                                "has an unknown escape {} (only \\\\, \\\" and \\' are escapes)",
                                                at(i)
                                            ));
                                        }
                                    }
                                    i += 2;
                                }
                                Some(c) if *c == quote => {
                                    i += 1;
                                    break;
                                }
                                Some(c) => {
                                    key.push(*c);
                                    i += 1;
                                }
                            }
                        }
                        if chars.get(i) != Some(&']') {
                            return Err(format!("expects ']' {}", at(i)));
                        }
                        i += 1;
                        steps.push(Step::Key(key));
                    }
                    _ => {
                        let start = i;
                        while chars.get(i).is_some_and(char::is_ascii_digit) {
                            i += 1;
                        }
                        if i == start {
                            return Err(format!(
                                "expects an index or a quoted key after '[' {}",
                                at(start)
                            ));
                        }
                        if chars.get(i) != Some(&']') {
                            return Err(format!("expects ']' {}", at(i)));
                        }
                        let digits: String =
                            chars.get(start..i).unwrap_or_default().iter().collect();
                        let index = digits
                            .parse::<usize>()
                            .ok()
                            .filter(|n| *n <= MAX_INDEX)
                            .ok_or_else(|| {
                                format!("has an index above {MAX_INDEX} {}", at(start))
                            })?;
                        i += 1;
                        steps.push(Step::Index(index));
                    }
                }
            }
            Some(_) => return Err(format!("expects '.' or '[' {}", at(i))),
            None => break,
        }
    }
    Ok(steps)
}

/// A path for messages: the first `len` steps, written as the grammar reads them.
pub fn prefix(steps: &[Step], len: usize) -> String {
    let mut out = String::new();
    for step in steps.iter().take(len) {
        match step {
            Step::Key(k)
                if k.is_empty() || k.chars().any(|c| matches!(c, '.' | '[' | ']' | '"')) =>
            {
                out.push_str(&format!("[{k:?}]"));
            }
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Step {
        Step::Key(k.to_owned())
    }

    #[test]
    fn paths_parse() {
        assert_eq!(parse("password").unwrap(), [key("password")]);
        assert_eq!(
            parse("db.hosts[0].name").unwrap(),
            [key("db"), key("hosts"), Step::Index(0), key("name")]
        );
        assert_eq!(parse("[2]").unwrap(), [Step::Index(2)]);
        assert_eq!(
            parse(r#"["tls.crt"]['a\'b'].c"#).unwrap(),
            [key("tls.crt"), key("a'b"), key("c")]
        );
        assert_eq!(
            parse("a[1][2]").unwrap(),
            [key("a"), Step::Index(1), Step::Index(2)]
        );
        assert_eq!(parse("my key-é").unwrap(), [key("my key-é")]);
    }

    #[test]
    fn bad_paths_name_the_place() {
        for (path, want) in [
            ("", "is empty"),
            ("a.", "ends with '.'"),
            ("a..b", "empty key at character 3"),
            (".a", "empty key at character 1"),
            ("a[", "expects an index or a quoted key"),
            ("a[x]", "expects an index or a quoted key"),
            ("a[1", "expects ']'"),
            ("a[1]b", "expects '.' or '['"),
            ("a]", "expects '.' or '['"),
            (r#"a["b"#, "unclosed quote"),
            (r#"a["b\n"]"#, "unknown escape"),
            ("a[99999999]", "index above"),
        ] {
            let err = parse(path).unwrap_err();
            assert!(err.contains(want), "{path:?}: {err}");
        }
    }

    #[test]
    fn prefixes_print_as_written() {
        let steps = parse(r#"db["tls.crt"][0].x"#).unwrap();
        assert_eq!(prefix(&steps, 1), "db");
        assert_eq!(prefix(&steps, 2), r#"db["tls.crt"]"#);
        assert_eq!(prefix(&steps, 4), r#"db["tls.crt"][0].x"#);
        assert_eq!(prefix(&parse("[3].a").unwrap(), 2), "[3].a");
    }
}
