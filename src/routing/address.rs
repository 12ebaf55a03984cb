//! Address patterns of `source` and `destination` (Unit's `nxt_http_route_addr.c`):
//! `"unix"`, `"*:ports"`, or an IPv4/IPv6 address, range (`a-b`) or CIDR block with
//! optional ports (`:p` or `:p-q`; IPv6 in brackets then). A leading `!` negates. An
//! array checks negatives first, like string patterns, but an empty array never matches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("is not a valid address pattern")]
    Format,
    #[error("has a CIDR prefix out of range")]
    Cidr,
    #[error("has a port out of range or a port range whose start exceeds its end")]
    Port,
    #[error("has an address range whose start exceeds its end")]
    Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
    Unix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addresses {
    Any,
    /// Inclusive range (an exact address is a range of one).
    Range(u128, u128),
    /// `address & mask == base`.
    Cidr {
        base: u128,
        mask: u128,
    },
}

/// One compiled address pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPattern {
    negative: bool,
    family: Family,
    addresses: Addresses,
    ports: (u16, u16),
}

impl AddressPattern {
    pub fn parse(text: &str) -> Result<AddressPattern, AddressError> {
        let (negative, text) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut pattern = AddressPattern {
            negative,
            family: Family::Any,
            addresses: Addresses::Any,
            ports: (0, u16::MAX),
        };
        if text == "unix" {
            pattern.family = Family::Unix;
            return Ok(pattern);
        }
        if text.len() < 2 {
            return Err(AddressError::Format);
        }
        if let Some(ports) = text.strip_prefix("*:") {
            pattern.ports = parse_ports(ports)?;
            return Ok(pattern);
        }
        let (addresses, ports) = if text.starts_with('[') || text.matches(':').count() > 1 {
            pattern.family = Family::V6;
            match text.strip_prefix('[') {
                Some(rest) => {
                    let (addresses, ports) = rest.rsplit_once("]:").ok_or(AddressError::Format)?;
                    (addresses, Some(ports))
                }
                None => (text, None),
            }
        } else {
            pattern.family = Family::V4;
            match text.split_once(':') {
                Some((addresses, ports)) => (addresses, Some(ports)),
                None => (text, None),
            }
        };
        let v6 = pattern.family == Family::V6;
        pattern.addresses = parse_addresses(addresses, v6)?;
        if let Some(ports) = ports {
            pattern.ports = parse_ports(ports)?;
        }
        Ok(pattern)
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the address matches the pattern itself (negation not applied); `None` is
    /// a Unix socket peer.
    fn matches(&self, address: Option<SocketAddr>) -> bool {
        let Some(address) = address else {
            return self.family == Family::Unix;
        };
        let (family, value) = match address.ip() {
            IpAddr::V4(ip) => (Family::V4, u128::from(u32::from(ip))),
            IpAddr::V6(ip) => (Family::V6, u128::from(ip)),
        };
        if self.family != Family::Any && self.family != family {
            return false;
        }
        let port = address.port();
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        match self.addresses {
            Addresses::Any => true,
            Addresses::Range(start, end) => (start..=end).contains(&value),
            Addresses::Cidr { base, mask } => value & mask == base,
        }
    }
}

fn parse_ip(text: &str, v6: bool) -> Result<u128, AddressError> {
    if v6 {
        // Unit also refuses a group of more than four hex digits.
        if text
            .split(':')
            .any(|group| group.len() > 4 && !group.contains('.'))
        {
            return Err(AddressError::Format);
        }
        text.parse::<Ipv6Addr>()
            .map(u128::from)
            .map_err(|_| AddressError::Format)
    } else {
        text.parse::<Ipv4Addr>()
            .map(|ip| u128::from(u32::from(ip)))
            .map_err(|_| AddressError::Format)
    }
}

fn parse_addresses(text: &str, v6: bool) -> Result<Addresses, AddressError> {
    let bits: u32 = if v6 { 128 } else { 32 };
    if let Some((start, end)) = text.split_once('-') {
        let (start, end) = (parse_ip(start, v6)?, parse_ip(end, v6)?);
        if start > end {
            return Err(AddressError::Range);
        }
        return Ok(Addresses::Range(start, end));
    }
    if let Some((base, prefix)) = text.split_once('/') {
        let prefix: u32 = parse_decimal(prefix)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p <= bits)
            .ok_or(AddressError::Cidr)?;
        let base = parse_ip(base, v6)?;
        if prefix == 0 {
            return Ok(Addresses::Any);
        }
        let all: u128 = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        let mask = all & !(all >> prefix);
        return Ok(Addresses::Cidr {
            base: base & mask,
            mask,
        });
    }
    let ip = parse_ip(text, v6)?;
    Ok(Addresses::Range(ip, ip))
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_ports(text: &str) -> Result<(u16, u16), AddressError> {
    let port = |t: &str| {
        parse_decimal(t)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or(AddressError::Port)
    };
    if text.is_empty() {
        return Err(AddressError::Format);
    }
    // A '-' in the last place is not a range (Unit looks before it only).
    match text[..text.len() - 1].find('-') {
        Some(at) => {
            let (start, end) = (port(&text[..at])?, port(&text[at + 1..])?);
            if start > end {
                return Err(AddressError::Port);
            }
            Ok((start, end))
        }
        None => Ok((port(text)?, port(text)?)),
    }
}

/// A `source` or `destination` condition.
#[derive(Debug)]
pub struct AddressRule {
    /// Negative patterns first.
    patterns: Box<[AddressPattern]>,
}

impl AddressRule {
    pub fn new(mut patterns: Vec<AddressPattern>) -> AddressRule {
        patterns.sort_by_key(|p| !p.negative);
        AddressRule {
            patterns: patterns.into_boxed_slice(),
        }
    }

