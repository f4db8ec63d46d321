//! HTTPS listeners: the certificates of each, chosen per handshake by SNI.
//!
//! Pingora's acceptor is built once per listener at start, with the
//! listener's minimum TLS version and a server-name callback. The callback
//! looks up the listener in the *current* snapshot and switches the
//! handshake to the certificate for the client's name: an exact name, else
//! a wildcard (`*.example.com` serves `a.example.com`, not
//! `a.b.example.com`), else the listener's first certificate. A reload with
//! renewed files builds new contexts, so new handshakes get the new
//! certificate while open connections keep theirs.

use crate::config::tls::{ListenerTls, TlsVersion};
use crate::runtime::Runtime;
use openssl::ssl::{SniError, SslAcceptor, SslContext, SslFiletype, SslMethod, SslVersion};
use pingora::listeners::tls::TlsSettings;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The certificates of one listener, ready for handshakes.
pub struct Contexts {
    pub config: ListenerTls,
    default: SslContext,
    exact: HashMap<String, SslContext>,
    /// By the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, SslContext>,
}

fn context(cert: &str, key: &str) -> Result<SslContext, String> {
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| format!("{cert}: {e}"))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("{key}: {e}"))?;
    b.check_private_key()
        .map_err(|e| format!("{key} does not match {cert}: {e}"))?;
    Ok(b.build().into_context())
}

impl Contexts {
    /// Read the certificate files (validated when the config loaded).
    pub fn build(config: &ListenerTls) -> Result<Contexts, String> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for c in &config.certificates {
            let ctx = context(&c.cert.to_string_lossy(), &c.key.to_string_lossy())?;
            for name in &c.names {
                let slot = match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name.clone()),
                };
                // the first certificate listing a name serves it
                slot.or_insert_with(|| ctx.clone());
            }
            default.get_or_insert(ctx);
        }
        Ok(Contexts {
            config: config.clone(),
            default: default.ok_or("no certificate")?,
            exact,
            wildcard,
        })
    }

    /// The context for a client's SNI name.
    pub fn select(&self, name: Option<&str>) -> &SslContext {
        let Some(name) = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return &self.default;
        };
        if let Some(c) = self.exact.get(&name) {
            return c;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// Pingora's TLS settings for the listener at `addr`: minimum version,
/// HTTP/1.1 by ALPN, and the SNI callback that picks the certificate from
/// the current snapshot.
pub fn settings(
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    config: &ListenerTls,
) -> Result<TlsSettings, String> {
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    let min = match config.min_version {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    };
    b.set_min_proto_version(Some(min))
        .map_err(|e| e.to_string())?;
    // a certificate on the base context too, for clients whose handshake
    // never reaches the callback
    let first = &config.certificates[0];
    b.set_certificate_chain_file(&first.cert)
        .map_err(|e| format!("{}: {e}", first.cert.display()))?;
    b.set_private_key_file(&first.key, SslFiletype::PEM)
        .map_err(|e| format!("{}: {e}", first.key.display()))?;
    b.set_servername_callback(move |ssl, _alert| {
        let snapshot = runtime.snapshot();
        let Some(contexts) = snapshot.listener(addr).and_then(|l| l.tls.as_ref()) else {
            return Ok(()); // keep the base context
        };
        let name = ssl.servername(openssl::ssl::NameType::HOST_NAME);
        ssl.set_ssl_context(contexts.select(name))
            .map_err(|_| SniError::ALERT_FATAL)
    });
    let mut settings = TlsSettings::from(b);
    settings.set_alpn(pingora::listeners::ALPN::H1);
    Ok(settings)
}
