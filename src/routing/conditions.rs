//! A step's `match` object, compiled: every member must hold (AND). `headers`,
//! `arguments` and `cookies` take an object of name → patterns (every name must hold,
//! for every occurrence of it, and an absent name does not hold) or an array of such
//! objects (any may hold; an empty array holds).
//!
//! How each member compares, after `nxt_http_route.c`:
//!
//! | member        | value tested                     | case      | pattern decoding |
//! | ------------- | -------------------------------- | --------- | ---------------- |
//! | `uri`         | decoded, normalised path         | sensitive | `%XX`            |
//! | `method`      | method as sent                   | sensitive, pattern upper-cased | none |
//! | `host`        | `Host` without port, lower-cased | sensitive, pattern lower-cased | none |
//! | `headers`     | each value of the named field    | insensitive | none           |
//! | `arguments`   | each decoded value of the arg    | sensitive | `%XX` and `+`    |
//! | `cookies`     | each value of the cookie         | sensitive | none             |
//! | `query`       | the whole decoded query          | sensitive | `%XX` and `+`    |

use serde_json::Value;

use super::CompileError;
use super::address::{AddressPattern, AddressRule};
use super::encoding::decode_strict;
use super::pattern::{Decode, Flavor, Fold, Pattern, Rule};
use super::request::RequestInfo;

const URI: Flavor = Flavor {
    case_sensitive: true,
    fold: Fold::None,
    decode: Decode::Percent,
};
const METHOD: Flavor = Flavor {
    case_sensitive: true,
    fold: Fold::Upper,
    decode: Decode::None,
};
const HOST: Flavor = Flavor {
    case_sensitive: true,
    fold: Fold::Lower,
    decode: Decode::None,
};
const HEADER: Flavor = Flavor {
    case_sensitive: false,
    fold: Fold::None,
    decode: Decode::None,
};
const ARGUMENT: Flavor = Flavor {
    case_sensitive: true,
    fold: Fold::None,
    decode: Decode::PercentPlus,
};
const COOKIE: Flavor = Flavor::EXACT;

#[derive(Debug, Clone, Copy)]
enum Field {
    Header,
    Argument,
    Cookie,
}

/// Names and the rule each must hold.
type RuleSet = Box<[(Box<[u8]>, Rule)]>;

/// Rule sets, any of which may hold.
#[derive(Debug)]
struct Table {
    field: Field,
    sets: Box<[RuleSet]>,
}

#[derive(Debug)]
enum Test {
    Scheme { https: bool },
    Host(Rule),
    Uri(Rule),
    Method(Rule),
    Fields(Table),
    Query(Rule),
    Source(AddressRule),
    Destination(AddressRule),
}

/// A compiled `match`.
#[derive(Debug, Default)]
pub struct Conditions {
    tests: Box<[Test]>,
}

