//! A listener's `tls:` (with `protocol: HTTPS`): its certificates, read and
//! checked when the configuration loads, so a missing, unreadable,
//! mismatched, expired or not-yet-valid certificate or key is a `validate`
//! error naming the file. The names a certificate answers for (SNI) come
//! from the certificate itself: its DNS subject alternative names, else its
//! common name.

use super::decode::{join, Decoder};
use super::fields::{f, Field, Ty, BOOL};
use super::yaml::Node;
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::X509;
use std::path::PathBuf;

/// PEM data as configured: read from a file at every load, or written
/// inline (Flex's `tls` policies). Compared by content; shown (`Debug`,
/// `/config`) by its source only, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    /// The file path, or where the inline text is (`<inline: FIELD>`).
    pub source: String,
    pub bytes: std::sync::Arc<Vec<u8>>,
}

impl Pem {
    pub fn read(path: &str) -> Result<Pem, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Ok(Pem {
            source: path.to_string(),
            bytes: std::sync::Arc::new(bytes),
        })
    }

    pub fn inline(field: &str, text: &str) -> Pem {
        Pem {
            source: format!("<inline: {field}>"),
            bytes: std::sync::Arc::new(text.as_bytes().to_vec()),
        }
    }

    /// The certificates it holds, in order.
    pub fn certificates(&self) -> Result<Vec<X509>, String> {
        X509::stack_from_pem(&self.bytes)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("{} holds no PEM certificate", self.source))
    }

    pub fn private_key(&self) -> Result<PKey<openssl::pkey::Private>, String> {
        PKey::private_key_from_pem(&self.bytes)
            .map_err(|_| format!("{} holds no PEM private key", self.source))
    }
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl serde::Serialize for Pem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A file path, or PEM text itself (Flex writes certificates inline).
pub fn pem_or_file(field: &str, text: &str) -> Result<Pem, String> {
    if text.trim_start().starts_with("-----BEGIN") {
        Ok(Pem::inline(field, text))
    } else {
        Pem::read(text)
    }
}

/// The TLS side of an HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The first is the default (no SNI, or a name no certificate has).
    pub certificates: Vec<Certificate>,
    pub min_version: TlsVersion,
    pub clients: Option<ClientCertificates>,
    /// Offer HTTP/2 by ALPN (`h2`).
    pub h2: bool,
    /// Offer HTTP/1.1 by ALPN (`http/1.1`).
    pub h1: bool,
    /// The highest version offered (default: TLS 1.3).
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher list (OpenSSL syntax), `None`: OpenSSL's
    /// intermediate profile.
    pub ciphers: Option<String>,
    /// TLS 1.3 cipher suites, `None`: OpenSSL's defaults.
    pub ciphersuites: Option<String>,
}

/// Mutual TLS: client certificates verified against `ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificates {
    pub ca: Pem,
    /// A handshake without a certificate fails; `false`: a certificate is
    /// verified when presented.
    pub required: bool,
    /// The verified subject goes upstream in this header (a copy the client
    /// sent is removed either way).
    pub forward_header: Option<http::HeaderName>,
    /// SHA-256 of the CA file as read.
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// PEM: the certificate, then its chain.
    pub cert: Pem,
    /// PEM private key (RSA, EC, Ed25519).
    pub key: Pem,
    /// Lower-case names it serves (`api.example.com`, `*.example.com`).
    pub names: Vec<String>,
    /// SHA-256 of the two files as read: a reload with renewed files
    /// differs, so the listener's contexts are rebuilt.
    pub fingerprint: [u8; 32],
}

pub const TLS_FIELDS: &[Field] = &[
    f("certificates", Ty::List(&Ty::Obj(CERT_FIELDS), false))
        .req()
        .doc("Certificate and key pairs; the one whose names match the SNI is served."),
    f("minVersion", VERSION).default("\"1.2\""),
    f("maxVersion", VERSION).default("\"1.3\""),
    f(
        "ciphers",
        Ty::List(&Ty::Text("a cipher name (IANA or OpenSSL)"), true),
    ),
    f("clientCertificates", Ty::Obj(CLIENT_FIELDS)).doc("Mutual TLS: verify client certificates."),
    f("alpn", Ty::List(&Ty::Enum(&["h2", "http/1.1"]), true)).default("[\"h2\", \"http/1.1\"]"),
];
/// `"1.2"` or `"1.3"` (also unquoted: YAML reads a number).
pub const VERSION: Ty = Ty::Either(&[Ty::Enum(&["1.2", "1.3"]), Ty::Number(1.2, 1.3)]);

/// IANA cipher names (as Flex and most documentation write them) and
/// OpenSSL's names for them: the TLS 1.2 suites with forward secrecy and
/// AEAD or CBC, and the RSA-key-exchange ones Flex's examples list.
const IANA_CIPHERS: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        "ECDHE-ECDSA-AES256-SHA",
    ),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"),
];

