//! Unit's `conf_commands` (OpenSSL's `SSL_CONF_cmd`, file form, names case-insensitive)
//! mapped onto rustls. Only commands with a faithful rustls meaning are accepted:
//! protocol bounds, TLS 1.3 and TLS 1.2 cipher suites, key exchange groups and server
//! preference. Any other command, or a value rustls cannot honour, is an error naming
//! it: ignoring it would leave the listener less strict than its config says.

use rustls::crypto::SupportedKxGroup;
use rustls::crypto::ring::{ALL_CIPHER_SUITES, ALL_KX_GROUPS, cipher_suite, kx_group};
use rustls::{CipherSuite, ProtocolVersion, SupportedCipherSuite};
use serde_json::Value;

/// What `conf_commands` make of rustls's defaults.
#[derive(Debug, Clone)]
pub struct Commands {
    pub tls12: bool,
    pub tls13: bool,
    pub cipher_suites: Vec<SupportedCipherSuite>,
    pub kx_groups: Vec<&'static dyn SupportedKxGroup>,
    pub server_preference: bool,
}

impl Default for Commands {
    fn default() -> Self {
        Self {
            tls12: true,
            tls13: true,
            cipher_suites: ALL_CIPHER_SUITES.to_vec(),
            kx_groups: ALL_KX_GROUPS.to_vec(),
            server_preference: false,
        }
    }
}

/// The commands Wharf maps, for the error that names an unknown one.
const KNOWN: &str = "MinProtocol, MaxProtocol, Protocol, Ciphersuites, CipherString, \
                     Groups (or Curves), Options (ServerPreference only)";

/// OpenSSL's names of the TLS 1.2 suites rustls (with ring) implements.
const TLS12_SUITES: [(&str, CipherSuite); 6] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

const TLS13_SUITES: [(&str, SupportedCipherSuite); 3] = [
    (
        "TLS_AES_128_GCM_SHA256",
        cipher_suite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// Reads `conf_commands` (an object of strings, as the schema says); the error is the
/// offending command's name (as written) and why.
pub fn from_config(commands: Option<&Value>) -> Result<Commands, (String, String)> {
    let mut out = Commands::default();
    let Some(commands) = commands.and_then(Value::as_object) else {
        return Ok(out);
    };
    let mut min: Option<ProtocolVersion> = None;
    let mut max: Option<ProtocolVersion> = None;
    let mut tls13_suites: Option<Vec<SupportedCipherSuite>> = None;
    let mut tls12_suites: Option<Vec<SupportedCipherSuite>> = None;
    for (name, value) in commands {
        let value = value.as_str().unwrap_or_default();
        let fail = |why: String| (name.clone(), why);
        match name.to_ascii_lowercase().as_str() {
            "minprotocol" => min = Some(protocol(value).map_err(fail)?),
            "maxprotocol" => max = Some(protocol(value).map_err(fail)?),
            "protocol" => protocol_list(value, &mut out).map_err(fail)?,
            "ciphersuites" => tls13_suites = Some(tls13(value).map_err(fail)?),
            "cipherstring" => tls12_suites = Some(tls12(value).map_err(fail)?),
            "groups" | "curves" => out.kx_groups = groups(value).map_err(fail)?,
            "options" => options(value, &mut out).map_err(fail)?,
            _ => {
                return Err(fail(format!(
                    "is not a command Wharf can map onto rustls; supported: {KNOWN}"
                )));
            }
        }
    }
    if let Some(min) = min {
        out.tls12 &= min == ProtocolVersion::TLSv1_2;
    }
    if let Some(max) = max {
        out.tls13 &= max == ProtocolVersion::TLSv1_3;
    }
    if !out.tls12 && !out.tls13 {
        // Not one command's fault: the error is about `conf_commands` as a whole.
        return Err((
            String::new(),
            "the commands leave no protocol version enabled".to_owned(),
        ));
    }
    let default = |v13: bool| {
        ALL_CIPHER_SUITES
            .iter()
            .copied()
            .filter(move |s| matches!(s, SupportedCipherSuite::Tls13(_)) == v13)
            .collect::<Vec<_>>()
    };
    let tls13_suites = tls13_suites.unwrap_or_else(|| default(true));
    let tls12_suites = tls12_suites.unwrap_or_else(|| default(false));
    out.cipher_suites = Vec::new();
    if out.tls13 {
        out.cipher_suites.extend(tls13_suites);
    }
    if out.tls12 {
        out.cipher_suites.extend(tls12_suites);
    }
    Ok(out)
}

fn protocol(value: &str) -> Result<ProtocolVersion, String> {
    match value {
        "TLSv1.2" => Ok(ProtocolVersion::TLSv1_2),
        "TLSv1.3" => Ok(ProtocolVersion::TLSv1_3),
        "SSLv3" | "TLSv1" | "TLSv1.1" | "None" => Err(format!(
            "\"{value}\" cannot be honoured: rustls speaks TLSv1.2 and TLSv1.3 only"
        )),
        _ => Err(format!(
            "\"{value}\" is not a protocol version; use \"TLSv1.2\" or \"TLSv1.3\""
        )),
    }
}

/// `Protocol`: `-TLSv1.2`, `TLSv1.3`, `ALL,-TLSv1.2`... over the versions rustls has;
/// turning off a version rustls never offers is fine, turning one on is an error.
fn protocol_list(value: &str, out: &mut Commands) -> Result<(), String> {
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (on, version) = match item.as_bytes().first() {
            Some(b'-') => (false, &item[1..]),
            Some(b'+') => (true, &item[1..]),
            _ => (true, item),
        };
        match version {
            "ALL" => {
                out.tls12 = on;
                out.tls13 = on;
            }
            "TLSv1.2" => out.tls12 = on,
            "TLSv1.3" => out.tls13 = on,
            "SSLv3" | "TLSv1" | "TLSv1.1" if !on => {}
            _ => {
                return Err(format!(
                    "\"{item}\" cannot be honoured: rustls speaks TLSv1.2 and TLSv1.3 only"
                ));
            }
        }
    }
    Ok(())
}

fn tls13(value: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(|name| {
            TLS13_SUITES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    let known: Vec<&str> = TLS13_SUITES.iter().map(|(n, _)| *n).collect();
                    format!(
                        "\"{name}\" is not a TLS 1.3 suite rustls implements; use {}",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

/// `CipherString`, as a list of exact suite names: OpenSSL's selection language
/// (`HIGH`, `!aNULL`, ...) has no rustls meaning and is refused rather than guessed.
fn tls12(value: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(|name| {
            let suite = TLS12_SUITES
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, id)| ALL_CIPHER_SUITES.iter().find(|s| s.suite() == *id));
            suite.copied().ok_or_else(|| {
                let known: Vec<&str> = TLS12_SUITES.iter().map(|(n, _)| *n).collect();
                format!(
                    "\"{name}\" is not a TLS 1.2 suite rustls implements (OpenSSL's \
                     selection keywords are not supported); list suites from {}",
                    known.join(", ")
                )
            })
        })
        .collect()
}

fn groups(value: &str) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            "X25519" | "x25519" => Ok(kx_group::X25519),
            "P-256" | "prime256v1" | "secp256r1" => Ok(kx_group::SECP256R1),
            "P-384" | "secp384r1" => Ok(kx_group::SECP384R1),
            _ => Err(format!(
                "\"{name}\" is not a group rustls implements; use X25519, P-256 or P-384"
            )),
        })
        .collect()
}

