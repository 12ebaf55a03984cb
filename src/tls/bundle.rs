//! One certificate bundle as uploaded to `/certificates/<name>`: the PEM text (leaf,
//! intermediates, private key), checked once when it arrives, and what it yields: the
//! rustls `CertifiedKey` a handshake presents, the names SNI selects it by, and Unit's
//! description of it (the private key is never part of that).

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde_json::{Map, Value, json};
use thiserror::Error;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey;

/// Why a PEM bundle is not a usable certificate chain; rendered as the detail of Unit's
/// `Invalid certificate.`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    #[error("the bundle is not readable PEM: {0}")]
    Pem(String),
    #[error("the bundle holds no certificate")]
    NoCertificate,
    #[error("the bundle holds no private key")]
    NoKey,
    #[error("the bundle holds more than one private key")]
    SeveralKeys,
    #[error("certificate {index} of the chain cannot be parsed: {reason}")]
    Certificate { index: usize, reason: String },
    #[error("the private key is not usable: {0}")]
    Key(String),
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
}

/// A checked bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle as uploaded, kept to store it and nothing else.
    pem: Vec<u8>,
    key: Arc<CertifiedKey>,
    /// The leaf's common names and DNS alternative names, lower case, for SNI.
    names: Vec<String>,
    /// When the first certificate of the chain to expire does, in Unix seconds.
    expires: i64,
    /// The leaf's `notBefore`, in Unix seconds.
    issued: i64,
    description: Value,
}

impl Bundle {
    /// Parses and checks a PEM bundle: at least one certificate (the first is the leaf),
    /// exactly one private key, and the key must be the leaf's.
    pub fn parse(pem: &[u8]) -> Result<Bundle, BundleError> {
        let mut chain = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            chain.push(item.map_err(|e| BundleError::Pem(e.to_string()))?);
        }
        if chain.is_empty() {
            return Err(BundleError::NoCertificate);
        }
        let mut keys = PrivateKeyDer::pem_slice_iter(pem);
        let key = match keys.next() {
            Some(Ok(key)) => key,
            Some(Err(e)) => return Err(BundleError::Pem(e.to_string())),
            None => return Err(BundleError::NoKey),
        };
        if keys.next().is_some() {
            return Err(BundleError::SeveralKeys);
        }
        let mut described = Vec::with_capacity(chain.len());
        let mut names = Vec::new();
        let mut key_type = String::new();
        let mut expires = i64::MAX;
        let mut issued = 0;
        for (index, der) in chain.iter().enumerate() {
            let (_, cert) =
                X509Certificate::from_der(der).map_err(|e| BundleError::Certificate {
                    index,
                    reason: e.to_string(),
                })?;
            let alt_names = dns_names(&cert);
            if index == 0 {
                key_type = describe_key(&cert);
                issued = cert.validity().not_before.timestamp();
                names = cert
                    .subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .chain(alt_names.iter().map(String::as_str))
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
            expires = expires.min(cert.validity().not_after.timestamp());
            described.push(describe_certificate(&cert, &alt_names));
        }
        let signing_key = default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| BundleError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(BundleError::KeyMismatch);
            }
            Err(e) => return Err(BundleError::Key(e.to_string())),
        }
        Ok(Bundle {
            pem: pem.to_vec(),
            key: Arc::new(certified),
            names,
            expires,
            issued,
            description: json!({"key": key_type, "chain": described}),
        })
    }

    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The names the leaf is valid for (CN and DNS SANs, wildcards as written).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The Unix time at which the bundle stops being valid: its chain's earliest
    /// `notAfter`, since an expired intermediate fails a handshake as surely as the leaf.
    pub fn expires(&self) -> i64 {
        self.expires
    }

    /// The leaf's `notBefore`, in Unix seconds.
    pub fn issued(&self) -> i64 {
        self.issued
    }

    /// Unit's description: `{"key": ..., "chain": [...]}`.
    pub fn description(&self) -> &Value {
        &self.description
    }
}

fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

/// One certificate of the chain as Unit describes it.
fn describe_certificate(cert: &X509Certificate<'_>, alt_names: &[String]) -> Value {
    let mut subject = describe_name(cert.subject());
    if !alt_names.is_empty() {
        subject.insert("alt_names".to_owned(), json!(alt_names));
    }
    let validity = cert.validity();
    json!({
        "subject": subject,
        "issuer": describe_name(cert.issuer()),
        "validity": {
            "since": openssl_time(validity.not_before.timestamp()),
            "until": openssl_time(validity.not_after.timestamp()),
        },
    })
}

