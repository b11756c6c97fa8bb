//! `labelSelector` parsing and matching with the grammar of
//! k8s.io/apimachinery `pkg/labels/selector.go`.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: Operator,
    /// Values (one for `=`, `!=`, `>`, `<`; one or more for `in`/`notin`; none for exists).
    pub values: Vec<String>,
}

/// Selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In,
    /// `key!=value`, `key notin (a,b)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N`.
    GreaterThan,
    /// `key<N`.
    LessThan,
}

/// Why a selector string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// True when the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The parsed requirements, in input order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Parses a `labelSelector` query value.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if p.peek() == &Token::End {
            return Ok(Self::default());
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                Token::End => break,
                Token::Comma => {
                    if p.peek() == &Token::End {
                        return Err(SelectorError(
                            "found '', expected: identifier after ','".into(),
                        ));
                    }
                }
                t => {
                    return Err(SelectorError(format!(
                        "found '{t}', expected: ',' or 'end of string'"
                    )));
                }
            }
        }
        Ok(Self { requirements })
    }

    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// The selector in the syntax [`LabelSelector::parse`] reads (apimachinery's
/// `Selector.String()`): requirements joined by `,`, so that parsing the output gives
/// the same selector back.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One requirement as apimachinery's `Requirement.String()` writes it: `key=v` and
/// `key!=v` for a single value, `key in (a,b)` / `key notin (a,b)` for a set.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let set = || self.values.join(",");
        match (self.op, self.values.as_slice()) {
            (Operator::Exists, _) => write!(f, "{key}"),
            (Operator::DoesNotExist, _) => write!(f, "!{key}"),
            (Operator::In, [v]) => write!(f, "{key}={v}"),
            (Operator::NotIn, [v]) => write!(f, "{key}!={v}"),
            (Operator::In, _) => write!(f, "{key} in ({})", set()),
            (Operator::NotIn, _) => write!(f, "{key} notin ({})", set()),
            (Operator::GreaterThan, _) => write!(f, "{key}>{}", set()),
            (Operator::LessThan, _) => write!(f, "{key}<{}", set()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    OpenParen,
    CloseParen,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
    In,
    NotIn,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Token::Ident(s) => s.as_str(),
            Token::Comma => ",",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::Bang => "!",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::End => "",
        };
        f.write_str(s)
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('=', Some('=')) => (Token::DoubleEq, 2),
                ('!', Some('=')) => (Token::NotEq, 2),
                ('=', _) => (Token::Eq, 1),
                ('!', _) => (Token::Bang, 1),
                ('(', _) => (Token::OpenParen, 1),
                (')', _) => (Token::CloseParen, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::Gt, 1),
                ('<', _) => (Token::Lt, 1),
                _ => unreachable!("is_special covers these"),
            };
            tokens.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_special(chars[i]) && !chars[i].is_whitespace() {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        if self.peek() == &Token::Bang {
            self.next();
            negated = true;
        }
        let key = match self.next() {
            Token::Ident(k) => k,
            t => {
                return Err(SelectorError(format!(
                    "found '{t}', expected: !, identifier, or 'end of string'"
                )));
            }
        };
        validate_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: vec![],
            });
        }
        match self.peek() {
            Token::End | Token::Comma => {
                return Ok(Requirement {
                    key,
                    op: Operator::Exists,
                    values: vec![],
                });
            }
            _ => {}
        }
        let op = match self.next() {
            Token::Eq | Token::DoubleEq | Token::In => Operator::In,
            Token::NotEq | Token::NotIn => Operator::NotIn,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            t => {
                return Err(SelectorError(format!(
                    "found '{t}', expected: in, notin, =, ==, !=, gt, lt"
                )));
            }
        };
        let set_based = matches!(
            self.tokens.get(self.pos - 1),
            Some(Token::In | Token::NotIn)
        );
        let values = if set_based {
            self.value_set()?
        } else {
            vec![self.exact_value(op)?]
        };
        Ok(Requirement { key, op, values })
    }

    fn exact_value(&mut self, op: Operator) -> Result<String, SelectorError> {
        let value = match self.peek().clone() {
            Token::Ident(v) => {
                self.next();
                v
            }
            Token::End | Token::Comma => String::new(),
            t => {
                return Err(SelectorError(format!("found '{t}', expected: identifier")));
            }
        };
        if matches!(op, Operator::GreaterThan | Operator::LessThan) {
            if value.parse::<i64>().is_err() {
                return Err(SelectorError(format!(
                    "for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                )));
            }
        } else {
            validate_value(&value)?;
        }
        Ok(value)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::OpenParen => {}
            t => return Err(SelectorError(format!("found '{t}', expected: '('"))),
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::Ident(v) if expect_value => {
                    validate_value(&v)?;
                    values.push(v);
                    expect_value = false;
                }
                Token::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Token::CloseParen => {
                    if expect_value {
                        values.push(String::new());
                    }
                    break;
                }
                t => {
                    return Err(SelectorError(format!(
                        "found '{t}', expected: ',', ')' or identifier"
                    )));
                }
            }
        }
        Ok(values)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(is_name_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// True when `key` is a valid label key (optional DNS subdomain prefix and `/`, then a
/// qualified name).
pub fn is_valid_label_key(key: &str) -> bool {
    validate_key(key).is_ok()
}

/// True when `value` is a valid label value (empty, or a qualified name part).
pub fn is_valid_label_value(value: &str) -> bool {
    validate_value(value).is_ok()
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns1123_subdomain);
    if prefix_ok && is_qualified_name_part(name) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )))
    }
}

fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "values[0][{value}]: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn display_parses_back_to_the_same_selector() {
        let s =
            LabelSelector::parse("a=1,b==2,c!=3,d in (x, y),e notin (z),f,!g,h>5,i<-7").unwrap();
        assert_eq!(s.to_string(), "a=1,b=2,c!=3,d in (x,y),e!=z,f,!g,h>5,i<-7");
        for input in [
            "",
            "x in (),y=",
            "k in (a,,b)",
            "example.com/owner notin (a,b)",
        ] {
            let s = LabelSelector::parse(input).unwrap();
            let printed = s.to_string();
            assert_eq!(
                LabelSelector::parse(&printed).unwrap(),
                s,
                "{input:?} -> {printed:?}"
            );
        }
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("a=1,b==2,c!=3,d in (x, y),e notin (z),f,!g,h>5,i<7").unwrap();
        let ops: Vec<Operator> = s.requirements().iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            vec![
                Operator::In,
                Operator::In,
                Operator::NotIn,
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
                Operator::GreaterThan,
                Operator::LessThan
            ]
        );
        assert_eq!(s.requirements()[3].values, vec!["x", "y"]);
    }

    #[test]
    fn matching_semantics() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "10")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web,db)",
            "app notin (db)",
            "missing notin (db)",
            "app",
            "!missing",
            "n>5",
            "n<11",
            "app=web,tier=front",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "!app",
            "missing",
            "n>10",
            "tier=front,app=db",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn empty_values_are_allowed() {
        let s = LabelSelector::parse("x in (foo,,baz)").unwrap();
        assert_eq!(s.requirements()[0].values, vec!["foo", "", "baz"]);
        assert!(
            LabelSelector::parse("x=")
                .unwrap()
                .matches(&labels(&[("x", "")]))
        );
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for s in [
            "=web",
            "app in web",
            "app in (web",
            "app==web,",
            "app = web = x",
            "a b",
            "n>x",
            "bad key=1",
            "-app=1",
            "app=we b",
            "app=!",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn keys_may_have_prefixes() {
        assert!(LabelSelector::parse("app.kubernetes.io/name=web").is_ok());
        assert!(LabelSelector::parse("Bad_Prefix/name=web").is_err());
    }
}