fn options(value: &str, out: &mut Commands) -> Result<(), String> {
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "ServerPreference" => out.server_preference = true,
            "-ServerPreference" => out.server_preference = false,
            _ => {
                return Err(format!(
                    "the option \"{item}\" has no rustls equivalent; only ServerPreference \
                     is supported"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_protocol_bounds_and_suites() {
        let c = from_config(Some(&json!({
            "MinProtocol": "TLSv1.3",
            "ciphersuites": "TLS_AES_256_GCM_SHA384",
            "Groups": "X25519",
        })))
        .expect("ok");
        assert!(c.tls13 && !c.tls12);
        assert_eq!(
            c.cipher_suites,
            vec![cipher_suite::TLS13_AES_256_GCM_SHA384]
        );
        assert_eq!(c.kx_groups.len(), 1);
        let c = from_config(Some(&json!({
            "MaxProtocol": "TLSv1.2",
            "CipherString": "ECDHE-ECDSA-AES128-GCM-SHA256",
            "Options": "ServerPreference",
        })))
        .expect("ok");
        assert!(c.tls12 && !c.tls13 && c.server_preference);
        assert_eq!(c.cipher_suites.len(), 1);
        let c = from_config(Some(&json!({"Protocol": "-TLSv1.1,-TLSv1.2"}))).expect("ok");
        assert!(c.tls13 && !c.tls12);
    }

    #[test]
    fn refuses_what_rustls_cannot_honour_naming_it() {
        let refused = |commands: Value| from_config(Some(&commands)).err().map(|(n, _)| n);
        assert_eq!(
            refused(json!({"SignatureAlgorithms": "x"})),
            Some("SignatureAlgorithms".to_owned())
        );
        assert_eq!(
            refused(json!({"MinProtocol": "TLSv1"})),
            Some("MinProtocol".to_owned())
        );
        assert_eq!(
            refused(json!({"CipherString": "HIGH:!aNULL"})),
            Some("CipherString".to_owned())
        );
        assert_eq!(refused(json!({"Protocol": "-ALL"})), Some(String::new()));
        assert_eq!(
            refused(json!({"Options": "NoTicket"})),
            Some("Options".to_owned())
        );
    }
}
