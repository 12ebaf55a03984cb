//! The address of a `proxy` action or an upstream server, parsed as Unit does:
//! `http://` and an IPv4 address with a port, an IPv6 one in brackets with a port, or
//! `unix:` and an absolute socket path.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Address {
    /// A `proxy` value (`http://127.0.0.1:8080`, `http://[::1]:8080`,
    /// `http://unix:/run/app.sock`).
    pub fn parse_url(text: &str) -> Result<Address, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("\"{text}\" must start with \"http://\""))?;
        Address::parse_server(rest)
    }

    /// An upstream server's name (`127.0.0.1:8080`, `[::1]:8080`, `unix:/path`).
    pub fn parse_server(text: &str) -> Result<Address, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(format!(
                    "\"{text}\": a unix: address needs an absolute socket path"
                ));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>().map(Address::Tcp).map_err(|_| {
            format!(
                "\"{text}\" is not an IP address with a port (\"127.0.0.1:8080\", \"[::1]:8080\") \
                 nor \"unix:/path\""
            )
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(address) => write!(f, "{address}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_three_forms_and_refuses_the_rest() {
        assert_eq!(
            Address::parse_url("http://127.0.0.1:8080"),
            Ok(Address::Tcp("127.0.0.1:8080".parse().expect("addr")))
        );
        assert_eq!(
            Address::parse_url("http://[::1]:8080"),
            Ok(Address::Tcp("[::1]:8080".parse().expect("addr")))
        );
        assert_eq!(
            Address::parse_url("http://unix:/run/a.sock"),
            Ok(Address::Unix("/run/a.sock".into()))
        );
        for bad in [
            "https://127.0.0.1:1",
            "http://127.0.0.1",
            "http://localhost:80",
            "http://unix:relative",
            "http://[::1]",
            "127.0.0.1:80",
        ] {
            assert!(Address::parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Address::parse_server("[::1]:1").map(|a| a.to_string()),
            Ok("[::1]:1".to_owned())
        );
    }
}
