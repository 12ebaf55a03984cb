//! Percent-encoding as Unit applies it to URIs: strict decoding of config patterns,
//! lenient decoding of what clients send, path normalisation, and the "complex URI"
//! encoding Unit gives `Location` values and rewritten paths.

use std::borrow::Cow;

/// The value of a hex digit.
pub fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` (and `+` as a space when `plus`); `None` on a malformed escape, as
/// Unit refuses such a pattern.
pub fn decode_strict(text: &[u8], plus: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'%' => {
                let d0 = hex(*text.get(i + 1)?)?;
                let d1 = hex(*text.get(i + 2)?)?;
                out.push(d0 << 4 | d1);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The path part of a request-target, percent-decoded and normalised the way Unit
/// matches `uri` and reports `$uri`: `//` merged, `.` and `..` segments resolved (never
/// above the root). Borrowed when the raw path needs none of that.
pub fn normalize_path(raw: &[u8]) -> Cow<'_, [u8]> {
    if !needs_normalising(raw) {
        return Cow::Borrowed(raw);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(d0), Some(d1)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            decoded.push(d0 << 4 | d1);
            i += 3;
            continue;
        }
        decoded.push(raw[i]);
        i += 1;
    }
    Cow::Owned(resolve_segments(&decoded))
}

/// Resolves `.`, `..` and empty segments of a decoded path.
fn resolve_segments(decoded: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len());
    for segment in &segments {
        path.push(b'/');
        path.extend_from_slice(segment);
    }
    let ends_in_dir = decoded.ends_with(b"/")
        || decoded.ends_with(b"/.")
        || decoded.ends_with(b"/..")
        || decoded == b"."
        || decoded == b"..";
    if path.is_empty() || (ends_in_dir && !path.ends_with(b"/")) {
        path.push(b'/');
    }
    if !decoded.starts_with(b"/") && !decoded.is_empty() && path.first() == Some(&b'/') {
        // A rewrite may produce a relative path; keep it relative as Unit does.
        path.remove(0);
    }
    path
}

fn needs_normalising(path: &[u8]) -> bool {
    path.contains(&b'%')
        || path.windows(2).any(|w| w == b"//")
        || path.windows(3).any(|w| w == b"/./")
        || path.windows(4).any(|w| w == b"/../")
        || path.ends_with(b"/.")
        || path.ends_with(b"/..")
        || path == b"."
        || path == b".."
}

/// Whether Unit escapes `b` in a URI (its `nxt_uri_escape` table): controls, space,
/// `"#%<>?\^` `` ` `` `{|}`, DEL and every non-ASCII byte.
fn escaped(b: u8) -> bool {
    !(0x21..0x7f).contains(&b)
        || matches!(
            b,
            b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// A `Location` value as Unit sends it: kept when it is already a validly encoded URI
/// (one `?` and then one `#` allowed), otherwise escaped, keeping that first `?` and `#`.
pub fn encode_complex_uri(text: &[u8]) -> Cow<'_, [u8]> {
    if is_complex_uri_encoded(text) {
        return Cow::Borrowed(text);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(text.len() + 16);
    let (mut question, mut hash) = (true, true);
    for &b in text {
        if escaped(b) {
            if b == b'?' && question {
                question = false;
                out.push(b);
                continue;
            }
            if b == b'#' && hash {
                question = false;
                hash = false;
                out.push(b);
                continue;
            }
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

fn is_complex_uri_encoded(text: &[u8]) -> bool {
    let (mut question, mut hash) = (true, true);
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if escaped(b) {
            if b == b'%' {
                match (
                    text.get(i + 1).copied().and_then(hex),
                    text.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(_), Some(_)) => {
                        i += 3;
                        continue;
                    }
                    _ => return false,
                }
            }
            if b == b'?' && question {
                question = false;
            } else if b == b'#' && hash {
                question = false;
                hash = false;
            } else {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// A decoded path made safe to put back into a request-target: `%`, `?`, `#`, controls,
/// spaces and non-ASCII bytes escaped.
pub fn encode_path(path: &[u8]) -> Cow<'_, [u8]> {
    if !path.iter().any(|&b| escaped(b)) {
        return Cow::Borrowed(path);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(path.len() + 16);
    for &b in path {
        if escaped(b) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding_refuses_bad_escapes() {
        assert_eq!(
            decode_strict(b"a%20b+c", false).as_deref(),
            Some(&b"a b+c"[..])
        );
        assert_eq!(
            decode_strict(b"a%20b+c", true).as_deref(),
            Some(&b"a b c"[..])
        );
        assert_eq!(decode_strict(b"%2", false), None);
        assert_eq!(decode_strict(b"%zz", false), None);
    }

    #[test]
    fn paths_are_decoded_and_resolved() {
        assert!(matches!(normalize_path(b"/a/b"), Cow::Borrowed(_)));
        assert_eq!(&*normalize_path(b"/a%20b"), b"/a b");
        assert_eq!(&*normalize_path(b"//a//b/"), b"/a/b/");
        assert_eq!(&*normalize_path(b"/a/./b/../c"), b"/a/c");
        assert_eq!(&*normalize_path(b"/../../x"), b"/x");
        assert_eq!(&*normalize_path(b"/a/.."), b"/");
        assert_eq!(&*normalize_path(b"/a/b/.."), b"/a/");
        assert_eq!(&*normalize_path(b"/%2e%2e/x"), b"/x");
        assert_eq!(&*normalize_path(b"/a%2Fb"), b"/a/b");
    }

    #[test]
    fn locations_are_encoded_like_unit() {
        assert_eq!(&*encode_complex_uri(b"/a?b=c#d"), b"/a?b=c#d");
        assert_eq!(&*encode_complex_uri(b"/a b"), b"/a%20b");
        assert_eq!(&*encode_complex_uri(b"/a%20b"), b"/a%20b");
        assert_eq!(&*encode_complex_uri(b"/a?b?c"), b"/a?b%3Fc");
        assert_eq!(&*encode_complex_uri(b"/%zz"), b"/%25zz");
        assert_eq!(&*encode_complex_uri("/é".as_bytes()), b"/%C3%A9");
    }

    #[test]
    fn paths_are_reencoded_for_targets() {
        assert_eq!(&*encode_path(b"/a b?c"), b"/a%20b%3Fc");
        assert!(matches!(encode_path(b"/plain"), Cow::Borrowed(_)));
    }
}