    /// Unit's `nxt_http_route_addr_rule`.
    pub fn test(&self, address: Option<SocketAddr>) -> bool {
        let Some(last) = self.patterns.last() else {
            return false;
        };
        for pattern in &*self.patterns {
            let matches = pattern.matches(address) ^ pattern.negative;
            if pattern.negative {
                if !matches {
                    return false;
                }
            } else if matches {
                return true;
            }
        }
        last.negative
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(patterns: &[&str]) -> AddressRule {
        AddressRule::new(
            patterns
                .iter()
                .map(|p| AddressPattern::parse(p).expect("parses"))
                .collect(),
        )
    }

    fn at(text: &str) -> Option<SocketAddr> {
        Some(text.parse().expect("socket address"))
    }

    #[test]
    fn ipv4_forms() {
        assert!(rule(&["127.0.0.1"]).test(at("127.0.0.1:5000")));
        assert!(!rule(&["127.0.0.1"]).test(at("127.0.0.2:5000")));
        assert!(rule(&["10.0.0.0/8"]).test(at("10.200.1.1:1")));
        assert!(!rule(&["10.0.0.0/8"]).test(at("11.0.0.1:1")));
        assert!(rule(&["10.1.2.3/8"]).test(at("10.9.9.9:1")));
        assert!(rule(&["0.0.0.0/0"]).test(at("8.8.8.8:1")));
        assert!(rule(&["1.1.1.1/32"]).test(at("1.1.1.1:1")));
        assert!(rule(&["10.0.0.5-10.0.0.9"]).test(at("10.0.0.9:1")));
        assert!(!rule(&["10.0.0.5-10.0.0.9"]).test(at("10.0.0.10:1")));
        assert!(rule(&["127.0.0.1:80-90"]).test(at("127.0.0.1:85")));
        assert!(!rule(&["127.0.0.1:80-90"]).test(at("127.0.0.1:91")));
        assert!(rule(&["127.0.0.1:80"]).test(at("127.0.0.1:80")));
        // A v4 pattern never matches a v6 peer.
        assert!(!rule(&["0.0.0.0/0"]).test(at("[::1]:80")));
    }

    #[test]
    fn ipv6_forms() {
        assert!(rule(&["::1"]).test(at("[::1]:80")));
        assert!(rule(&["[::1]:80"]).test(at("[::1]:80")));
        assert!(!rule(&["[::1]:81"]).test(at("[::1]:80")));
        assert!(rule(&["2001:db8::/32"]).test(at("[2001:db8:1::5]:1")));
        assert!(!rule(&["2001:db8::/32"]).test(at("[2001:db9::5]:1")));
        assert!(rule(&["::1-::5"]).test(at("[::3]:1")));
        assert!(rule(&["[::/0]:1-10"]).test(at("[fe80::1]:5")));
        assert!(!rule(&["::1"]).test(at("127.0.0.1:80")));
    }

    #[test]
    fn any_unix_and_negation() {
        assert!(rule(&["*:80"]).test(at("1.2.3.4:80")));
        assert!(rule(&["*:80"]).test(at("[::2]:80")));
        assert!(!rule(&["*:80"]).test(at("1.2.3.4:81")));
        assert!(rule(&["unix"]).test(None));
        assert!(!rule(&["unix"]).test(at("1.2.3.4:80")));
        assert!(!rule(&["*:0-65535"]).test(None));
        assert!(rule(&["!10.0.0.0/8"]).test(at("1.1.1.1:1")));
        assert!(!rule(&["!10.0.0.0/8"]).test(at("10.1.1.1:1")));
        // A negative of another family does not exclude.
        assert!(rule(&["!10.0.0.0/8"]).test(at("[::1]:1")));
        assert!(rule(&["!10.0.0.1", "10.0.0.0/8"]).test(at("10.0.0.2:1")));
        assert!(!rule(&["10.0.0.0/8", "!10.0.0.1"]).test(at("10.0.0.1:1")));
        assert!(!rule(&["!10.0.0.1", "11.0.0.0/8"]).test(at("12.0.0.1:1")));
        assert!(!rule(&[]).test(at("1.1.1.1:1")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for (text, error) in [
            ("10.0.0.9-10.0.0.5", AddressError::Range),
            ("::5-::1", AddressError::Range),
            ("10.0.0.0/33", AddressError::Cidr),
            ("::/129", AddressError::Cidr),
            ("1.2.3.4:90-80", AddressError::Port),
            ("1.2.3.4:65536", AddressError::Port),
            ("*:", AddressError::Format),
            ("1.2.3", AddressError::Format),
            ("1", AddressError::Format),
            ("[::1]", AddressError::Format),
            ("12345::1", AddressError::Format),
            ("1.2.3.4:", AddressError::Format),
        ] {
            assert_eq!(AddressPattern::parse(text), Err(error), "{text}");
        }
    }
}
