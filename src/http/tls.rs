//! Native TLS for both listeners (docs/tls.md): the certificate chain and key from PEM files,
//! reloaded without dropping connections, the protocol policy, and the client certificate a
//! connection presents, for the handlers.
//!
//! - **Loading.** [`load`] reads the chain (leaf first) and an unencrypted PKCS#8, RSA or SEC1
//!   key, and refuses a chain whose leaf is expired or not yet valid, a key that is not the
//!   leaf's, and files without a usable PEM item, each with a message that names the file.
//! - **Reload.** Each TLS listener's [`Tls`] holds the current acceptor behind a lock; a
//!   connection takes the acceptor current when it is accepted, so a reload changes what new
//!   handshakes see while established connections go on with theirs. Each reload makes a new
//!   server configuration, with an empty session cache: a client cannot resume, after a reload,
//!   a session it began under the previous certificate, so every new connection sees the new one. [`reload_loop`] reloads on SIGHUP and when either file's
//!   modification time, size or inode changes (checked every [`POLL_INTERVAL`]). A new pair
//!   that does not load is refused with an error log, and the current certificate stays.
//! - **Policy.** TLS 1.3 with its three suites, and TLS 1.2 with only the FAPI 2.0 suites
//!   `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` and `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` (rustls
//!   has no DHE): with an ECDSA certificate, TLS 1.2 clients therefore cannot connect. ALPN
//!   `http/1.1`; the server's suite order wins.
//! - **Client certificates.** The public listener asks for a client certificate but does not
//!   require one, and accepts any: RFC 8705 `self_signed_tls_client_auth` needs certificates no
//!   CA issued, so which certificate is acceptable is decided per client by the application, not
//!   here. What the TLS layer does check is possession: the client's handshake signature must
//!   verify under the certificate's key. The certificate then reaches every request of the
//!   connection as a [`ClientCertificate`] extension. Behind a TLS-terminating proxy, the
//!   extension comes from a header instead ([`ProxyCertHeader`]), only from configured proxy
//!   addresses.
//!
//! Certificates are never logged: only their SHA-256 thumbprint, serial number and validity.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::http::{HeaderMap, HeaderName};
use base64::Engine as _;
use ipnet::IpNet;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::domain::crypto::{hex, sha256};

/// How often [`reload_loop`] looks at the certificate and key files.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The client certificate of a request: the certificate the TLS client presented and proved
/// it holds the key of (its handshake signature verified), or the one a trusted proxy passed
/// on in [`ProxyCertHeader`]. No chain validation was done: whether the certificate is
/// acceptable is the application's decision, per client (RFC 8705).
///
/// Inserted as a request extension on every request of a connection that presented one;
/// absent otherwise. Handlers read it with `req.extensions().get::<ClientCertificate>()` or
/// the `Option<axum::Extension<ClientCertificate>>` extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The end-entity certificate, DER.
    pub leaf: Vec<u8>,
    /// The certificates the client (or the proxy) sent after the leaf, DER, in the order sent;
    /// empty when it sent only the leaf. The leaf is not repeated here.
    pub chain: Vec<Vec<u8>>,
    /// Where it came from.
    pub source: CertificateSource,
}

/// Where a [`ClientCertificate`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateSource {
    /// This server's own TLS handshake.
    Tls,
    /// The trusted proxy header (`tls_client_cert_header`).
    ProxyHeader,
}

impl ClientCertificate {
    /// SHA-256 of the leaf's DER.
    #[must_use]
    pub fn sha256(&self) -> [u8; 32] {
        sha256(&self.leaf)
    }

    /// The leaf's thumbprint as RFC 8705 `x5t#S256` spells it: base64url of [`Self::sha256`],
    /// without padding.
    #[must_use]
    pub fn x5t_s256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.sha256())
    }

    fn from_tls(certs: &[CertificateDer<'_>]) -> Option<Self> {
        let (leaf, chain) = certs.split_first()?;
        Some(Self {
            leaf: leaf.as_ref().to_vec(),
            chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            source: CertificateSource::Tls,
        })
    }
}

/// The certificate and key files of one TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the leaf's private key (PKCS#8, RSA or SEC1), unencrypted.
    pub key: PathBuf,
}

/// What the log and the metrics say about a loaded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// SHA-256 of the leaf's DER, hex.
    pub sha256: String,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// The leaf's `notBefore`.
    pub not_before: CertTime,
    /// The leaf's `notAfter`.
    pub not_after: CertTime,
    /// Whether the leaf's key is ECDSA (TLS 1.2 clients then find no suite).
    pub ecdsa: bool,
}