fn describe_name(name: &X509Name<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    let members = [
        ("common_name", first(name.iter_common_name())),
        ("country", first(name.iter_country())),
        ("state_or_province", first(name.iter_state_or_province())),
        ("organization", first(name.iter_organization())),
    ];
    for (member, value) in members {
        if let Some(value) = value {
            out.insert(member.to_owned(), Value::String(value));
        }
    }
    out
}

/// The first attribute of a kind that is a string.
fn first<'a>(
    mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    attrs.find_map(|a| a.as_str().ok().map(str::to_owned))
}

/// OpenSSL's `ASN1_TIME_print` layout, which Unit reports: `Jan  2 03:04:05 2026 GMT`.
fn openssl_time(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0).map_or_else(
        || timestamp.to_string(),
        |t| t.format("%b %e %H:%M:%S %Y GMT").to_string(),
    )
}

/// The leaf's key as Unit names it: `RSA (2048 bits)`, `ECDSA (prime256v1)`.
fn describe_key(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA ({} bits)", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            let name = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "prime256v1",
                Some("1.3.132.0.34") => "secp384r1",
                Some("1.3.132.0.35") => "secp521r1",
                Some(other) => return format!("ECDSA ({other})"),
                None => "unknown curve",
            };
            format!("ECDSA ({name})")
        }
        Ok(PublicKey::DSA(y)) => format!("DSA ({} bits)", y.len() * 8),
        _ => match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "Ed25519".to_owned(),
            "1.3.101.113" => "Ed448".to_owned(),
            other => format!("unknown ({other})"),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA-signed leaf for `names`, as one PEM bundle (leaf, CA, key).
    pub(crate) fn bundle_pem(names: &[&str]) -> String {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Wharf Test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        let leaf = params.signed_by(&key, &issuer).expect("leaf");
        format!("{}{}{}", leaf.pem(), ca_cert.pem(), key.serialize_pem())
    }

    #[test]
    fn describes_the_chain_like_unit() {
        let bundle = Bundle::parse(bundle_pem(&["a.test", "*.b.test"]).as_bytes()).expect("ok");
        let d = bundle.description();
        assert_eq!(d["key"], "ECDSA (prime256v1)");
        assert_eq!(d["chain"][0]["subject"]["common_name"], "a.test");
        assert_eq!(d["chain"][0]["subject"]["country"], "DE");
        assert_eq!(
            d["chain"][0]["subject"]["alt_names"],
            json!(["a.test", "*.b.test"])
        );
        assert_eq!(d["chain"][0]["issuer"]["common_name"], "Wharf Test CA");
        assert_eq!(d["chain"][1]["subject"]["common_name"], "Wharf Test CA");
        assert!(
            d["chain"][0]["validity"]["since"]
                .as_str()
                .is_some_and(|s| s.ends_with(" GMT"))
        );
        assert_eq!(bundle.names(), ["a.test", "a.test", "*.b.test"]);
    }

    #[test]
    fn refuses_what_is_not_a_usable_bundle() {
        let pem = bundle_pem(&["a.test"]);
        let key_at = pem.find("-----BEGIN PRIVATE KEY").expect("key");
        assert_eq!(
            Bundle::parse(&pem.as_bytes()[..key_at]).err(),
            Some(BundleError::NoKey)
        );
        assert_eq!(
            Bundle::parse(&pem.as_bytes()[key_at..]).err(),
            Some(BundleError::NoCertificate)
        );
        let other = bundle_pem(&["b.test"]);
        let other_key = &other[other.find("-----BEGIN PRIVATE KEY").expect("key")..];
        let mismatched = format!("{}{other_key}", &pem[..key_at]);
        assert_eq!(
            Bundle::parse(mismatched.as_bytes()).err(),
            Some(BundleError::KeyMismatch)
        );
        assert_eq!(
            Bundle::parse(b"hello").err(),
            Some(BundleError::NoCertificate)
        );
        let truncated = &pem[..pem.len() / 3];
        assert!(matches!(
            Bundle::parse(truncated.as_bytes()),
            Err(BundleError::Pem(_))
        ));
    }
}
