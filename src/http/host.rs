//! The request's host and addresses as Unit derives them, once per request: the host
//! name routing matches, `$host` names and guests are told (`SERVER_NAME`), and the
//! text of the client's and the local address.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use bytes::Bytes;

/// Whether a `Host` value (or an absolute-form target's authority) is `uri-host
/// [":" port]` (RFC 9112 §3.2, RFC 3986 §3.2.2): an IPv6 literal in brackets, or a name
/// of unreserved, sub-delim and `%` bytes without an empty label (`a..b`, which Unit
/// refuses too), then a port of digits. Empty is valid: a client with no authority to
/// name sends an empty `Host`. Stricter than Unit, which refuses only `/` and `..`.
pub fn is_valid_host(value: &[u8]) -> bool {
    let (name, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = std::str::from_utf8(&value[1..close]).unwrap_or_default();
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        (&b""[..], &value[close + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &b""[..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    let name_ok = name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
        && !name.windows(2).any(|pair| pair == b"..");
    port_ok && name_ok
}

/// The name in a `Host` value, as Unit's `nxt_http_validate_host` leaves it: the port
/// dropped (after the `]` of an IPv6 literal, else from the first `:`), then one final
/// dot, and the rest lowercased. A slice of `value` unless it had capitals.
pub fn host_name(value: &Bytes) -> Bytes {
    let mut end = value.len();
    if value.first() == Some(&b'[') {
        if let Some(close) = value.iter().position(|&b| b == b']') {
            end = close + 1;
        }
    } else if let Some(colon) = value.iter().position(|&b| b == b':') {
        end = colon;
    }
    if end > 0 && value[end - 1] == b'.' {
        end -= 1;
    }
    let name = &value[..end];
    if name.iter().any(u8::is_ascii_uppercase) {
        Bytes::from(name.to_ascii_lowercase())
    } else {
        value.slice(..end)
    }
}

/// Appends an address's IP as Unit writes it (IPv6 without brackets, `unix:` for a Unix
/// socket) and returns where it lies in `buf`.
pub fn push_ip(buf: &mut Vec<u8>, address: Option<SocketAddr>) -> Range<usize> {
    let start = buf.len();
    match address.map(|a| a.ip()) {
        None => buf.extend_from_slice(b"unix:"),
        Some(IpAddr::V4(ip)) => {
            // Written into a fixed array and appended at once: pushing byte by byte
            // checks the vector's capacity at every byte.
            let mut text = [0u8; 15];
            let mut len = 0;
            let mut put = |byte: u8| {
                text[len] = byte;
                len += 1;
            };
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            buf.extend_from_slice(&text[..len]);
        }
        Some(ip @ IpAddr::V6(_)) => buf.extend_from_slice(ip.to_string().as_bytes()),
    }
    start..buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_as_in_unit() {
        for (value, name) in [
            ("example.com", "example.com"),
            ("Example.COM:8080", "example.com"),
            ("Example.COM.:8080", "example.com"),
            ("example.com.", "example.com"),
            ("example.com..", "example.com."),
            ("[::1]:80", "[::1]"),
            ("[FE80::1]", "[fe80::1]"),
            ("localhost:", "localhost"),
            (":80", ""),
            (".", ""),
            ("", ""),
            ("plain", "plain"),
        ] {
            let value = Bytes::copy_from_slice(value.as_bytes());
            assert_eq!(&host_name(&value)[..], name.as_bytes(), "{value:?}");
        }
    }

    #[test]
    fn hosts_are_validated() {
        for good in [
            "example.com",
            "a:80",
            "a:",
            "",
            ":80",
            "[::1]",
            "[::1]:8080",
            "xn--bcher-kva.example",
            "a_b.c",
            "127.0.0.1:80",
            "a.",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a/b", "a b", "user@a", "a:8x", "a:80:81", "a..b", "[::1", "[zz]", "[::1]x", "a\\b",
            "a\tb", "a\u{1}b", "é",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn addresses_read_like_their_display() {
        for text in [
            "127.0.0.1:8080",
            "10.0.255.9:0",
            "[::1]:443",
            "[fe80::1:2]:65535",
        ] {
            let address: SocketAddr = text.parse().expect("a test address");
            let mut buf = Vec::new();
            let ip = push_ip(&mut buf, Some(address));
            assert_eq!(buf[ip].to_vec(), address.ip().to_string().into_bytes());
        }
        let mut buf = b"x".to_vec();
        let unix = push_ip(&mut buf, None);
        assert_eq!(&buf[unix], b"unix:");
    }
}