/// A certificate validity bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTime {
    /// Seconds since the Unix epoch.
    pub unix: i64,
    /// As `YYYY-MM-DD HH:MM:SS UTC`.
    pub text: String,
}

/// A chain and key that load, and what they are.
pub struct Loaded {
    /// What the resolver serves.
    pub key: Arc<CertifiedKey>,
    /// What the logs say.
    pub facts: CertFacts,
}

/// Loads `files`, checking them as of `now` (see the module docs).
///
/// # Errors
/// A file cannot be read, holds no certificate (or no unencrypted key), the leaf cannot be
/// parsed or is outside its validity period at `now`, or the key is not the leaf's.
pub fn load(files: &TlsFiles, now: SystemTime) -> anyhow::Result<Loaded> {
    let cert_pem = std::fs::read(&files.cert)
        .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?;
    let key_pem = std::fs::read(&files.key)
        .with_context(|| format!("reading the TLS key {}", files.key.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "the TLS certificate {} is not valid PEM: {e}",
                files.cert.display()
            )
        })?;
    let Some(leaf) = chain.first() else {
        bail!(
            "the TLS certificate {} holds no PEM CERTIFICATE",
            files.cert.display()
        );
    };
    let parsed = parse_certificate(leaf.as_ref()).with_context(|| {
        format!(
            "the TLS certificate {} does not hold a valid X.509 certificate",
            files.cert.display()
        )
    })?;
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if now_unix > parsed.not_after.unix {
        bail!(
            "the TLS certificate {} expired on {}",
            files.cert.display(),
            parsed.not_after.text
        );
    }
    if now_unix < parsed.not_before.unix {
        bail!(
            "the TLS certificate {} is not valid before {}",
            files.cert.display(),
            parsed.not_before.text
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .to_owned()
            }
            other => format!("is not valid PEM: {other}"),
        };
        anyhow::anyhow!("the TLS key {} {why}", files.key.display())
    })?;
    let leaf_sha256 = hex(&sha256(leaf.as_ref()));
    let serial = hex(parsed.serial);
    let (not_before, not_after) = (parsed.not_before, parsed.not_after);
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow::anyhow!("the TLS key {} cannot be used: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => bail!(
            "the TLS key {} is not the key of the certificate {}",
            files.key.display(),
            files.cert.display()
        ),
        Err(e) => bail!(
            "the TLS key {} cannot be checked against the certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        ),
    }
    let facts = CertFacts {
        sha256: leaf_sha256,
        serial,
        not_before,
        not_after,
        ecdsa: certified.key.algorithm() == rustls::SignatureAlgorithm::ECDSA,
    };
    Ok(Loaded {
        key: Arc::new(certified),
        facts,
    })
}

/// The crypto provider: aws-lc-rs with the TLS 1.3 suites and the FAPI 2.0 TLS 1.2 suites.
#[must_use]
pub fn provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite as suite, default_provider};
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    }
}

/// The server configuration of a listener serving `key` (see the module docs for the policy).
fn server_config(
    key: Arc<CertifiedKey>,
    client_certificates: bool,
) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("the TLS protocol versions")?;
    let builder = if client_certificates {
        builder.with_client_cert_verifier(Arc::new(AnyClientCertificate {
            algorithms: provider.signature_verification_algorithms,
        }))
    } else {
        builder.with_client_cert_verifier(WebPkiClientVerifier::no_client_auth())
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(config)
}

/// What a listener serves now.
struct Current {
    acceptor: TlsAcceptor,
    key: Arc<CertifiedKey>,
}

/// Asks for a client certificate without requiring one, and accepts any certificate whose
/// holder signed the handshake with its key (see the module docs).
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The identity of a file's current version: modification time, size and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// One TLS listener: its acceptor, and the certificate it serves, which [`Tls::reload`]
/// replaces.
pub struct Tls {
    name: &'static str,
    files: TlsFiles,
    client_certificates: bool,
    current: RwLock<Current>,
    /// The files' stamps when they were last loaded or refused.
    seen: Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("listener", &self.name)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `files` for the listener `name`. With `client_certificates`, handshakes ask for a
    /// client certificate (see the module docs).
    ///
    /// # Errors
    /// As [`load`].
    pub fn open(
        name: &'static str,
        files: TlsFiles,
        client_certificates: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let seen = (stamp(&files.cert), stamp(&files.key));
        let loaded = load(&files, SystemTime::now())?;
        let config = server_config(loaded.key.clone(), client_certificates)?;
        let tls = Self {
            name,
            files,
            client_certificates,
            current: RwLock::new(Current {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                key: loaded.key,
            }),
            seen: Mutex::new(seen),
        };
        tls.loaded(&loaded.facts, "start");
        Ok(Arc::new(tls))
    }

