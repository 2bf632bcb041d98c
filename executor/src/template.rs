//! Template text: literal text with `{name}` placeholders. `{{` and `}}`
//! stand for literal braces. A placeholder name has the syntax of a node id
//! (`[a-z0-9_-]{1,64}`), so it can be named in errors and in the audit log.

use std::collections::BTreeMap;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Placeholder(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("placeholder opened at character {at} is never closed: close it with '}}' or write '{{{{' for a literal brace")]
    Unclosed { at: usize },
    #[error("'}}' at character {at} closes no placeholder: write '}}}}' for a literal brace")]
    StrayClose { at: usize },
    #[error("placeholder {{{name}}} at character {at} is not a name: use 1 to 64 of a-z 0-9 _ - (write '{{{{' for a literal brace)")]
    BadName { name: String, at: usize },
    #[error("placeholder {{{name}}} has no value: bind it with an edge whose input is '{name}'")]
    Unbound { name: String },
}

/// Whether `s` is an identifier: `[a-z0-9_-]{1,64}`. Node ids, placeholder
/// names and flow names share this syntax.
pub fn is_ident(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Template {
    /// Parses `text`. Character positions in errors count from 0.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::StrayClose { at }),
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        if n == '{' {
                            break;
                        }
                        name.push(n);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed { at });
                    }
                    if !is_ident(&name) {
                        return Err(TemplateError::BadName { name, at });
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Placeholder names in order of first appearance, without repeats.
    pub fn placeholders(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.parts {
            if let Part::Placeholder(n) = p {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        names
    }

    /// Renders with the values `lookup` gives; the first placeholder without
    /// a value is the error.
    pub fn render<'v>(
        &self,
        lookup: impl Fn(&str) -> Option<&'v str>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder(n) => match lookup(n) {
                    Some(v) => out.push_str(v),
                    None => return Err(TemplateError::Unbound { name: n.clone() }),
                },
            }
        }
        Ok(out)
    }
}

/// Parses and renders `text` with `inputs` (placeholder name → value).
pub fn render(text: &str, inputs: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    Template::parse(text)?.render(|n| inputs.get(n).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn renders_placeholders_and_escapes() {
        let got = render(
            "Write {n} haiku about {topic}; {{literal}} {topic}.",
            &vals(&[("topic", "autumn"), ("n", "2")]),
        );
        assert_eq!(
            got,
            Ok("Write 2 haiku about autumn; {literal} autumn.".to_owned())
        );
    }

    #[test]
    fn values_are_not_reinterpreted() {
        // A value that looks like a placeholder stays literal text.
        let got = render("[{a}]", &vals(&[("a", "{b} }} {{")]));
        assert_eq!(got, Ok("[{b} }} {{]".to_owned()));
    }

    #[test]
    fn placeholders_in_order_without_repeats() {
        let t = Template::parse("{b}{a}{b} {{c}}").unwrap();
        assert_eq!(t.placeholders(), vec!["b", "a"]);
        assert_eq!(
            t.parts(),
            &[
                Part::Placeholder("b".into()),
                Part::Placeholder("a".into()),
                Part::Placeholder("b".into()),
                Part::Literal(" {c}".into()),
            ]
        );
    }

    #[test]
    fn empty_and_plain_text() {
        assert_eq!(render("", &vals(&[])), Ok(String::new()));
        assert_eq!(render("no slots", &vals(&[])), Ok("no slots".to_owned()));
    }

    #[test]
    fn unbound_placeholder_is_named() {
        let err = render("hi {who}", &vals(&[])).unwrap_err();
        assert_eq!(err, TemplateError::Unbound { name: "who".into() });
        assert_eq!(
            err.to_string(),
            "placeholder {who} has no value: bind it with an edge whose input is 'who'"
        );
    }

    #[test]
    fn syntax_errors_name_the_position() {
        assert_eq!(
            Template::parse("ab {x"),
            Err(TemplateError::Unclosed { at: 3 })
        );
        assert_eq!(
            Template::parse("ab {x {y}"),
            Err(TemplateError::Unclosed { at: 3 })
        );
        assert_eq!(
            Template::parse("ab } c"),
            Err(TemplateError::StrayClose { at: 3 })
        );
        assert_eq!(
            Template::parse("{}"),
            Err(TemplateError::BadName {
                name: String::new(),
                at: 0
            })
        );
        assert_eq!(
            Template::parse("é{Topic}"),
            Err(TemplateError::BadName {
                name: "Topic".into(),
                at: 1
            })
        );
        assert_eq!(
            Template::parse("{a b}").unwrap_err().to_string(),
            "placeholder {a b} at character 0 is not a name: use 1 to 64 of a-z 0-9 _ - (write '{{' for a literal brace)"
        );
        assert_eq!(
            Template::parse("{x").unwrap_err().to_string(),
            "placeholder opened at character 0 is never closed: close it with '}' or write '{{' for a literal brace"
        );
        assert_eq!(
            Template::parse("}").unwrap_err().to_string(),
            "'}' at character 0 closes no placeholder: write '}}' for a literal brace"
        );
    }

    #[test]
    fn ident_syntax() {
        assert!(is_ident("a"));
        assert!(is_ident("node_1-b"));
        assert!(is_ident(&"a".repeat(64)));
        assert!(!is_ident(&"a".repeat(65)));
        assert!(!is_ident(""));
        assert!(!is_ident("A"));
        assert!(!is_ident("a.b"));
        assert!(!is_ident("a/b"));
        assert!(!is_ident("é"));
    }
}
