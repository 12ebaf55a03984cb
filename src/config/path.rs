//! Addresses into the config tree, as the control API spells them.
//!
//! A request path is normalised the way Unit does it — `//` merges, `.` and `..` resolve,
//! one trailing `/` is ignored — and only then split on `/` and percent-decoded segment
//! by segment, so that `%2F` addresses a key that contains a slash.

use thiserror::Error;

use crate::routing::encoding::decode_name;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the path segment `{0}` is not valid percent-encoded UTF-8")]
pub struct BadSegment(pub String);

/// Splits a raw (still percent-encoded) request path into normalised raw segments.
pub fn normalize(raw_path: &str) -> Vec<&str> {
    let path = raw_path.split(['?', '#']).next().unwrap_or_default();
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments
}

/// Percent-decodes raw segments into the keys and indexes they name.
pub fn decode(raw_segments: &[&str]) -> Result<Vec<String>, BadSegment> {
    raw_segments.iter().map(|s| decode_segment(s)).collect()
}

/// Percent-decodes one segment; a `%` not followed by two hex digits is an error.
pub fn decode_segment(raw: &str) -> Result<String, BadSegment> {
    decode_name(raw).ok_or_else(|| BadSegment(raw.to_owned()))
}

/// An array index as the control API accepts it: ASCII digits only, leading zeros allowed.
pub fn array_index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_unit() {
        assert_eq!(normalize("/config/"), ["config"]);
        assert_eq!(normalize("//config//listeners/"), ["config", "listeners"]);
        assert_eq!(normalize("/config/./a/../b?x=/y"), ["config", "b"]);
        assert_eq!(normalize("/../config"), ["config"]);
        assert!(normalize("/").is_empty());
    }

    #[test]
    fn decodes_segments_after_splitting() {
        assert_eq!(
            decode(&["listeners", "unix:%2Ftmp%2Fa.sock"]).expect("valid"),
            ["listeners", "unix:/tmp/a.sock"]
        );
        assert!(decode_segment("a%2").is_err());
        assert!(decode_segment("a%zz").is_err());
        assert!(decode_segment("%FF").is_err());
    }

    #[test]
    fn indexes_are_digits_only() {
        assert_eq!(array_index("007"), Some(7));
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index("+0"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("99999999999999999999999"), None);
    }
}