    /// The acceptor for a new connection: the current certificate's.
    #[must_use]
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .acceptor
            .clone()
    }

    /// The leaf certificate new connections get, DER.
    #[must_use]
    pub fn served_certificate(&self) -> Vec<u8> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .key
            .end_entity_cert()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// The files this listener serves.
    #[must_use]
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads the files again; on success new handshakes get the new certificate, otherwise the
    /// current one stays and the error is logged. `why` (`signal`, `change`) labels the log.
    /// Returns whether the new certificate is served.
    pub fn reload(&self, why: &'static str) -> bool {
        let stamps = (stamp(&self.files.cert), stamp(&self.files.key));
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        let loaded = load(&self.files, SystemTime::now()).and_then(|loaded| {
            let config = server_config(loaded.key.clone(), self.client_certificates)?;
            Ok((loaded, config))
        });
        match loaded {
            Ok((loaded, config)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
                    acceptor: TlsAcceptor::from(Arc::new(config)),
                    key: loaded.key,
                };
                metrics::counter!("tessera_tls_reloads_total", "listener" => self.name, "outcome" => "ok")
                    .increment(1);
                self.loaded(&loaded.facts, why);
                true
            }
            Err(e) => {
                metrics::counter!("tessera_tls_reloads_total", "listener" => self.name, "outcome" => "refused")
                    .increment(1);
                tracing::error!(
                    listener = self.name,
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    trigger = why,
                    error = %format!("{e:#}"),
                    "TLS certificate reload refused; still serving the current certificate"
                );
                false
            }
        }
    }

    /// Reloads when either file changed since it was last loaded or refused.
    pub fn reload_if_changed(&self) {
        let stamps = (stamp(&self.files.cert), stamp(&self.files.key));
        let changed = *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != stamps;
        if changed {
            self.reload("change");
        }
    }

    fn loaded(&self, facts: &CertFacts, why: &'static str) {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("tessera_tls_certificate_not_after_seconds", "listener" => self.name)
            .set(facts.not_after.unix as f64);
        tracing::info!(
            listener = self.name,
            cert = %self.files.cert.display(),
            trigger = why,
            sha256 = %facts.sha256,
            serial = %facts.serial,
            not_after = %facts.not_after.text,
            "TLS certificate loaded"
        );
        if facts.ecdsa {
            tracing::warn!(
                listener = self.name,
                "the TLS certificate has an ECDSA key: TLS 1.3 clients connect, TLS 1.2 clients \
                 cannot (the FAPI 2.0 TLS 1.2 suites are RSA only)"
            );
        }
    }
}

/// Reloads every listener's certificate on SIGHUP and when its files change (every
/// [`POLL_INTERVAL`]). With no TLS listener, SIGHUP is only logged. Runs until aborted.
pub async fn reload_loop(listeners: Vec<Arc<Tls>>) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be handled: TLS certificates reload only when their files change");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            () = signalled => {
                if listeners.is_empty() {
                    tracing::info!("SIGHUP: no TLS certificate to reload");
                } else {
                    tracing::info!("SIGHUP: reloading the TLS certificates");
                }
                for tls in &listeners {
                    tls.reload("signal");
                }
            }
            _ = poll.tick() => {
                for tls in &listeners {
                    tls.reload_if_changed();
                }
            }
        }
    }
}

/// The client certificate of a TLS connection, if it presented one.
#[must_use]
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<ClientCertificate> {
    conn.peer_certificates()
        .and_then(ClientCertificate::from_tls)
}

/// The trusted proxy header that carries the client certificate (`tls_client_cert_header`),
/// and the addresses it is taken from (`tls_client_cert_proxies`).
#[derive(Debug, Clone)]
pub struct ProxyCertHeader {
    /// The header.
    pub name: HeaderName,
    /// The proxies' addresses.
    pub proxies: Vec<IpNet>,
}

/// What a request from a trusted proxy says about the client certificate.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyCert {
    /// A certificate.
    Present(ClientCertificate),
    /// No header, or an empty one: the client presented none.
    Absent,
    /// A header that is not a certificate.
    Invalid(&'static str),
}

impl ProxyCertHeader {
    /// Whether requests from `peer` have their certificate from the header.
    #[must_use]
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxies.iter().any(|net| net.contains(&peer))
    }

    /// The certificate the header carries.
    #[must_use]
    pub fn read(&self, headers: &HeaderMap) -> ProxyCert {
        let mut values = headers.get_all(&self.name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(&self.name) {
                ProxyCert::Invalid("the header appears more than once")
            } else {
                ProxyCert::Absent
            };
        };
        certificate_from_header(value.as_bytes())
    }
}

