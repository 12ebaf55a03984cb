//! Unit's JSON dialect: the parser for every JSON body the control API accepts and every
//! tree read back from the store.
//!
//! It accepts what Unit accepts beyond RFC 8259 — a leading UTF-8 BOM, `//` and `/* */`
//! comments, trailing commas — and rejects what Unit rejects: duplicate object members,
//! an empty body, trailing data, raw control characters in strings, lone surrogates and
//! numbers longer than 14 characters or outside the `i64` range. Integral numbers
//! (`2.0`, `1e3`) become integers. Unlike `serde_json` it reports every error with a byte
//! offset, a 1-based line and a 1-based column counted in characters, and it caps nesting
//! so that a hostile body cannot exhaust the stack.

use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Deepest nesting of arrays and objects accepted; real configs stay under ten levels.
pub const MAX_DEPTH: usize = 512;

/// Longest number text Unit accepts.
const MAX_NUMBER_LEN: usize = 14;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A body that is not valid JSON in Unit's dialect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{detail} (line {line}, column {column})")]
pub struct JsonError {
    pub detail: String,
    /// Byte offset from the start of the body (a BOM included).
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

/// Parses one JSON value in Unit's dialect.
pub fn parse(input: &[u8]) -> Result<Value, JsonError> {
    let start = if input.starts_with(BOM) { BOM.len() } else { 0 };
    let mut parser = Parser { input, pos: start };
    parser.skip_blank()?;
    if parser.at_end() {
        return Err(parser.error_at(
            start,
            "An empty JSON payload isn't allowed. It must be a literal (null, true or false), \
             a number, a string, an array or an object.",
        ));
    }
    let value = parser.value(0)?;
    parser.skip_blank()?;
    if !parser.at_end() {
        return Err(parser.error("Unexpected character after the end of a valid JSON value."));
    }
    Ok(value)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn error(&self, detail: &str) -> JsonError {
        self.error_at(self.pos, detail)
    }

    fn error_at(&self, offset: usize, detail: &str) -> JsonError {
        let offset = offset.min(self.input.len());
        let before = &self.input[..offset];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        // Characters, not bytes: count every byte that does not continue a UTF-8 sequence.
        let column = 1 + before[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        JsonError {
            detail: detail.to_owned(),
            offset,
            line,
            column,
        }
    }

    /// Skips white space and comments.
    fn skip_blank(&mut self) -> Result<(), JsonError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                Some(b'/') => match self.input.get(self.pos + 1) {
                    Some(b'/') => {
                        self.pos = self.input[self.pos..]
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(self.input.len(), |i| self.pos + i);
                    }
                    Some(b'*') => {
                        let body = self.pos + 2;
                        match find(&self.input[body..], b"*/") {
                            Some(i) => self.pos = body + i + 2,
                            None => {
                                return Err(self.error(
                                    "Unexpected end of JSON payload. There's a comment \
                                     without the closing \"*/\".",
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(self.error(
                            "Unexpected character. A comment starts with \"//\" or \"/*\".",
                        ));
                    }
                },
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            _ => Err(self.error(EXPECTED_VALUE)),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, JsonError> {
        if self.input[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error(EXPECTED_VALUE))
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error(&format!(
                "The JSON value is nested too deeply. At most {MAX_DEPTH} levels of arrays \
                 and objects are allowed."
            )));
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        self.pos += 1;
        let mut members = Map::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                None => return Err(self.error(UNCLOSED_OBJECT)),
                Some(b'}') => break,
                Some(b'"') => {}
                Some(_) => {
                    return Err(self.error(
                        "A double quote (\") is expected here. Each object member starts \
                         with a name in double quotes.",
                    ));
                }
            }
            let name_at = self.pos;
            let name = self.string()?;
            if members.contains_key(&name) {
                return Err(self.error_at(
                    name_at,
                    "Duplicate object member. All members of a JSON object must have unique names.",
                ));
            }
            self.skip_blank()?;
            match self.peek() {
                None => return Err(self.error(MEMBER_WITHOUT_VALUE)),
                Some(b':') => self.pos += 1,
                Some(_) => {
                    return Err(self.error(
                        "A colon (:) is expected here. A member name must be followed by a colon.",
                    ));
                }
            }
            self.skip_blank()?;
            if self.at_end() {
                return Err(self.error(MEMBER_WITHOUT_VALUE));
            }
            let value = self.value(depth)?;
            members.insert(name, value);
            self.skip_blank()?;
            match self.peek() {
                None => return Err(self.error(UNCLOSED_OBJECT)),
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                Some(_) => {
                    return Err(self.error(
                        "Either a closing brace (}) or a comma (,) is expected here. Object \
                         members must be separated by commas.",
                    ));
                }
            }
        }
        self.pos += 1;
        Ok(Value::Object(members))
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        self.pos += 1;
        let mut elements = Vec::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                None => return Err(self.error(UNCLOSED_ARRAY)),
                Some(b']') => break,
                Some(_) => {}
            }
            elements.push(self.value(depth)?);
            self.skip_blank()?;
            match self.peek() {
                None => return Err(self.error(UNCLOSED_ARRAY)),
                Some(b',') => self.pos += 1,
                Some(b']') => break,
                Some(_) => {
                    return Err(self.error(
                        "Either a closing bracket (]) or a comma (,) is expected here. Array \
                         elements must be separated by commas.",
                    ));
                }
            }
        }
        self.pos += 1;
        Ok(Value::Array(elements))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let run = &self.input[run_start..self.pos];
            if let Err(e) = std::str::from_utf8(run) {
                return Err(self.error_at(
                    run_start + e.valid_up_to(),
                    "Invalid UTF-8. JSON text must be encoded in UTF-8.",
                ));
            }
            out.extend_from_slice(run);
            match self.peek() {
                None => {
                    return Err(self.error(
                        "Unexpected end of JSON payload. There's a string without the closing \
                         double quote (\").",
                    ));
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => {
                    return Err(self.error(
                        "Unexpected character. Control characters in a JSON string must be escaped.",
                    ));
                }
            }
        }
        // Every run was checked and every escape writes a whole character.
        String::from_utf8(out)
            .map_err(|_| self.error("Invalid UTF-8. JSON text must be encoded in UTF-8."))
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let at = self.pos;
        let simple = match self.input.get(self.pos + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0C,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let ch = self.unicode_escape(at)?;
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => {
                return Err(self.error_at(
                    at,
                    "Unexpected backslash. A literal backslash in a JSON string must be escaped \
                     with a second backslash (\\\\).",
                ));
            }
        };
        out.push(simple);
        self.pos += 2;
        Ok(())
    }

    /// Decodes `\uXXXX`, or a surrogate pair `\uXXXX\uXXXX`, starting at `at`.
    fn unicode_escape(&mut self, at: usize) -> Result<char, JsonError> {
        let high = self.hex4(at + 2)?;
        self.pos = at + 6;
        let code = if (0xD800..0xDC00).contains(&high) {
            let low = match self.input.get(self.pos..self.pos + 2) {
                Some(b"\\u") => self.hex4(self.pos + 2)?,
                _ => return Err(self.error_at(at, LONE_SURROGATE)),
            };
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error_at(at, LONE_SURROGATE));
            }
            self.pos += 6;
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error_at(at, LONE_SURROGATE))
    }

    fn hex4(&self, at: usize) -> Result<u32, JsonError> {
        let digits = self
            .input
            .get(at..at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                self.error_at(
                    at.saturating_sub(2),
                    "Invalid escape sequence. A \\u escape must be followed by four \
                     hexadecimal digits (\\uXXXX).",
                )
            })?;
        u32::from_str_radix(digits, 16).map_err(|_| self.error_at(at, "Invalid escape sequence."))
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = digits(self);
        if int_digits == 0 {
            return Err(self.error_at(start, EXPECTED_VALUE));
        }
        if int_digits > 1 && self.input[int_start] == b'0' {
            return Err(self.error_at(
                start,
                "The number is invalid. Leading zeros are not allowed in JSON numbers.",
            ));
        }
        let mut integral_text = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integral_text = false;
            if digits(self) == 0 {
                return Err(self
                    .error("The number is invalid. A decimal point must be followed by digits."));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            integral_text = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("The number is invalid. An exponent must have digits."));
            }
        }
        let text = &self.input[start..self.pos];
        if text.len() > MAX_NUMBER_LEN {
            return Err(self.error_at(
                start,
                &format!(
                    "The number is too long. Numbers of more than {MAX_NUMBER_LEN} characters \
                     are not supported."
                ),
            ));
        }
        // The text is ASCII by construction.
        let text = std::str::from_utf8(text).map_err(|_| self.error_at(start, EXPECTED_VALUE))?;
        if integral_text {
            // Fourteen characters always fit an i64.
            let n: i64 = text
                .parse()
                .map_err(|_| self.error_at(start, OUT_OF_RANGE))?;
            return Ok(Value::Number(n.into()));
        }
        let f: f64 = text
            .parse()
            .map_err(|_| self.error_at(start, EXPECTED_VALUE))?;
        // i64::MAX is not representable as f64; 2^63 is the first value past the range.
        if !f.is_finite() || f.abs() >= 9_223_372_036_854_775_808.0 {
            return Err(self.error_at(start, OUT_OF_RANGE));
        }
        if f.fract() == 0.0 {
            // Exact: |f| < 2^63 and integral, so the cast neither truncates nor saturates.
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Value::Number((f as i64).into()));
        }
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| self.error_at(start, OUT_OF_RANGE))
    }
}

