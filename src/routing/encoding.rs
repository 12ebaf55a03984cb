//! Percent-encoding as Unit applies it to URIs: strict decoding of config patterns, and
//! the "complex URI" encoding Unit gives `Location` values and rewritten paths. (What
//! clients send is decoded once, in `http::target`.)

use std::borrow::Cow;

use crate::http::target::hex;

/// Percent-decodes a name (of an application or route in a `pass`, of a control API path
/// segment); `None` when an escape is malformed or the name is not UTF-8.
pub fn decode_name(raw: &str) -> Option<String> {
    String::from_utf8(decode_strict(raw.as_bytes(), false)?).ok()
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