/// TLS 1.3 suites (set apart from the TLS 1.2 list in OpenSSL).
const TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Cipher names (IANA or OpenSSL) as OpenSSL's TLS 1.2 cipher list and
/// TLS 1.3 suite list; each name is checked against this OpenSSL.
pub fn cipher_lists(names: &[String]) -> Result<(Option<String>, Option<String>), String> {
    use openssl::ssl::{SslContextBuilder, SslMethod};
    let mut tls12 = Vec::new();
    let mut tls13 = Vec::new();
    for name in names {
        if TLS13_SUITES.contains(&name.as_str()) {
            tls13.push(name.clone());
            continue;
        }
        let openssl = IANA_CIPHERS
            .iter()
            .find(|(iana, _)| iana == name)
            .map_or(name.as_str(), |(_, o)| o);
        let mut probe = SslContextBuilder::new(SslMethod::tls()).map_err(|e| e.to_string())?;
        if openssl.contains([':', ',', ' ', '!']) || probe.set_cipher_list(openssl).is_err() {
            return Err(format!("unknown cipher {name:?} (IANA names like TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, or OpenSSL names)"));
        }
        tls12.push(openssl.to_string());
    }
    let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(":"));
    Ok((join(tls12), join(tls13)))
}

/// `"1.2"` / `"1.3"`.
pub fn tls_version(text: &str) -> Option<TlsVersion> {
    match text {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        _ => None,
    }
}
const CLIENT_FIELDS: &[Field] = &[
    f("ca", Ty::Text("a PEM file or inline PEM")).req(),
    f("required", BOOL).default("true"),
    f("forwardHeader", Ty::Name("a header name"))
        .doc("Send the client certificate's subject upstream in this header."),
];
const CERT_FIELDS: &[Field] = &[
    f("cert", Ty::Text("a PEM file")).req(),
    f("key", Ty::Text("a PEM file")).req(),
];

/// A CA bundle (`clientCertificates.ca`, a service's `tls.ca`, Flex's
/// `trustedCA`): a file or inline PEM, holding at least one certificate.
pub fn read_ca_bundle(field: &str, text: &str) -> Result<Pem, String> {
    let pem = pem_or_file(field, text)?;
    pem.certificates()?;
    Ok(pem)
}

impl Certificate {
    /// A certificate and its key, checked together ([`check_pair`]).
    pub fn new(cert: Pem, key: Pem) -> Result<Certificate, (bool, String)> {
        let (names, fingerprint) = check_pair(&cert, &key)?;
        Ok(Certificate {
            cert,
            key,
            names,
            fingerprint,
        })
    }

    /// Read from the two files and checked together; the error says which
    /// file is at fault (`true`: the certificate's).
    pub fn read(cert: &str, key: &str) -> Result<Certificate, (bool, String)> {
        let cert = Pem::read(cert).map_err(|e| (true, e))?;
        let key = Pem::read(key).map_err(|e| (false, e))?;
        Certificate::new(cert, key)
    }
}

/// `ciphers: [...]` (IANA or OpenSSL names) as the TLS 1.2 list and the
/// TLS 1.3 suites; none given: OpenSSL's defaults.
pub fn decode_ciphers(
    d: &mut Decoder,
    node: Option<&Node>,
    path: &str,
) -> (Option<String>, Option<String>) {
    let Some(n) = node else {
        return (None, None);
    };
    let names = d.parsed_list(n, path, "a cipher name", |s| Ok(s.to_string()));
    cipher_lists(&names).unwrap_or_else(|why| {
        d.error(n.pos, path, why);
        (None, None)
    })
}