impl Conditions {
    pub fn compile(value: Option<&Value>, path: &str) -> Result<Conditions, CompileError> {
        let Some(Value::Object(members)) = value else {
            return Ok(Conditions::default());
        };
        let mut tests = Vec::new();
        for (name, value) in members {
            let at = format!("{path}/{name}");
            let test = match name.as_str() {
                "scheme" => Test::Scheme {
                    https: value
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("https")),
                },
                "host" => Test::Host(rule(value, HOST, &at)?),
                "uri" => Test::Uri(rule(value, URI, &at)?),
                "method" => Test::Method(rule(value, METHOD, &at)?),
                "headers" => Test::Fields(table(value, Field::Header, HEADER, &at)?),
                "arguments" => Test::Fields(table(value, Field::Argument, ARGUMENT, &at)?),
                "cookies" => Test::Fields(table(value, Field::Cookie, COOKIE, &at)?),
                "query" => Test::Query(rule(value, ARGUMENT, &at)?),
                "source" => Test::Source(address_rule(value, &at)?),
                "destination" => Test::Destination(address_rule(value, &at)?),
                _ => return Err(CompileError::new(at, "unknown parameter")),
            };
            tests.push(test);
        }
        // Cheap tests first: the outcome does not depend on the order.
        tests.sort_by_key(|t| match t {
            Test::Scheme { .. } | Test::Method(_) => 0,
            Test::Uri(_) | Test::Host(_) => 1,
            Test::Source(_) | Test::Destination(_) => 2,
            Test::Fields(_) | Test::Query(_) => 3,
        });
        Ok(Conditions {
            tests: tests.into_boxed_slice(),
        })
    }

    pub fn hold(&self, request: &RequestInfo) -> bool {
        self.tests.iter().all(|test| match test {
            Test::Scheme { https } => *https == request.tls,
            Test::Host(rule) => rule.test(request.host()),
            Test::Uri(rule) => rule.test(request.path()),
            Test::Method(rule) => rule.test(&request.method),
            Test::Fields(table) => table.hold(request),
            Test::Query(rule) => rule.test(request.decoded_query()),
            Test::Source(rule) => rule.test(request.remote),
            Test::Destination(rule) => rule.test(request.local),
        })
    }
}

impl Table {
    fn hold(&self, request: &RequestInfo) -> bool {
        // An empty array holds, as in Unit.
        self.sets.is_empty()
            || self.sets.iter().any(|set| {
                set.iter().all(|(name, rule)| match self.field {
                    Field::Header => every(request.header_values(name), rule),
                    Field::Argument => every(request.argument_values(name), rule),
                    Field::Cookie => every(request.cookie_values(name), rule),
                })
            })
    }
}

/// Every value holds, and there is at least one.
fn every<'a>(values: impl Iterator<Item = &'a [u8]>, rule: &Rule) -> bool {
    let mut any = false;
    for value in values {
        if !rule.test(value) {
            return false;
        }
        any = true;
    }
    any
}

/// One pattern or an array of them, as one rule (also a `share`'s `types`).
pub(super) fn rule(value: &Value, flavor: Flavor, at: &str) -> Result<Rule, CompileError> {
    let one = |text: &Value, at: &str| -> Result<Pattern, CompileError> {
        let text = text
            .as_str()
            .ok_or_else(|| CompileError::new(at, "must be a pattern string"))?;
        Pattern::compile(text, flavor).map_err(|e| CompileError::new(at, e.to_string()))
    };
    let patterns = match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| one(item, &format!("{at}/{i}")))
            .collect::<Result<Vec<_>, _>>()?,
        single => vec![one(single, at)?],
    };
    Ok(Rule::new(patterns, flavor))
}

fn table(value: &Value, field: Field, flavor: Flavor, at: &str) -> Result<Table, CompileError> {
    let set = |value: &Value, at: &str| -> Result<RuleSet, CompileError> {
        let members = value
            .as_object()
            .ok_or_else(|| CompileError::new(at, "must be an object of patterns"))?;
        members
            .iter()
            .map(|(name, patterns)| {
                let name_at = format!("{at}/{name}");
                let name = match field {
                    Field::Header | Field::Cookie => name.as_bytes().to_vec(),
                    Field::Argument => decode_strict(name.as_bytes(), true).ok_or_else(|| {
                        CompileError::new(&name_at, "has an invalid percent-encoding")
                    })?,
                };
                Ok((name.into_boxed_slice(), rule(patterns, flavor, &name_at)?))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Vec::into_boxed_slice)
    };
    let sets = match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| set(item, &format!("{at}/{i}")))
            .collect::<Result<Vec<_>, _>>()?,
        single => vec![set(single, at)?],
    };
    Ok(Table {
        field,
        sets: sets.into_boxed_slice(),
    })
}