const EXPECTED_VALUE: &str = "A valid JSON value is expected here. It must be a literal (null, \
     true or false), a number, a string (in double quotes \"\"), an array (with brackets []) or \
     an object (with braces {}).";
const UNCLOSED_OBJECT: &str =
    "Unexpected end of JSON payload. There's an object without a closing brace (}).";
const UNCLOSED_ARRAY: &str =
    "Unexpected end of JSON payload. There's an array without a closing bracket (]).";
const MEMBER_WITHOUT_VALUE: &str =
    "Unexpected end of JSON payload. There's an object member without a value.";
const LONE_SURROGATE: &str = "Invalid escape sequence. This \\u escape is a lone UTF-16 \
     surrogate, which does not represent a character.";
const OUT_OF_RANGE: &str = "The number is out of range. Numbers must lie within the range of a \
     signed 64-bit integer.";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(input: &str) -> JsonError {
        parse(input.as_bytes()).expect_err("must be rejected")
    }

    #[test]
    fn accepts_unit_extensions() {
        let body = "\u{FEFF}{ // comment\n \"a\": [1, 2, /* x */ 3,],\n \"b\": {\"c\": null,},\n}";
        assert_eq!(
            parse(body.as_bytes()).expect("valid"),
            json!({"a": [1, 2, 3], "b": {"c": null}})
        );
    }

    #[test]
    fn keeps_member_order_and_escapes() {
        let v = parse(br#"{"z": "\u0000\ud83d\ude00\n", "a": 1}"#).expect("valid");
        assert_eq!(
            v.as_object().expect("object").keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
        assert_eq!(v["z"], "\u{0}\u{1F600}\n");
    }

    #[test]
    fn integral_numbers_become_integers() {
        assert_eq!(parse(b"2.0").expect("valid"), json!(2));
        assert_eq!(parse(b"1e3").expect("valid"), json!(1000));
        assert_eq!(parse(b"-0.5").expect("valid"), json!(-0.5));
        assert!(parse(b"99999999999999").is_ok());
    }

    #[test]
    fn rejects_what_unit_rejects() {
        for bad in [
            "",
            "  ",
            "{\"a\":1,\"a\":2}",
            "{} x",
            "\"a\u{1}\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "012",
            "999999999999999",
            "1e19",
            "1e400",
            "[1,,2]",
            "[,]",
            "{,}",
            "tru",
            "-",
            "1.",
            "1e",
            "\"\\x\"",
            "/* open",
            "/x",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn reports_line_and_character_column() {
        let e = err("{\n  \"é\": tru\n}");
        assert_eq!((e.line, e.column, e.offset), (2, 8, 10));
        let e = err("{\"a\": 1}\n x");
        assert_eq!((e.line, e.column), (2, 2));
    }

    #[test]
    fn rejects_invalid_utf8_where_it_starts() {
        let e = parse(b"[\"ab\xFFc\"]").expect_err("invalid");
        assert_eq!(e.offset, 4);
    }

    #[test]
    fn caps_nesting() {
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(deep.as_bytes()).is_ok());
        let too_deep = "[".repeat(100_000);
        assert!(err(&too_deep).detail.contains("nested too deeply"));
    }
}

/// Property tests: on standard JSON (as `serde_json` writes it) the dialect reads what
/// `serde_json` reads, and on arbitrary bytes it never panics.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// JSON values within what Unit's dialect takes: integers of at most 13 digits (its
    /// 14-character cap, a sign included), a few levels deep.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-9_999_999_999_999i64..=9_999_999_999_999).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // Modest counts, so the unit tests stay fast; no regression files.
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn standard_json_reads_as_serde_json_reads_it(value in value(), pretty: bool) {
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            }
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let theirs: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parse(text.as_bytes()), Ok(theirs));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&input);
        }

        #[test]
        fn json_like_text_never_panics(
            input in prop::collection::vec(
                prop::sample::select(b"{}[],:\"\\/*0123456789.eE+-truefalsnul \n\t\xef\xbb\xbf".to_vec()),
                0..120,
            ),
        ) {
            if let Err(e) = parse(&input) {
                prop_assert!(e.offset <= input.len());
            }
        }
    }
}