/// Check one certificate and key pair; the names it serves. The error
/// says which of the two is at fault (`true`: the certificate).
pub fn check_pair(cert: &Pem, key: &Pem) -> Result<(Vec<String>, [u8; 32]), (bool, String)> {
    use sha2::{Digest, Sha256};
    let (cert_path, key_path) = (&cert.source, &key.source);
    let chain = cert.certificates().map_err(|e| (true, e))?;
    let pkey = key.private_key().map_err(|e| (false, e))?;
    let leaf = &chain[0];
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err((
            false,
            format!("the key in {key_path} does not belong to the certificate in {cert_path}"),
        ));
    }
    let now = Asn1Time::days_from_now(0).map_err(|e| (true, e.to_string()))?;
    if leaf.not_after() < now {
        return Err((
            true,
            format!(
                "the certificate in {cert_path} expired on {}",
                leaf.not_after()
            ),
        ));
    }
    if leaf.not_before() > now {
        return Err((
            true,
            format!(
                "the certificate in {cert_path} is not valid before {}",
                leaf.not_before()
            ),
        ));
    }
    let mut names: Vec<String> = leaf
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            leaf.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase())),
        );
    }
    let mut h = Sha256::new();
    h.update(cert.bytes.as_slice());
    h.update(key.bytes.as_slice());
    Ok((names, h.finalize().into()))
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<ListenerTls> {
    let f = d.map(node, path, TLS_FIELDS)?;
    let before = d.errors.len();
    let mut certificates = Vec::new();
    if let Some(list) = d.required(&f, "certificates", path) {
        let at = join(path, "certificates");
        for (item, item_path) in d.items(list, &at, false) {
            let Some(g) = d.map(item, &item_path, CERT_FIELDS) else {
                continue;
            };
            let cert = d
                .required(&g, "cert", &item_path)
                .and_then(|n| Some((d.string(n, &join(&item_path, "cert"))?, n.pos)));
            let key = d
                .required(&g, "key", &item_path)
                .and_then(|n| Some((d.string(n, &join(&item_path, "key"))?, n.pos)));
            let (Some((cert, cert_pos)), Some((key, key_pos))) = (cert, key) else {
                continue;
            };
            d.files.push(PathBuf::from(&cert));
            d.files.push(PathBuf::from(&key));
            match Certificate::read(&cert, &key) {
                Ok(c) => certificates.push(c),
                Err((true, why)) => d.error(cert_pos, &join(&item_path, "cert"), why),
                Err((false, why)) => d.error(key_pos, &join(&item_path, "key"), why),
            }
        }
        if certificates.is_empty() && d.errors.len() == before {
            d.error(list.pos, &at, "at least one certificate is required");
        }
    }
    let min_version = match f.get("minVersion") {
        None => Some(TlsVersion::Tls12),
        Some(n) => {
            let field = join(path, "minVersion");
            match d.scalar(n, &field, "a TLS version")? {
                "1.2" => Some(TlsVersion::Tls12),
                "1.3" => Some(TlsVersion::Tls13),
                other => {
                    d.error(
                        n.pos,
                        &field,
                        format!("unsupported minVersion {other:?} (expected \"1.2\" or \"1.3\"; older versions are not offered)"),
                    );
                    None
                }
            }
        }
    };
    let mut alpn = (true, true);
    if let Some(n) = f.get("alpn") {
        let field = join(path, "alpn");
        alpn = (false, false);
        for (item, at) in d.items(n, &field, true) {
            match d.scalar(item, &at, "h2 or http/1.1") {
                Some("h2") => alpn.0 = true,
                Some("http/1.1") => alpn.1 = true,
                Some(other) => d.error(
                    item.pos,
                    &at,
                    format!("unsupported protocol {other:?} (expected h2 or http/1.1)"),
                ),
                None => {}
            }
        }
        if alpn == (false, false) && d.errors.len() == before {
            d.error(n.pos, &field, "at least one protocol is required");
        }
    }
    let clients = match f.get("clientCertificates") {
        Some(n) => decode_clients(d, n, &join(path, "clientCertificates")).map(Some),
        None => Some(None),
    };
    let max_version = match f.get("maxVersion") {
        None => Some(TlsVersion::Tls13),
        Some(n) => {
            let field = join(path, "maxVersion");
            let text = d.scalar(n, &field, "a TLS version")?;
            let v = tls_version(text);
            if v.is_none() {
                d.error(
                    n.pos,
                    &field,
                    format!("unsupported maxVersion {text:?} (expected \"1.2\" or \"1.3\")"),
                );
            }
            v
        }
    };
    if let (Some(min), Some(max)) = (min_version, max_version) {
        if max < min {
            d.error(
                f.pos,
                &join(path, "maxVersion"),
                "maxVersion is below minVersion",
            );
        }
    }
    let ciphers = decode_ciphers(d, f.get("ciphers"), &join(path, "ciphers"));
    if d.errors.len() > before {
        return None;
    }
    Some(ListenerTls {
        certificates,
        min_version: min_version?,
        clients: clients?,
        h2: alpn.0,
        h1: alpn.1,
        max_version: max_version?,
        ciphers: ciphers.0,
        ciphersuites: ciphers.1,
    })
}

fn decode_clients(d: &mut Decoder, node: &Node, path: &str) -> Option<ClientCertificates> {
    use sha2::{Digest, Sha256};
    let f = d.map(node, path, CLIENT_FIELDS)?;
    let ca = d.required(&f, "ca", path).and_then(|n| {
        let field = join(path, "ca");
        let p = d.string(n, &field)?;
        d.files.push(PathBuf::from(&p));
        match read_ca_bundle(&field, &p) {
            Ok(pem) => {
                let fp = Sha256::digest(pem.bytes.as_slice()).into();
                Some((pem, fp))
            }
            Err(why) => {
                d.error(n.pos, &field, why);
                None
            }
        }
    });
    let required = match f.get("required") {
        Some(n) => d.bool(n, &join(path, "required")),
        None => Some(true),
    };
    let forward_header = match f.get("forwardHeader") {
        Some(n) => crate::policy::common::header_name(d, n, &join(path, "forwardHeader")).map(Some),
        None => Some(None),
    };
    let (ca, fingerprint) = ca?;
    Some(ClientCertificates {
        ca,
        required: required?,
        forward_header: forward_header?,
        fingerprint,
    })
}
