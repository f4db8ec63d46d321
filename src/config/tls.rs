//! A listener's `tls:` (with `protocol: HTTPS`): its certificates, read and
//! checked when the configuration loads, so a missing, unreadable,
//! mismatched, expired or not-yet-valid certificate or key is a `validate`
//! error naming the file. The names a certificate answers for (SNI) come
//! from the certificate itself: its DNS subject alternative names, else its
//! common name.

use super::decode::{join, Decoder};
use super::yaml::Node;
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::X509;
use std::path::PathBuf;

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
}

/// Mutual TLS: client certificates verified against `ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificates {
    pub ca: PathBuf,
    /// A handshake without a certificate fails; `false`: a certificate is
    /// verified when presented.
    pub required: bool,
    /// The verified subject goes upstream in this header (a copy the client
    /// sent is removed either way).
    pub forward_header: Option<http::HeaderName>,
    /// SHA-256 of the CA file as read.
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM private key (RSA, EC, Ed25519).
    pub key: PathBuf,
    /// Lower-case names it serves (`api.example.com`, `*.example.com`).
    pub names: Vec<String>,
    /// SHA-256 of the two files as read: a reload with renewed files
    /// differs, so the listener's contexts are rebuilt.
    pub fingerprint: [u8; 32],
}

const TLS_FIELDS: &[&str] = &["certificates", "minVersion", "clientCertificates", "alpn"];
const CLIENT_FIELDS: &[&str] = &["ca", "required", "forwardHeader"];
const CERT_FIELDS: &[&str] = &["cert", "key"];

/// A CA bundle (`clientCertificates.ca`, a service's `tls.ca`): its PEM
/// bytes, or why it cannot serve as one.
pub fn read_ca_bundle(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if X509::stack_from_pem(&pem).is_ok_and(|c| !c.is_empty()) {
        Ok(pem)
    } else {
        Err(format!("{path} holds no PEM certificate"))
    }
}

/// Read and check one certificate and key pair; the names it serves.
pub fn check_pair(
    cert_path: &str,
    key_path: &str,
) -> Result<(Vec<String>, [u8; 32]), (bool, String)> {
    use sha2::{Digest, Sha256};
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"));
    let cert_pem = read(cert_path).map_err(|e| (true, e))?;
    let key_pem = read(key_path).map_err(|e| (false, e))?;
    let chain = X509::stack_from_pem(&cert_pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or((true, format!("{cert_path} holds no PEM certificate")))?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|_| (false, format!("{key_path} holds no PEM private key")))?;
    let leaf = &chain[0];
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
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
    h.update(&cert_pem);
    h.update(&key_pem);
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
            match check_pair(&cert, &key) {
                Ok((names, fingerprint)) => certificates.push(Certificate {
                    cert: cert.into(),
                    key: key.into(),
                    names,
                    fingerprint,
                }),
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
    if d.errors.len() > before {
        return None;
    }
    Some(ListenerTls {
        certificates,
        min_version: min_version?,
        clients: clients?,
        h2: alpn.0,
        h1: alpn.1,
    })
}

fn decode_clients(d: &mut Decoder, node: &Node, path: &str) -> Option<ClientCertificates> {
    use sha2::{Digest, Sha256};
    let f = d.map(node, path, CLIENT_FIELDS)?;
    let ca = d.required(&f, "ca", path).and_then(|n| {
        let field = join(path, "ca");
        let p = d.string(n, &field)?;
        d.files.push(PathBuf::from(&p));
        match read_ca_bundle(&p) {
            Ok(pem) => Some((PathBuf::from(&p), Sha256::digest(&pem).into())),
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
