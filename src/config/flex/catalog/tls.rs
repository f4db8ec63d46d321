//! `tls` (an instance's port) and `tls-outbound` (a Service).

use super::bool_or;
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL};
use crate::config::tls::{pem_or_file, Certificate};
use crate::config::yaml::Node;

const VERSION: Ty = Ty::Either(&[
    Ty::Enum(&["1.0", "1.1", "1.2", "1.3"]),
    Ty::Number(1.0, 1.3),
]);
const ALPN: Ty = Ty::List(&Ty::Enum(&["h2", "http/1.1"]), true);
const CIPHERS: Ty = Ty::List(&Ty::Text("a cipher name (IANA or OpenSSL)"), true);
pub const TLS_FIELDS: &[Field] = &[
    f("certificate", Ty::Obj(CERT_FIELDS)).req(),
    f("trustedCA", Ty::Text("PEM text or a file"))
        .doc("Verify client certificates against these CAs."),
    f("requireClientCertificate", BOOL),
    f("alpn", ALPN),
    f("minversion", VERSION)
        .default("\"1.2\"")
        .doc("1.0 and 1.1 are raised to 1.2."),
    f("maxversion", VERSION).default("\"1.3\""),
    f("ciphers", CIPHERS),
];
pub const TLS_OUT_FIELDS: &[Field] = &[
    f("skipValidation", BOOL).default("false"),
    f("certificate", Ty::Obj(CERT_FIELDS)).doc("A client certificate (mTLS to the Service)."),
    f("trustedCA", Ty::Text("PEM text or a file")),
    f("alpn", ALPN),
    f("minversion", VERSION),
    f("maxversion", VERSION),
    f("ciphers", CIPHERS),
];
const CERT_FIELDS: &[Field] = &[
    f("key", Ty::Text("PEM text or a file")).req(),
    f("crt", Ty::Text("PEM text or a file")).req(),
    f("keyPassphrase", Ty::Any).doc("Not supported yet: give the key unencrypted."),
];

fn certificate_pair(d: &mut Decoder, n: &Node, path: &str) -> Option<Certificate> {
    let f = d.map(n, path, CERT_FIELDS)?;
    if let Some(p) = f.get("keyPassphrase") {
        d.error(
            p.pos,
            &join(path, "keyPassphrase"),
            "encrypted private keys are not supported yet: give the key unencrypted",
        );
        return None;
    }
    let text = |d: &mut Decoder, key: &str| {
        let node = d.required(&f, key, path)?;
        let field = join(path, key);
        let t = d.string(node, &field)?;
        match pem_or_file(&field, &t) {
            Ok(pem) => Some((pem, node.pos)),
            Err(why) => {
                d.error(node.pos, &field, why);
                None
            }
        }
    };
    let crt = text(d, "crt");
    let key = text(d, "key");
    let ((crt, crt_pos), (key, key_pos)) = (crt?, key?);
    match Certificate::new(crt, key) {
        Ok(c) => Some(c),
        Err((true, why)) => {
            d.error(crt_pos, &join(path, "crt"), why);
            None
        }
        Err((false, why)) => {
            d.error(key_pos, &join(path, "key"), why);
            None
        }
    }
}

/// `minversion` / `maxversion`: TLS 1.0 and 1.1 are raised to 1.2 (said
/// once at start); 1.2 and 1.3 as given.
fn version(
    d: &mut Decoder,
    n: Option<&Node>,
    path: &str,
    default: crate::config::tls::TlsVersion,
) -> Option<crate::config::tls::TlsVersion> {
    use crate::config::tls::{tls_version, TlsVersion};
    let Some(n) = n else {
        return Some(default);
    };
    let text = d.scalar(n, path, "a TLS version")?;
    match text {
        "1.0" | "1.1" => {
            d.notice(
                n.pos,
                path,
                format!("TLS {text} is not offered: raised to 1.2"),
            );
            Some(TlsVersion::Tls12)
        }
        t => tls_version(t).or_else(|| {
            d.error(n.pos, path, format!("{t:?}: expected 1.2 or 1.3"));
            None
        }),
    }
}