fn address_rule(value: &Value, at: &str) -> Result<AddressRule, CompileError> {
    let one = |text: &Value, at: &str| -> Result<AddressPattern, CompileError> {
        let text = text
            .as_str()
            .ok_or_else(|| CompileError::new(at, "must be an address pattern"))?;
        AddressPattern::parse(text).map_err(|e| CompileError::new(at, e.to_string()))
    };
    let patterns = match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| one(item, &format!("{at}/{i}")))
            .collect::<Result<Vec<_>, _>>()?,
        single => vec![one(single, at)?],
    };
    Ok(AddressRule::new(patterns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Request;
    use bytes::Bytes;
    use serde_json::json;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestInfo {
        let mut request = Request::for_test(target, headers);
        request.method = Bytes::copy_from_slice(method.as_bytes());
        request.remote = Some("127.0.0.1:40000".parse().expect("address"));
        request.local = Some("127.0.0.1:8080".parse().expect("address"));
        RequestInfo::new(request)
    }

    fn holds(conditions: Value, r: &RequestInfo) -> bool {
        Conditions::compile(Some(&conditions), "match")
            .expect("compiles")
            .hold(r)
    }

    #[test]
    fn members_are_anded() {
        let r = request("GET", "/a?x=1", &[("Host", "h")]);
        assert!(holds(json!({"uri": "/a", "method": "GET"}), &r));
        assert!(!holds(json!({"uri": "/a", "method": "POST"}), &r));
        assert!(holds(json!({}), &r));
    }

    #[test]
    fn fields_need_every_occurrence_and_presence() {
        let r = request("GET", "/", &[("X-A", "1"), ("x-a", "2")]);
        assert!(holds(json!({"headers": {"x-a": "*"}}), &r));
        assert!(!holds(json!({"headers": {"X-A": "1"}}), &r));
        assert!(holds(json!({"headers": {"X-A": ["1", "2"]}}), &r));
        assert!(!holds(json!({"headers": {"X-B": "!x"}}), &r));
        assert!(holds(json!({"headers": [{"X-B": "*"}, {"X-A": "*"}]}), &r));
        assert!(holds(json!({"headers": []}), &r));
        assert!(holds(json!({"headers": {}}), &r));
        assert!(!holds(
            json!({"headers": {"X-A": []}}),
            &request("GET", "/", &[])
        ));
    }

    #[test]
    fn arguments_cookies_query() {
        let r = request("GET", "/?a=x+y&b=%2A", &[("Cookie", "c=1")]);
        assert!(holds(json!({"arguments": {"a": "x y"}}), &r));
        assert!(holds(json!({"arguments": {"a": "x+y"}}), &r));
        assert!(holds(json!({"arguments": {"b": "%2A"}}), &r));
        assert!(!holds(json!({"arguments": {"B": "*"}}), &r));
        assert!(holds(json!({"cookies": {"c": "1"}}), &r));
        assert!(!holds(json!({"cookies": {"C": "1"}}), &r));
        assert!(holds(json!({"query": "a=x y*"}), &r));
        assert!(holds(json!({"scheme": "http"}), &r));
        assert!(!holds(json!({"scheme": "https"}), &r));
        let mut tls = Request::for_test("/", &[]);
        tls.tls = true;
        let tls = RequestInfo::new(tls);
        assert!(holds(json!({"scheme": "HTTPS"}), &tls));
        assert!(!holds(json!({"scheme": "http"}), &tls));
        assert!(holds(
            json!({"source": "127.0.0.0/8", "destination": "*:8080"}),
            &r
        ));
        assert!(!holds(json!({"destination": "*:8081"}), &r));
    }

    #[test]
    fn errors_name_the_pattern() {
        let error = Conditions::compile(Some(&json!({"uri": ["/a", "~("]})), "routes/0/match")
            .expect_err("bad regex");
        assert_eq!(error.path, "routes/0/match/uri/1");
        let error = Conditions::compile(Some(&json!({"source": "10.0.0.0/40"})), "m")
            .expect_err("bad cidr");
        assert_eq!(error.path, "m/source");
    }
}
