//! String patterns of route conditions, with Unit's rules (`nxt_http_route.c`):
//! `*` wildcards split a pattern into anchored slices, `!` negates, `~` starts a
//! regular expression; an array of patterns is one `Rule`, which checks its negative
//! patterns first and holds if no negative pattern excludes the value and, when it has
//! positive patterns, one of them matches (an empty array always holds).
//!
//! Everything is prepared when the config is applied: case folding of the pattern,
//! percent-decoding of its slices, regex compilation.

use regex::bytes::{Regex, RegexBuilder};
use thiserror::Error;

use super::encoding::decode_strict;

/// How a condition compares text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// Compare bytes exactly; otherwise ASCII case-insensitively.
    pub case_sensitive: bool,
    /// Folds the pattern's text when compiled (Unit upper-cases `method` patterns and
    /// lower-cases `host` ones, then compares exactly).
    pub fold: Fold,
    /// Percent-decoding applied to the pattern's text, where the request value is decoded
    /// too.
    pub decode: Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    None,
    Lower,
    Upper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    None,
    /// `%XX` (`uri`).
    Percent,
    /// `%XX` and `+` as a space (`arguments`, `query`).
    PercentPlus,
}

impl Flavor {
    pub const EXACT: Flavor = Flavor {
        case_sensitive: true,
        fold: Fold::None,
        decode: Decode::None,
    };
}

/// Why a pattern cannot be compiled.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("invalid regular expression: {0}")]
    Regex(String),
    #[error("has an invalid percent-encoding")]
    Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SliceKind {
    Exact,
    Begin,
    End,
    Substring,
}

#[derive(Debug)]
struct Slice {
    kind: SliceKind,
    text: Box<[u8]>,
}

#[derive(Debug)]
enum Matcher {
    Regex(Regex),
    Slices {
        slices: Box<[Slice]>,
        min_length: usize,
    },
}

/// One compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    negative: bool,
    matcher: Matcher,
}

impl Pattern {
    pub fn compile(text: &str, flavor: Flavor) -> Result<Pattern, PatternError> {
        let (negative, text) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if let Some(expression) = text.strip_prefix('~') {
            // Unit hands PCRE the bytes without its UTF mode: match bytes, not characters.
            let regex = RegexBuilder::new(expression)
                .unicode(false)
                .build()
                .map_err(|e| PatternError::Regex(regex_reason(&e.to_string())))?;
            return Ok(Pattern {
                negative,
                matcher: Matcher::Regex(regex),
            });
        }
        let (slices, min_length) = slice(text.as_bytes(), flavor)?;
        Ok(Pattern {
            negative,
            matcher: Matcher::Slices {
                slices: slices.into_boxed_slice(),
                min_length,
            },
        })
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the text matches the pattern itself (negation not applied).
    fn matches(&self, value: &[u8], case_sensitive: bool) -> bool {
        let (slices, min_length) = match &self.matcher {
            Matcher::Regex(regex) => return regex.is_match(value),
            Matcher::Slices { slices, min_length } => (slices, *min_length),
        };
        if value.len() < min_length {
            return false;
        }
        let eq = |a: &[u8], b: &[u8]| {
            if case_sensitive {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let (mut start, mut end) = (0, value.len());
        for slice in slices {
            let text = &*slice.text;
            match slice.kind {
                SliceKind::Exact => return value.len() == min_length && eq(value, text),
                SliceKind::Begin => {
                    if !eq(&value[..text.len()], text) {
                        return false;
                    }
                    start = text.len();
                }
                SliceKind::End => {
                    let at = end - text.len();
                    if !eq(&value[at..end], text) {
                        return false;
                    }
                    end = at;
                }
                SliceKind::Substring => match find(&value[start..end], text, case_sensitive) {
                    Some(at) => start += at + text.len(),
                    None => return false,
                },
            }
        }
        true
    }
}

/// Unit's slicing: a leading run before the first `*` must begin the value, a trailing
/// run after the last `*` must end it, the runs between must appear in order.
fn slice(text: &[u8], flavor: Flavor) -> Result<(Vec<Slice>, usize), PatternError> {
    let mut slices = Vec::new();
    let mut min_length = 0;
    let mut push = |slices: &mut Vec<Slice>, kind, raw: &[u8]| -> Result<(), PatternError> {
        let mut bytes = match flavor.decode {
            Decode::None => raw.to_vec(),
            Decode::Percent => decode_strict(raw, false).ok_or(PatternError::Encoding)?,
            Decode::PercentPlus => decode_strict(raw, true).ok_or(PatternError::Encoding)?,
        };
        match flavor.fold {
            Fold::None => {}
            Fold::Lower => bytes.make_ascii_lowercase(),
            Fold::Upper => bytes.make_ascii_uppercase(),
        }
        min_length += bytes.len();
        slices.push(Slice {
            kind,
            text: bytes.into_boxed_slice(),
        });
        Ok(())
    };
    let Some(first_star) = text.iter().position(|&b| b == b'*') else {
        push(&mut slices, SliceKind::Exact, text)?;
        return Ok((slices, min_length));
    };
    if first_star > 0 {
        push(&mut slices, SliceKind::Begin, &text[..first_star])?;
    }
    let rest = &text[first_star + 1..];
    let (middle, tail) = match rest.iter().rposition(|&b| b == b'*') {
        Some(last) => (&rest[..last], &rest[last + 1..]),
        None => (&rest[..0], rest),
    };
    if !tail.is_empty() {
        push(&mut slices, SliceKind::End, tail)?;
    }
    for run in middle.split(|&b| b == b'*').filter(|r| !r.is_empty()) {
        push(&mut slices, SliceKind::Substring, run)?;
    }
    Ok((slices, min_length))
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8], case_sensitive: bool) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| {
        if case_sensitive {
            w == needle
        } else {
            w.eq_ignore_ascii_case(needle)
        }
    })
}