fn alpn(d: &mut Decoder, n: Option<&Node>, path: &str) -> Option<(bool, bool)> {
    let Some(n) = n else {
        return Some((true, true));
    };
    let mut out = (false, false);
    for (item, at) in d.items(n, path, true) {
        match d.scalar(item, &at, "h2 or http/1.1")? {
            "h2" => out.0 = true,
            "http/1.1" => out.1 = true,
            other => {
                d.error(item.pos, &at, format!("{other:?}: expected h2 or http/1.1"));
                return None;
            }
        }
    }
    Some(out)
}

pub(super) fn tls_inbound(
    d: &mut Decoder,
    c: &Node,
    path: &str,
) -> Option<crate::config::tls::ListenerTls> {
    use crate::config::tls::{
        decode_ciphers, read_ca_bundle, ClientCertificates, ListenerTls, TlsVersion,
    };
    use sha2::{Digest, Sha256};
    let f = d.map(c, path, TLS_FIELDS)?;
    let before = d.errors.len();
    let cert = d
        .required(&f, "certificate", path)
        .and_then(|n| certificate_pair(d, n, &join(path, "certificate")));
    let min = version(
        d,
        f.get("minversion"),
        &join(path, "minversion"),
        TlsVersion::Tls12,
    );
    let max = version(
        d,
        f.get("maxversion"),
        &join(path, "maxversion"),
        TlsVersion::Tls13,
    );
    let (h2, h1) = alpn(d, f.get("alpn"), &join(path, "alpn"))?;
    let ciphers = decode_ciphers(d, f.get("ciphers"), &join(path, "ciphers"));
    let required = bool_or(
        d,
        f.get("requireClientCertificate"),
        &join(path, "requireClientCertificate"),
        false,
    )?;
    let clients = match f.get("trustedCA") {
        Some(n) => {
            let field = join(path, "trustedCA");
            let text = d.string(n, &field)?;
            match read_ca_bundle(&field, &text) {
                Ok(ca) => Some(ClientCertificates {
                    fingerprint: Sha256::digest(ca.bytes.as_slice()).into(),
                    ca,
                    required,
                    forward_header: None,
                }),
                Err(why) => {
                    d.error(n.pos, &field, why);
                    None
                }
            }
        }
        None if required => {
            d.error(
                f.pos,
                &join(path, "requireClientCertificate"),
                "requiring client certificates needs `trustedCA` to verify them",
            );
            None
        }
        None => None,
    };
    if d.errors.len() > before {
        return None;
    }
    Some(ListenerTls {
        certificates: vec![cert?],
        min_version: min?,
        clients,
        h2,
        h1,
        max_version: max?,
        ciphers: ciphers.0,
        ciphersuites: ciphers.1,
    })
}

pub(super) fn tls_outbound(
    d: &mut Decoder,
    c: &Node,
    path: &str,
) -> Option<(crate::config::model::UpstreamTls, bool)> {
    use crate::config::tls::read_ca_bundle;
    use sha2::{Digest, Sha256};
    let f = d.map(c, path, TLS_OUT_FIELDS)?;
    let before = d.errors.len();
    let mut t = crate::config::model::UpstreamTls::default();
    let mut h = Sha256::new();
    t.verify = !bool_or(
        d,
        f.get("skipValidation"),
        &join(path, "skipValidation"),
        false,
    )?;
    if let Some(n) = f.get("trustedCA") {
        let field = join(path, "trustedCA");
        let text = d.string(n, &field)?;
        match read_ca_bundle(&field, &text) {
            Ok(ca) => {
                h.update(ca.bytes.as_slice());
                t.ca = Some(ca);
            }
            Err(why) => d.error(n.pos, &field, why),
        }
    }
    if let Some(n) = f.get("certificate") {
        if let Some(c) = certificate_pair(d, n, &join(path, "certificate")) {
            h.update(c.fingerprint);
            t.client = Some((c.cert, c.key));
        }
    }
    let (h2, _) = alpn(d, f.get("alpn"), &join(path, "alpn"))?;
    let h2 = h2 && f.get("alpn").is_some();
    for key in ["minversion", "maxversion", "ciphers"] {
        if let Some(n) = f.get(key) {
            d.notice(
                n.pos,
                &join(path, key),
                "not applied to upstream connections (OpenSSL's defaults: TLS 1.2 and 1.3)",
            );
        }
    }
    t.fingerprint = h.finalize().into();
    (d.errors.len() == before).then_some((t, h2))
}
