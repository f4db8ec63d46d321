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

use crate::config::tls::{ClientCertificates, ListenerTls, Pem, TlsVersion};
use crate::runtime::Runtime;
use async_trait::async_trait;
use openssl::ssl::{
    SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod, SslVerifyMode, SslVersion,
};
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use std::any::Any;
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

/// Ask for and verify client certificates on `b`.
fn verify_clients(b: &mut SslAcceptorBuilder, clients: &ClientCertificates) -> Result<(), String> {
    let certs = clients.ca.certificates()?;
    let mut names = openssl::stack::Stack::new().map_err(|e| e.to_string())?;
    for c in &certs {
        b.cert_store_mut()
            .add_cert(c.clone())
            .map_err(|e| format!("{}: {e}", clients.ca.source))?;
        if let Ok(n) = c.subject_name().to_owned() {
            names.push(n).map_err(|e| e.to_string())?;
        }
    }
    b.set_client_ca_list(names);
    b.set_verify(if clients.required {
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
    } else {
        SslVerifyMode::PEER
    });
    Ok(())
}

/// Versions and ciphers of the listener on `b`.
fn protocol(b: &mut SslAcceptorBuilder, config: &ListenerTls) -> Result<(), String> {
    let version = |v: TlsVersion| match v {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    };
    b.set_min_proto_version(Some(version(config.min_version)))
        .map_err(|e| e.to_string())?;
    b.set_max_proto_version(Some(version(config.max_version)))
        .map_err(|e| e.to_string())?;
    if let Some(list) = &config.ciphers {
        b.set_cipher_list(list)
            .map_err(|e| format!("ciphers {list}: {e}"))?;
    }
    if let Some(list) = &config.ciphersuites {
        b.set_ciphersuites(list)
            .map_err(|e| format!("ciphers {list}: {e}"))?;
    }
    Ok(())
}

/// The certificate, its chain and its key on `b`.
fn certificate(b: &mut SslAcceptorBuilder, cert: &Pem, key: &Pem) -> Result<(), String> {
    let chain = cert.certificates()?;
    let mut chain = chain.into_iter();
    let leaf = chain.next().ok_or("no certificate")?;
    b.set_certificate(&leaf)
        .map_err(|e| format!("{}: {e}", cert.source))?;
    for extra in chain {
        b.add_extra_chain_cert(extra)
            .map_err(|e| format!("{}: {e}", cert.source))?;
    }
    let pkey = key.private_key()?;
    b.set_private_key(&pkey)
        .map_err(|e| format!("{}: {e}", key.source))?;
    b.check_private_key()
        .map_err(|e| format!("{} does not match {}: {e}", key.source, cert.source))
}

/// The ALPN protocols offered, in wire format, preferred first.
fn alpn_wire(config: &ListenerTls) -> &'static [u8] {
    match (config.h2, config.h1) {
        (true, true) => b"\x02h2\x08http/1.1",
        (true, false) => b"\x02h2",
        _ => b"\x08http/1.1",
    }
}

/// A listener's TLS settings with one certificate: client verification,
/// versions and ciphers, ALPN (ours first, else no ALPN: HTTP/1.1).
fn builder(cert: &Pem, key: &Pem, config: &ListenerTls) -> Result<SslAcceptorBuilder, String> {
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    if let Some(c) = &config.clients {
        verify_clients(&mut b, c)?;
    }
    protocol(&mut b, config)?;
    let ours = alpn_wire(config);
    b.set_alpn_select_callback(move |_, theirs| {
        openssl::ssl::select_next_proto(ours, theirs).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    certificate(&mut b, cert, key)?;
    Ok(b)
}

/// The context of one certificate. The handshake switches to it before
/// ALPN is chosen, so it chooses the protocol too.
fn context(cert: &Pem, key: &Pem, config: &ListenerTls) -> Result<SslContext, String> {
    Ok(builder(cert, key, config)?.build().into_context())
}

impl Contexts {
    /// Read the certificate files (validated when the config loaded).
    pub fn build(config: &ListenerTls) -> Result<Contexts, String> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for c in &config.certificates {
            let ctx = context(&c.cert, &c.key, config)?;
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

/// The acceptor of the listener at `addr`: minimum version, the ALPN
/// protocols (`h2`, `http/1.1`), and the SNI callback that picks the
/// certificate from the current snapshot. The connection layer runs the
/// handshake ([`handshake`]) after admission and under a deadline, so the
/// listener is a plain TCP one to Pingora.
pub fn acceptor(
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    config: &ListenerTls,
) -> Result<SslAcceptor, String> {
    // the first certificate on the base context too, for clients whose
    // handshake never reaches the callback
    let first = &config.certificates[0];
    let mut b = builder(&first.cert, &first.key, config)?;
    b.set_servername_callback(move |ssl, _alert| {
        let snapshot = runtime.snapshot();
        let Some(contexts) = snapshot.listener(addr).and_then(|l| l.tls.as_ref()) else {
            return Ok(()); // keep the base context
        };
        let name = ssl.servername(openssl::ssl::NameType::HOST_NAME);
        ssl.set_ssl_context(contexts.select(name))
            .map_err(|_| SniError::ALERT_FATAL)
    });
    Ok(b.build())
}

/// The server side of a TLS handshake on a client connection that Pingora
/// accepted as plain TCP. The verified client certificate's subject ends
/// up in the connection's TLS digest ([`ClientCert`]).
pub async fn handshake(acceptor: &SslAcceptor, stream: Stream) -> Result<Stream, String> {
    let mut l4 = stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
        .map_err(|_| "not a TCP connection".to_string())?;
    // OpenSSL's per-connection state (about 40 KB) is made once the
    // ClientHello begins to arrive, not for a client that sends nothing
    let mut first = [0u8; 1];
    match tokio::io::AsyncReadExt::read(&mut *l4, &mut first).await {
        Ok(1) => l4.rewind(&first),
        Ok(_) => return Err("closed before the handshake".into()),
        Err(e) => return Err(e.to_string()),
    }
    let tls =
        pingora::protocols::tls::server::handshake_with_callback(acceptor, *l4, &ClientSubject)
            .await
            .map_err(|e| e.to_string())?;
    Ok(Box::new(tls))
}

/// The verified client certificate of a connection, kept in its TLS digest.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// `CN=alice,O=Acme`: the subject's entries in order, `short=value`.
    pub subject: String,
    /// The certificate, PEM-encoded.
    pub pem: Arc<str>,
}

struct ClientSubject;

#[async_trait]
impl TlsAccept for ClientSubject {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let cert = ssl.peer_certificate()?;
        let subject = cert
            .subject_name()
            .entries()
            .map(|e| {
                let key = e.object().nid().short_name().unwrap_or("?");
                let value = e.data().to_string().unwrap_or_default();
                format!("{key}={value}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let pem = cert
            .to_pem()
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .unwrap_or_default();
        Some(Arc::new(ClientCert {
            subject,
            pem: Arc::from(pem),
        }))
    }
}