/// The certificate in a proxy header's value (`%XX` escapes decoded, `+` kept: it is base64,
/// not a space): URL-encoded PEM (nginx
/// `$ssl_client_escaped_cert`, Envoy `%DOWNSTREAM_PEER_CERT%`, AWS ALB), or PEM, of the leaf
/// and optionally its chain after it. An empty value (what nginx sends for a client without a
/// certificate) means none.
#[must_use]
pub fn certificate_from_header(value: &[u8]) -> ProxyCert {
    let value = value.trim_ascii();
    if value.is_empty() {
        return ProxyCert::Absent;
    }
    let pem: Vec<u8> = percent_encoding::percent_decode(value).collect();
    let Ok(certs) = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() else {
        return ProxyCert::Invalid("not PEM");
    };
    if certs.iter().any(|c| parse_certificate(c.as_ref()).is_err()) {
        return ProxyCert::Invalid("not an X.509 certificate");
    }
    match certs.split_first() {
        Some((leaf, chain)) => ProxyCert::Present(ClientCertificate {
            leaf: leaf.as_ref().to_vec(),
            chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            source: CertificateSource::ProxyHeader,
        }),
        None => ProxyCert::Invalid("no PEM CERTIFICATE"),
    }
}

/// A proxy address or network from `tls_client_cert_proxies`: `10.0.0.0/8`, or one address
/// (`10.0.0.1`, `::1`).
///
/// # Errors
/// It is neither.
pub fn proxy_network(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(|a| IpNet::from(a.to_canonical())))
        .map_err(|_| format!("{s:?} is not an IP address or network (e.g. 10.0.0.0/8, ::1)"))
}

/// The parts of an X.509 certificate the server reads itself.
struct ParsedCertificate<'a> {
    serial: &'a [u8],
    not_before: CertTime,
    not_after: CertTime,
}

/// One DER element of `input`: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_0: u8 = 0xa0;

/// The serial number and validity of a DER X.509 certificate (RFC 5280 §4.1).
fn parse_certificate(der: &[u8]) -> anyhow::Result<ParsedCertificate<'_>> {
    let malformed = || anyhow::anyhow!("malformed DER");
    let (tag, cert, rest) = der_element(der).ok_or_else(malformed)?;
    if tag != SEQUENCE || !rest.is_empty() {
        bail!("not a DER certificate");
    }
    let (tag, tbs, _) = der_element(cert).ok_or_else(malformed)?;
    if tag != SEQUENCE {
        bail!("no tbsCertificate");
    }
    let (mut tag, mut serial, mut rest) = der_element(tbs).ok_or_else(malformed)?;
    if tag == EXPLICIT_0 {
        (tag, serial, rest) = der_element(rest).ok_or_else(malformed)?;
    }
    if tag != INTEGER {
        bail!("no serial number");
    }
    let (_signature, rest) = der_element(rest)
        .map(|(_, _, rest)| ((), rest))
        .ok_or_else(malformed)?;
    let (_issuer, rest) = der_element(rest)
        .map(|(_, _, rest)| ((), rest))
        .ok_or_else(malformed)?;
    let (tag, validity, _) = der_element(rest).ok_or_else(malformed)?;
    if tag != SEQUENCE {
        bail!("no validity");
    }
    let (tag, before, rest) = der_element(validity).ok_or_else(malformed)?;
    let not_before = cert_time(tag, before).context("notBefore")?;
    let (tag, after, _) = der_element(rest).ok_or_else(malformed)?;
    let not_after = cert_time(tag, after).context("notAfter")?;
    Ok(ParsedCertificate {
        serial,
        not_before,
        not_after,
    })
}

/// A `UTCTime` (`YYMMDDHHMMSSZ`, years 1950–2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), as
/// RFC 5280 §4.1.2.5 requires them.
fn cert_time(tag: u8, text: &[u8]) -> anyhow::Result<CertTime> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 13 => {
            let (yy, rest) = text.split_at(2);
            let yy = digits(yy).context("bad year")?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, rest)
        }
        GENERALIZED_TIME if text.len() == 15 => {
            let (yyyy, rest) = text.split_at(4);
            (digits(yyyy).context("bad year")?, rest)
        }
        _ => bail!("not a UTCTime or GeneralizedTime in the RFC 5280 form"),
    };
    let Some((fields, b"Z")) = rest.split_at_checked(10) else {
        bail!("not in UTC");
    };
    let field = |i: usize| fields.get(i..i + 2).and_then(digits).context("bad digits");
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        bail!("out of range");
    }
    let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(CertTime {
        unix,
        text: format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC"),
    })
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
