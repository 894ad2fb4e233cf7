//! Mutual-TLS client authentication (RFC 8705 §2) at the token, revocation and introspection
//! endpoints: the presented certificate against the client's registration.
//!
//! - `tls_client_auth`: the chain the client sent must verify, for client authentication at
//!   the current time, up to a CA of the `tls_client_ca` bundle (rustls-webpki, through
//!   rustls's client-certificate verifier: signatures, validity, basic constraints, the
//!   clientAuth extended key usage when present); then the leaf must carry the registered
//!   subject DN or subjectAltName ([`crate::domain::client::mtls`]).
//! - `self_signed_tls_client_auth`: the leaf is one of the registered certificates, or holds a
//!   key of the client's `jwks`. No CA is consulted: the registration is the trust.
//!
//! A client allowed both methods is accepted when either matches. The TLS layer already
//! checked that the client holds the certificate's private key (or, through the proxy header,
//! the trusted proxy did).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::assertion::Refused;
use super::{ServiceError, Tessera};
use crate::domain::audit::Actor;
use crate::domain::client::mtls::LeafFacts;
use crate::domain::client::{AuthMethod, Client};
use crate::domain::error::{ErrorCode, OAuthError};

/// The CA bundle `tls_client_auth` certificates must chain to (`tls_client_ca`).
#[derive(Clone)]
pub struct ClientCa {
    verifier: Arc<dyn ClientCertVerifier>,
    /// How many CA certificates the bundle holds, for the log.
    pub count: usize,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl ClientCa {
    /// Loads a PEM bundle of CA certificates.
    ///
    /// # Errors
    /// An unreadable file, no certificate in it, or a certificate that is not a usable trust
    /// anchor.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path)
            .with_context(|| format!("tls_client_ca: cannot read {}", path.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.with_context(|| format!("tls_client_ca: {} is not PEM", path.display()))?;
            roots.add(cert).with_context(|| {
                format!(
                    "tls_client_ca: a certificate of {} is not a usable CA",
                    path.display()
                )
            })?;
            count += 1;
        }
        if count == 0 {
            anyhow::bail!("tls_client_ca: {} holds no certificate", path.display());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("tls_client_ca: cannot build the verifier")?;
        Ok(Self { verifier, count })
    }

    /// Does the chain verify up to one of the CAs, for client authentication, at `now`?
    fn verifies(&self, leaf: &[u8], chain: &[Vec<u8>], now: UnixTime) -> Result<(), String> {
        let leaf = CertificateDer::from(leaf);
        let intermediates: Vec<CertificateDer<'_>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        self.verifier
            .verify_client_cert(&leaf, &intermediates, now)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A client certificate presented for client authentication: the leaf and the certificates
/// sent after it, DER.
#[derive(Debug, Clone, Copy)]
pub struct PresentedCert<'a> {
    /// The end-entity certificate.
    pub leaf: &'a [u8],
    /// The rest of the chain, in the order sent.
    pub chain: &'a [Vec<u8>],
}

fn refused(reason: &'static str, why: impl Into<String>) -> (&'static str, OAuthError) {
    (
        reason,
        OAuthError::new(ErrorCode::InvalidClient, why.into()),
    )
}

impl Tessera {
    /// Authenticates the client `client_id` by the certificate it presented (RFC 8705 §2), or
    /// by the absence of one (refused). A failure is counted, logged and audited like the other
    /// methods' failures.
    ///
    /// # Errors
    /// [`Refused`] with `invalid_client`, or a store failure.
    pub async fn authenticate_certificate(
        &self,
        client_id: &str,
        cert: Option<PresentedCert<'_>>,
        actor: &Actor,
    ) -> Result<Client, Refused> {
        let now = self.clock.now();
        let client = if client_id.is_empty() || client_id.len() > 128 {
            None
        } else {
            match self.store.get_client(client_id).await {
                Ok(c) => c,
                Err(e) => {
                    return Err(Refused {
                        client: None,
                        client_id: Some(client_id.to_owned()),
                        error: ServiceError::from(e),
                    });
                }
            }
        };
        let (reason, error) = match &client {
            None => refused("unknown_client", OAuthError::invalid_client().description),
            Some(c) => match self.check_certificate(c, cert) {
                Ok(()) => {
                    if let Some(c) = client {
                        return Ok(c);
                    }
                    refused("unknown_client", OAuthError::invalid_client().description)
                }
                Err(r) => r,
            },
        };
        let known = client.as_ref().map(|c| c.id.as_str());
        self.record_auth_failure(
            known,
            reason,
            Some(("mtls", &error.description)),
            actor,
            now,
        )
        .await;
        Err(Refused {
            client,
            client_id: Some(client_id.to_owned()),
            error: error.into(),
        })
    }

    fn check_certificate(
        &self,
        client: &Client,
        cert: Option<PresentedCert<'_>>,
    ) -> Result<(), (&'static str, OAuthError)> {
        let pki = client.auth.allows(AuthMethod::TlsClientAuth);
        let self_signed = client.auth.allows(AuthMethod::SelfSignedTlsClientAuth);
        if client.disabled {
            return Err(refused(
                "disabled",
                OAuthError::invalid_client().description,
            ));
        }
        if !pki && !self_signed {
            return Err(refused(
                "method_not_allowed",
                "client authentication is required (HTTP Basic, client_id and client_secret, a client assertion, or a client certificate for a client registered for mTLS)",
            ));
        }
        let Some(cert) = cert else {
            return Err(refused(
                "no_certificate",
                "this client authenticates with a TLS client certificate (RFC 8705): none was presented",
            ));
        };
        let leaf = LeafFacts::parse(cert.leaf).map_err(|e| {
            refused(
                "bad_certificate",
                format!("the client certificate cannot be read: {e}"),
            )
        })?;
        if self_signed
            && client
                .auth
                .mtls
                .self_signed_matches(&leaf, client.auth.jwks.as_ref())
        {
            return Ok(());
        }
        if pki {
            let Some(ca) = &self.client_ca else {
                return Err(refused(
                    "no_client_ca",
                    "tls_client_auth is not available: the server has no client CA (tls_client_ca)",
                ));
            };
            let now = u64::try_from(self.clock.now()).unwrap_or(0);
            let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now));
            ca.verifies(cert.leaf, cert.chain, now).map_err(|e| {
                refused(
                    "untrusted_certificate",
                    format!("the client certificate does not chain to a trusted CA: {e}"),
                )
            })?;
            return match &client.auth.mtls.subject {
                Some(s) if s.matches(&leaf) => Ok(()),
                Some(s) => Err(refused(
                    "wrong_subject",
                    format!(
                        "the client certificate does not carry the registered {}",
                        s.kind.as_str()
                    ),
                )),
                None => Err(refused(
                    "wrong_subject",
                    "the client has no registered certificate subject",
                )),
            };
        }
        Err(refused(
            "unregistered_certificate",
            "the client certificate is not one registered for this client",
        ))
    }
}
