//! The four forms of a request-target (RFC 9112 §3.2), told apart before the target is
//! parsed: origin-form (`/path?query`) goes on as it is; absolute-form
//! (`http://authority/path?query`) gives its path and query to routing and its
//! authority to `Host` (§3.2.2); asterisk-form is `OPTIONS *` only; authority-form and
//! `CONNECT` (a tunnel, which Wharf does not make) are refused, never passed on.

use bytes::Bytes;

use super::host::is_valid_host;

/// Why a request-target's form is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the request asks for a tunnel (CONNECT), which is not served")]
    Connect,
    #[error("the request-target is neither origin-form nor absolute-form")]
    Form,
    #[error("the request-target's scheme is not http or https")]
    Scheme,
    #[error("the request-target's authority is malformed or has userinfo")]
    Authority,
}

impl FormError {
    /// The status the client is answered with: a method Wharf does not implement, or a
    /// bad request.
    pub fn status(self) -> u16 {
        match self {
            Self::Connect => 501,
            Self::Form | Self::Scheme | Self::Authority => 400,
        }
    }
}

/// What a target's form leaves for routing.
#[derive(Debug, PartialEq, Eq)]
pub struct Origin {
    /// The path and query (`*` for `OPTIONS *`), a slice of the target.
    pub target: Bytes,
    /// An absolute-form target's authority, which replaces `Host`.
    pub authority: Option<Bytes>,
}

/// Tells a target's form and takes its origin part.
pub fn origin(method: &[u8], target: Bytes) -> Result<Origin, FormError> {
    if method == b"CONNECT" {
        return Err(FormError::Connect);
    }
    match target.first() {
        Some(b'/') => Ok(Origin {
            target,
            authority: None,
        }),
        Some(b'*') if &target[..] == b"*" && method == b"OPTIONS" => Ok(Origin {
            target,
            authority: None,
        }),
        _ => absolute(target),
    }
}

/// `scheme "://" authority path-abempty [ "?" query ]`; an empty path is `/`.
fn absolute(target: Bytes) -> Result<Origin, FormError> {
    let Some(colon) = target.iter().position(|&b| b == b':') else {
        return Err(FormError::Form);
    };
    let scheme = &target[..colon];
    let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    // `a:80` (authority-form) has no `//` after its colon.
    if !is_scheme || !target[colon + 1..].starts_with(b"//") {
        return Err(FormError::Form);
    }
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return Err(FormError::Scheme);
    }
    let start = colon + 3;
    let end = target[start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(target.len(), |at| start + at);
    let authority = target.slice(start..end);
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error; §4.2.1: the host may
    // not be empty.
    if authority.is_empty() || authority.contains(&b'@') || !is_valid_host(&authority) {
        return Err(FormError::Authority);
    }
    let rest = target.slice(end..);
    let target = if rest.first() == Some(&b'/') {
        rest
    } else {
        // `http://a` and `http://a?q`: the path is `/`.
        let mut origin = Vec::with_capacity(rest.len() + 1);
        origin.push(b'/');
        origin.extend_from_slice(&rest);
        Bytes::from(origin)
    };
    Ok(Origin {
        target,
        authority: Some(authority),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The origin target and authority a form leaves, as text.
    type Left = Result<(String, Option<String>), FormError>;

    fn of(method: &str, target: &str) -> Left {
        origin(method.as_bytes(), Bytes::copy_from_slice(target.as_bytes())).map(|o| {
            (
                String::from_utf8_lossy(&o.target).into_owned(),
                o.authority
                    .map(|a| String::from_utf8_lossy(&a).into_owned()),
            )
        })
    }

    #[test]
    fn forms_are_told_apart() {
        let same = |t: &str| -> Left { Ok((t.to_owned(), None)) };
        let abs = |t: &str, a: &str| -> Left { Ok((t.to_owned(), Some(a.to_owned()))) };
        let cases: &[(&str, &str, Left)] = &[
            ("GET", "/a?b", same("/a?b")),
            ("OPTIONS", "*", same("*")),
            ("GET", "*", Err(FormError::Form)),
            ("OPTIONS", "*x", Err(FormError::Form)),
            ("GET", "http://a/deny/x", abs("/deny/x", "a")),
            ("GET", "HTTP://A:8080/x?q", abs("/x?q", "A:8080")),
            ("GET", "https://a", abs("/", "a")),
            ("GET", "http://a?q=1", abs("/?q=1", "a")),
            ("GET", "http://a#f", abs("/#f", "a")),
            ("GET", "http://[::1]:80/", abs("/", "[::1]:80")),
            ("GET", "ftp://a/x", Err(FormError::Scheme)),
            ("GET", "http://u@a/x", Err(FormError::Authority)),
            ("GET", "http:///x", Err(FormError::Authority)),
            ("GET", "http://a b/x", Err(FormError::Authority)),
            ("GET", "a:80", Err(FormError::Form)),
            ("GET", "a", Err(FormError::Form)),
            ("GET", "", Err(FormError::Form)),
            ("CONNECT", "a:443", Err(FormError::Connect)),
            ("CONNECT", "/x", Err(FormError::Connect)),
        ];
        for (method, target, want) in cases {
            assert_eq!(&of(method, target), want, "{method} {target}");
        }
    }
}