/// The reason in a `regex` error, without the pattern and caret lines it draws.
fn regex_reason(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map(|reason| reason.trim().to_owned())
        .unwrap_or_else(|| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// A condition's patterns: one string, or an array of them.
#[derive(Debug)]
pub struct Rule {
    /// Negative patterns first.
    patterns: Box<[Pattern]>,
    case_sensitive: bool,
}

impl Rule {
    pub fn new(mut patterns: Vec<Pattern>, flavor: Flavor) -> Rule {
        // A stable sort keeps each group in config order; only the grouping matters.
        patterns.sort_by_key(|p| !p.negative);
        Rule {
            patterns: patterns.into_boxed_slice(),
            case_sensitive: flavor.case_sensitive,
        }
    }

    /// Unit's `nxt_http_route_test_rule`.
    pub fn test(&self, value: &[u8]) -> bool {
        let mut result = true;
        for pattern in &*self.patterns {
            result = pattern.matches(value, self.case_sensitive) ^ pattern.negative;
            // A positive pattern that matches decides yes; a negative one that matches
            // (so `result` is false) decides no.
            if result != pattern.negative {
                return result;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(patterns: &[&str], flavor: Flavor) -> Rule {
        let compiled = patterns
            .iter()
            .map(|p| Pattern::compile(p, flavor).expect("compiles"))
            .collect();
        Rule::new(compiled, flavor)
    }

    fn holds(patterns: &[&str], value: &str) -> bool {
        rule(patterns, Flavor::EXACT).test(value.as_bytes())
    }

    #[test]
    fn exact_and_empty_patterns() {
        assert!(holds(&["/a"], "/a"));
        assert!(!holds(&["/a"], "/ab"));
        assert!(!holds(&["/a"], "/"));
        assert!(holds(&[""], ""));
        assert!(!holds(&[""], "x"));
        assert!(holds(&["!"], "x"));
        assert!(!holds(&["!"], ""));
    }

    #[test]
    fn wildcards() {
        assert!(holds(&["*"], ""));
        assert!(holds(&["*"], "anything"));
        assert!(holds(&["/a*"], "/a"));
        assert!(holds(&["/a*"], "/abc"));
        assert!(!holds(&["/a*"], "/b"));
        assert!(holds(&["*.php"], "/x.php"));
        assert!(!holds(&["*.php"], "/x.phps"));
        assert!(holds(&["*mid*"], "a mid b"));
        assert!(!holds(&["*mid*"], "a mi d b"));
        assert!(holds(&["/a*z"], "/az"));
        assert!(holds(&["/a*z"], "/a/b/z"));
        assert!(!holds(&["/a*z"], "/a/b/y"));
        assert!(holds(&["a*b*c*d"], "a_b_c_d"));
        assert!(holds(&["a*b*c*d"], "abcd"));
        assert!(!holds(&["a*b*c*d"], "a_c_b_d"));
        // The begin and end slices may not overlap.
        assert!(!holds(&["ab*bc"], "abc"));
        assert!(holds(&["ab*bc"], "abbc"));
        assert!(holds(&["*/*/*"], "/a/b"));
        assert!(!holds(&["*/*/*"], "/a"));
    }

    #[test]
    fn negation_and_arrays() {
        assert!(holds(&["!/a"], "/b"));
        assert!(!holds(&["!/a"], "/a"));
        assert!(holds(&["/a", "/b"], "/b"));
        assert!(!holds(&["/a", "/b"], "/c"));
        // Negatives are checked first, wherever they stand.
        assert!(!holds(&["/a*", "!/ab"], "/ab"));
        assert!(holds(&["/a*", "!/ab"], "/ac"));
        assert!(!holds(&["/a*", "!/ab"], "/b"));
        // Only negatives: a value none of them excludes holds.
        assert!(holds(&["!/a", "!/b"], "/c"));
        assert!(!holds(&["!/a", "!/b"], "/b"));
        // An empty array holds.
        assert!(holds(&[], "anything"));
    }

    #[test]
    fn regular_expressions() {
        assert!(holds(&["~^/api/v[0-9]+/"], "/api/v2/x"));
        assert!(!holds(&["~^/api/v[0-9]+/"], "/api/vx/"));
        assert!(holds(&["!~\\.php$"], "/a.html"));
        assert!(!holds(&["!~\\.php$"], "/a.php"));
        assert!(holds(&["~"], "anything"));
        assert!(matches!(
            Pattern::compile("~(", Flavor::EXACT),
            Err(PatternError::Regex(_))
        ));
        // Bytes, not characters.
        assert!(!holds(&["~^/.$"], "/\u{e9}"));
        assert!(holds(&["~^/..$"], "/\u{e9}"));
    }

    #[test]
    fn case_rules() {
        let headers = Flavor {
            case_sensitive: false,
            ..Flavor::EXACT
        };
        assert!(rule(&["Text/*"], headers).test(b"text/HTML"));
        let method = Flavor {
            fold: Fold::Upper,
            ..Flavor::EXACT
        };
        assert!(rule(&["get"], method).test(b"GET"));
        assert!(!rule(&["get"], method).test(b"get"));
        let host = Flavor {
            fold: Fold::Lower,
            ..Flavor::EXACT
        };
        assert!(rule(&["*.Example.COM"], host).test(b"www.example.com"));
        assert!(!holds(&["/A"], "/a"));
    }

    #[test]
    fn decoding_of_patterns() {
        let uri = Flavor {
            decode: Decode::Percent,
            ..Flavor::EXACT
        };
        assert!(rule(&["/a%20b"], uri).test(b"/a b"));
        assert!(rule(&["/a+b"], uri).test(b"/a+b"));
        // An encoded star is a literal star.
        assert!(rule(&["/a%2A"], uri).test(b"/a*"));
        assert!(!rule(&["/a%2A"], uri).test(b"/ab"));
        let args = Flavor {
            decode: Decode::PercentPlus,
            ..Flavor::EXACT
        };
        assert!(rule(&["a+b"], args).test(b"a b"));
        assert_eq!(
            Pattern::compile("%zz", uri).map(|_| ()),
            Err(PatternError::Encoding)
        );
    }
}
