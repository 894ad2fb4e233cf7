//! Mutual-TLS client authentication (RFC 8705 §2): what a client registers and how a client
//! certificate is matched against it. Pure: the chain check against the configured CA bundle
//! is the service's ([`crate::service::mtls`]), through rustls-webpki.
//!
//! - `tls_client_auth` (PKI): the client registers exactly one of the RFC 8705 §2.1.2 names —
//!   `tls_client_auth_subject_dn`, `tls_client_auth_san_dns`, `tls_client_auth_san_uri`,
//!   `tls_client_auth_san_ip` or `tls_client_auth_san_email` — and its certificate's leaf must
//!   carry that subject or subjectAltName.
//! - `self_signed_tls_client_auth`: the leaf's SHA-256 thumbprint (`x5t#S256`) is one of its
//!   `tls_client_certificates`, or its public key is a key of its `jwks` (compared by RFC 7638
//!   thumbprint), or a JWK's `x5c` holds the leaf itself.
//!
//! Matching rules, so that a registration written by hand matches what a CA issued:
//!
//! - a subject DN is an RFC 4514 string (most significant RDN last, as `openssl x509 -subject
//!   -nameopt RFC2253` prints it). Both sides are parsed into RDNs of (attribute OID, value):
//!   attribute names are case-insensitive (`CN`, `L`, `ST`, `O`, `OU`, `C`, `STREET`, `DC`,
//!   `UID`, `SERIALNUMBER`, `emailAddress`, or a dotted OID); values compare as LDAP's
//!   caseIgnoreMatch does for ASCII: case folded, leading and trailing spaces dropped, inner
//!   runs of spaces kept as one; the attributes of a multi-valued RDN compare in any order;
//!   the RDN order matters. A value that is not a string in the certificate matches only the
//!   `#hex` form of its content bytes.
//! - DNS names compare case-insensitively, a trailing dot ignored; URIs exactly; IP addresses
//!   as addresses (`::ffff:10.0.0.1` is not `10.0.0.1`); e-mail addresses with the domain case
//!   folded and the local part exact.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{MAX_VALUE_CHARS, check_text, quoted, refuse};
use crate::domain::crypto::{hex, sha256};
use crate::domain::error::OAuthError;
use crate::domain::jose::{JwkSet, PublicJwk};

/// Which RFC 8705 §2.1.2 name a `tls_client_auth` client registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// `tls_client_auth_subject_dn`.
    SubjectDn,
    /// `tls_client_auth_san_dns`.
    SanDns,
    /// `tls_client_auth_san_uri`.
    SanUri,
    /// `tls_client_auth_san_ip`.
    SanIp,
    /// `tls_client_auth_san_email`.
    SanEmail,
}

impl SubjectKind {
    /// Every kind, in the order of RFC 8705 §2.1.2.
    pub const ALL: [Self; 5] = [
        Self::SubjectDn,
        Self::SanDns,
        Self::SanUri,
        Self::SanIp,
        Self::SanEmail,
    ];

    /// The registered metadata name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubjectDn => "tls_client_auth_subject_dn",
            Self::SanDns => "tls_client_auth_san_dns",
            Self::SanUri => "tls_client_auth_san_uri",
            Self::SanIp => "tls_client_auth_san_ip",
            Self::SanEmail => "tls_client_auth_san_email",
        }
    }
}

/// The certificate subject a `tls_client_auth` client registered: one name of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSubject {
    /// Which name.
    pub kind: SubjectKind,
    /// The value as registered (checked by [`TlsSubject::parse`]).
    pub value: String,
}

impl TlsSubject {
    /// Checks a registered value of `kind`.
    ///
    /// # Errors
    /// `invalid_request` about the metadata name, saying what is wrong.
    pub fn parse(kind: SubjectKind, value: &str) -> Result<Self, OAuthError> {
        let field = kind.as_str();
        check_text(field, value, MAX_VALUE_CHARS)?;
        if value.trim().is_empty() {
            return Err(refuse(field, "must not be empty"));
        }
        match kind {
            SubjectKind::SubjectDn => {
                parse_dn(value).map_err(|e| {
                    refuse(
                        field,
                        format_args!("is not an RFC 4514 distinguished name: {e}"),
                    )
                })?;
            }
            SubjectKind::SanDns => {
                if value.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
                    return Err(refuse(field, "must be a DNS name"));
                }
            }
            SubjectKind::SanUri => {
                url::Url::parse(value)
                    .map_err(|e| refuse(field, format_args!("is not an absolute URI: {e}")))?;
            }
            SubjectKind::SanIp => {
                value.parse::<IpAddr>().map_err(|_| {
                    refuse(
                        field,
                        format_args!("{} is not an IP address", quoted(value)),
                    )
                })?;
            }
            SubjectKind::SanEmail => {
                if !value
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                    || value.contains(char::is_whitespace)
                {
                    return Err(refuse(field, "must be an e-mail address (local@domain)"));
                }
            }
        }
        Ok(Self {
            kind,
            value: value.to_owned(),
        })
    }

    /// Does the leaf carry this name?
    #[must_use]
    pub fn matches(&self, leaf: &LeafFacts) -> bool {
        match self.kind {
            SubjectKind::SubjectDn => parse_dn(&self.value).is_ok_and(|dn| dn == leaf.subject),
            SubjectKind::SanDns => {
                let want = dns_key(&self.value);
                leaf.dns.iter().any(|d| dns_key(d) == want)
            }
            SubjectKind::SanUri => leaf.uris.contains(&self.value),
            SubjectKind::SanIp => self
                .value
                .parse::<IpAddr>()
                .is_ok_and(|ip| leaf.ips.contains(&ip)),
            SubjectKind::SanEmail => {
                let want = email_key(&self.value);
                leaf.emails.iter().any(|e| email_key(e) == want)
            }
        }
    }
}

/// Parses the registered subject names: none, or exactly one (RFC 8705 §2.1.2).
///
/// # Errors
/// `invalid_request` when more than one is given, or the one given is malformed.
pub fn parse_subject(values: &[(SubjectKind, String)]) -> Result<Option<TlsSubject>, OAuthError> {
    match values {
        [] => Ok(None),
        [(kind, value)] => TlsSubject::parse(*kind, value).map(Some),
        [(first, _), (second, _), ..] => Err(refuse(
            second.as_str(),
            format_args!(
                "cannot be registered together with {}: a tls_client_auth client registers exactly one certificate subject",
                first.as_str()
            ),
        )),
    }
}

fn dns_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn email_key(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => address.to_owned(),
    }
}

/// A client's mTLS settings, inside its `auth` settings (`clients.auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MtlsAuth {
    /// `tls_client_auth`: the subject its certificate must carry.
    pub subject: Option<TlsSubject>,
    /// `self_signed_tls_client_auth`: the `x5t#S256` thumbprints of its certificates.
    pub certificates: Vec<String>,
    /// `tls_client_certificate_bound_access_tokens` (RFC 8705 §3.4): bind its access tokens to
    /// the certificate it presents even when it authenticated otherwise. A client that
    /// authenticated with mTLS always gets bound tokens.
    pub bound_tokens: bool,
}

impl MtlsAuth {
    /// Adds the members to the stored JSON object.
    pub fn store_into(&self, o: &mut serde_json::Map<String, Value>) {
        if let Some(s) = &self.subject {
            o.insert(s.kind.as_str().into(), Value::String(s.value.clone()));
        }
        if !self.certificates.is_empty() {
            o.insert("tls_client_certificates".into(), json!(self.certificates));
        }
        if self.bound_tokens {
            o.insert(
                "tls_client_certificate_bound_access_tokens".into(),
                Value::Bool(true),
            );
        }
    }

    /// Reads the members of the stored JSON object.
    ///
    /// # Errors
    /// A member of the wrong type.
    pub fn from_stored(o: &serde_json::Map<String, Value>) -> Result<Self, String> {
        let mut subject = None;
        for kind in SubjectKind::ALL {
            match o.get(kind.as_str()) {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) => {
                    subject = Some(TlsSubject {
                        kind,
                        value: v.clone(),
                    });
                }
                Some(_) => return Err(format!("{} is not a string", kind.as_str())),
            }
        }
        let certificates = match o.get("tls_client_certificates") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("tls_client_certificates is not a list of strings")?,
            Some(_) => return Err("tls_client_certificates is not an array".into()),
        };
        Ok(Self {
            subject,
            certificates,
            bound_tokens: o
                .get("tls_client_certificate_bound_access_tokens")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// Does the leaf match one of the registered self-signed certificates or keys?
    #[must_use]
    pub fn self_signed_matches(&self, leaf: &LeafFacts, jwks: Option<&JwkSet>) -> bool {
        if self.certificates.contains(&leaf.x5t_s256) {
            return true;
        }
        jwks.into_iter().flat_map(JwkSet::keys).any(|k| {
            leaf.jwk_thumbprint.as_deref() == Some(k.thumbprint()) || x5c_holds(k, &leaf.sha256)
        })
    }
}

/// True if the JWK's `x5c` (RFC 7517 §4.7) starts with the certificate of this SHA-256.
fn x5c_holds(key: &PublicJwk, leaf_sha256: &[u8; 32]) -> bool {
    key.json()
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|chain| chain.first())
        .and_then(Value::as_str)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .is_some_and(|der| sha256(&der) == *leaf_sha256)
}

/// Parses one registered self-signed certificate: an `x5t#S256` (43 characters of base64url),
/// or a PEM certificate, whose thumbprint is kept. A PEM text may hold several certificates.
///
/// # Errors
/// `invalid_request` about `tls_client_certificates`.
pub fn parse_certificates(values: &[String]) -> Result<Vec<String>, OAuthError> {
    const FIELD: &str = "tls_client_certificates";
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let found: Vec<String> = if v.contains("-----BEGIN") {
            let ders = pem_certificates(v)
                .map_err(|e| refuse(FIELD, format_args!("holds a PEM text that {e}")))?;
            for der in &ders {
                LeafFacts::parse(der).map_err(|e| {
                    refuse(
                        FIELD,
                        format_args!("holds a certificate that is not X.509: {e}"),
                    )
                })?;
            }
            ders.iter()
                .map(|d| URL_SAFE_NO_PAD.encode(sha256(d)))
                .collect()
        } else {
            let t = v.trim();
            if URL_SAFE_NO_PAD.decode(t).map(|b| b.len()) != Ok(32) {
                return Err(refuse(
                    FIELD,
                    format_args!(
                        "{} is neither an x5t#S256 (base64url SHA-256, 43 characters) nor a PEM certificate",
                        quoted(t)
                    ),
                ));
            }
            vec![t.to_owned()]
        };
        for t in found {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if out.len() > 32 {
        return Err(refuse(FIELD, "may hold at most 32 certificates"));
    }
    Ok(out)
}

/// The DER of each `CERTIFICATE` block of a PEM text.
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = rest
            .get(start + "-----BEGIN CERTIFICATE-----".len()..)
            .ok_or("is cut short")?;
        let end = body
            .find("-----END CERTIFICATE-----")
            .ok_or("has no END CERTIFICATE line")?;
        let b64: String = body
            .get(..end)
            .ok_or("is cut short")?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        out.push(STANDARD.decode(b64).map_err(|_| "is not base64")?);
        rest = body
            .get(end + "-----END CERTIFICATE-----".len()..)
            .unwrap_or("");
    }
    if out.is_empty() {
        return Err("holds no CERTIFICATE block");
    }
    Ok(out)
}

/// One attribute of an RDN: (attribute type as a dotted OID, normalised value).
type Attribute = (String, String);

/// A distinguished name as compared: its RDNs in RFC 4514 order (most significant last),
/// each RDN's attributes sorted.
pub type Dn = Vec<Vec<Attribute>>;

/// The dotted OID of an RFC 4514 attribute name (or of a dotted OID, `OID.` prefix allowed).
fn attribute_oid(name: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    let oid = match lower.as_str() {
        "cn" => "2.5.4.3",
        "sn" => "2.5.4.4",
        "serialnumber" => "2.5.4.5",
        "c" => "2.5.4.6",
        "l" => "2.5.4.7",
        "st" => "2.5.4.8",
        "street" => "2.5.4.9",
        "o" => "2.5.4.10",
        "ou" => "2.5.4.11",
        "title" => "2.5.4.12",
        "dc" => "0.9.2342.19200300.100.1.25",
        "uid" => "0.9.2342.19200300.100.1.1",
        "emailaddress" | "e" => "1.2.840.113549.1.9.1",
        other => {
            let dotted = other.strip_prefix("oid.").unwrap_or(other);
            let ok = !dotted.is_empty()
                && dotted
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            return ok.then(|| dotted.to_owned());
        }
    };
    Some(oid.to_owned())
}

/// caseIgnoreMatch for comparison: ASCII case folded, outer spaces dropped, inner runs of
/// spaces as one.
fn fold(value: &str) -> String {
    value
        .split(' ')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Parses an RFC 4514 string into a [`Dn`].
///
/// # Errors
/// Says what is malformed.
pub fn parse_dn(text: &str) -> Result<Dn, String> {
    let mut rdns: Dn = Vec::new();
    let mut rdn: Vec<Attribute> = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // attributeType '='
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            name.push(c);
        }
        let oid = attribute_oid(&name)
            .ok_or_else(|| format!("{} is not an attribute type", quoted(name.trim())))?;
        // attributeValue, up to an unescaped ',' or '+'
        let mut bytes: Vec<u8> = Vec::new();
        let mut end = None;
        while let Some(c) = chars.next() {
            match c {
                ',' | '+' => {
                    end = Some(c);
                    break;
                }
                '\\' => match chars.next() {
                    Some(h) if h.is_ascii_hexdigit() => {
                        let l = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or("a \\ escape needs two hex digits or a special character")?;
                        let pair: String = [h, l].iter().collect();
                        bytes.push(u8::from_str_radix(&pair, 16).map_err(|e| e.to_string())?);
                    }
                    Some(s) => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(s.encode_utf8(&mut buf).as_bytes());
                    }
                    None => return Err("ends in a lone \\".into()),
                },
                other => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        let value = String::from_utf8(bytes).map_err(|_| "an escape is not UTF-8".to_owned())?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("the value of {} is empty", quoted(name.trim())));
        }
        rdn.push((oid, fold(value)));
        if end != Some('+') {
            rdn.sort();
            rdns.push(std::mem::take(&mut rdn));
        }
        if end.is_none() {
            break;
        }
    }
    Ok(rdns)
}

/// What a client certificate's leaf says, for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// The subject, as compared ([`Dn`]).
    pub subject: Dn,
    /// The subject as an RFC 4514 string, for the log.
    pub subject_text: String,
    /// subjectAltName dNSName entries.
    pub dns: Vec<String>,
    /// uniformResourceIdentifier entries.
    pub uris: Vec<String>,
    /// iPAddress entries.
    pub ips: Vec<IpAddr>,
    /// rfc822Name entries.
    pub emails: Vec<String>,
    /// SHA-256 of the DER.
    pub sha256: [u8; 32],
    /// Its `x5t#S256`.
    pub x5t_s256: String,
    /// The RFC 7638 thumbprint of its public key as a JWK, when the key is one a JWK can say
    /// (RSA, EC P-256, Ed25519).
    pub jwk_thumbprint: Option<String>,
}

impl LeafFacts {
    /// Reads a DER certificate.
    ///
    /// # Errors
    /// The parser's complaint.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let mut subject: Dn = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for rdn in cert.subject().iter() {
            let mut attrs: Vec<Attribute> = Vec::new();
            let mut shown: Vec<String> = Vec::new();
            for a in rdn.iter() {
                let oid = a.attr_type().to_id_string();
                let value = match a.as_str() {
                    Ok(s) => s.to_owned(),
                    Err(_) => format!("#{}", hex(a.as_slice())),
                };
                shown.push(format!("{oid}={}", escape_dn_value(&value)));
                attrs.push((oid, fold(&value)));
            }
            attrs.sort();
            subject.push(attrs);
            texts.push(shown.join("+"));
        }
        // RFC 4514 §2.1: the last RDN of the sequence is written first.
        subject.reverse();
        texts.reverse();
        let (mut dns, mut uris, mut ips, mut emails) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => emails.push((*e).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            ips.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            ips.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let digest = sha256(der);
        Ok(Self {
            subject,
            subject_text: texts.join(","),
            dns,
            uris,
            ips,
            emails,
            sha256: digest,
            x5t_s256: URL_SAFE_NO_PAD.encode(digest),
            jwk_thumbprint: spki_jwk(cert.public_key())
                .and_then(|j| PublicJwk::parse(&j).ok())
                .map(|k| k.thumbprint().to_owned()),
        })
    }
}

fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The public key of a certificate as a JWK (RSA, EC P-256, Ed25519), or `None`.
fn spki_jwk(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<Value> {
    use x509_parser::public_key::PublicKey;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let strip = |b: &[u8]| -> Vec<u8> {
        let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        b.get(first..).unwrap_or_default().to_vec()
    };
    let alg = spki.algorithm.algorithm.to_id_string();
    if alg == "1.3.101.112" {
        let x: &[u8] = &spki.subject_public_key.data;
        return Some(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}));
    }
    match spki.parsed().ok()? {
        PublicKey::RSA(k) => Some(json!({
            "kty": "RSA",
            "n": b64(&strip(k.modulus)),
            "e": b64(&strip(k.exponent)),
        })),
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if curve.as_deref() != Some("1.2.840.10045.3.1.7") {
                return None;
            }
            let data = point.data();
            let (tag, xy) = data.split_first()?;
            if *tag != 4 || xy.len() != 64 {
                return None;
            }
            let (x, y) = xy.split_at(32);
            Some(json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguished_names_compare_by_rfc_4514_rules() {
        let a = parse_dn("CN=Client One,O=Acme\\, Inc.,C=DE");
        let b = parse_dn("cn=client  one , o = ACME\\2C Inc., c=de");
        assert!(a.is_ok());
        assert_eq!(a, b);
        assert_ne!(parse_dn("CN=a,O=b"), parse_dn("O=b,CN=a"), "order matters");
        assert_eq!(parse_dn("CN=a+OU=x,O=b"), parse_dn("OU=x+CN=a,O=b"));
        assert_eq!(parse_dn("2.5.4.3=a"), parse_dn("CN=a"));
        assert!(parse_dn("CN=").is_err());
        assert!(parse_dn("NOPE=x").is_err());
        assert!(parse_dn("CN=a\\").is_err());
    }

    #[test]
    fn registered_subjects_are_checked_by_kind() {
        assert!(TlsSubject::parse(SubjectKind::SanIp, "10.0.0.1").is_ok());
        assert!(TlsSubject::parse(SubjectKind::SanIp, "10.0.0").is_err());
        assert!(TlsSubject::parse(SubjectKind::SanUri, "spiffe://acme/x").is_ok());
        assert!(TlsSubject::parse(SubjectKind::SanUri, "not a uri").is_err());
        assert!(TlsSubject::parse(SubjectKind::SanEmail, "a@b.example").is_ok());
        assert!(TlsSubject::parse(SubjectKind::SanEmail, "ab.example").is_err());
        assert!(TlsSubject::parse(SubjectKind::SanDns, "api.example").is_ok());
        assert!(TlsSubject::parse(SubjectKind::SanDns, "a b").is_err());
        assert!(TlsSubject::parse(SubjectKind::SubjectDn, "  ").is_err());
    }

    fn leaf_with(key: &rcgen::KeyPair) -> (Vec<u8>, LeafFacts) {
        use rcgen::{CertificateParams, DnType, SanType};
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CountryName, "DE");
        p.distinguished_name
            .push(DnType::OrganizationName, "Acme, Inc.");
        p.distinguished_name.push(DnType::CommonName, "billing");
        p.subject_alt_names = vec![
            SanType::DnsName("api.example".try_into().unwrap()),
            SanType::URI("spiffe://acme/billing".try_into().unwrap()),
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::Rfc822Name("ops@Acme.example".try_into().unwrap()),
        ];
        let der = p.self_signed(key).unwrap().der().to_vec();
        let facts = LeafFacts::parse(&der).unwrap();
        (der, facts)
    }

    #[test]
    fn a_leaf_matches_its_subject_and_each_subject_alt_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let (der, leaf) = leaf_with(&key);
        assert_eq!(
            leaf.subject_text,
            "2.5.4.3=billing,2.5.4.10=Acme\\, Inc.,2.5.4.6=DE"
        );
        assert_eq!(leaf.x5t_s256, URL_SAFE_NO_PAD.encode(sha256(&der)));
        for (kind, value, want) in [
            (
                SubjectKind::SubjectDn,
                "CN=billing,O=Acme\\, Inc.,C=DE",
                true,
            ),
            (
                SubjectKind::SubjectDn,
                "CN=billing,O=Acme\\2C Inc.,C=DE",
                true,
            ),
            (SubjectKind::SubjectDn, "CN=billing,O=Acme,C=DE", false),
            (SubjectKind::SanDns, "API.example.", true),
            (SubjectKind::SanDns, "example", false),
            (SubjectKind::SanUri, "spiffe://acme/billing", true),
            (SubjectKind::SanUri, "spiffe://acme/Billing", false),
            (SubjectKind::SanIp, "10.0.0.1", true),
            (SubjectKind::SanIp, "::ffff:10.0.0.1", false),
            (SubjectKind::SanEmail, "ops@acme.EXAMPLE", true),
            (SubjectKind::SanEmail, "Ops@acme.example", false),
        ] {
            let s = TlsSubject::parse(kind, value).unwrap();
            assert_eq!(s.matches(&leaf), want, "{kind:?} {value}");
        }
    }

    #[test]
    fn a_self_signed_leaf_matches_a_registered_thumbprint_or_its_key_in_jwks() {
        let key = rcgen::KeyPair::generate().unwrap();
        let (_, leaf) = leaf_with(&key);
        let raw = key.public_key_raw();
        let (x, y) = raw.get(1..).unwrap().split_at(32);
        let jwks = JwkSet::parse(&json!({"keys": [{"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]}))
        .unwrap();
        let none = MtlsAuth::default();
        assert!(none.self_signed_matches(&leaf, Some(&jwks)));
        assert!(!none.self_signed_matches(&leaf, None));
        let other = rcgen::KeyPair::generate().unwrap();
        let (_, other_leaf) = leaf_with(&other);
        assert!(!none.self_signed_matches(&other_leaf, Some(&jwks)));
        let registered = MtlsAuth {
            certificates: vec![leaf.x5t_s256.clone()],
            ..MtlsAuth::default()
        };
        assert!(registered.self_signed_matches(&leaf, None));
        assert!(!registered.self_signed_matches(&other_leaf, None));
    }

    #[test]
    fn certificates_register_as_thumbprints() {
        let t = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(
            parse_certificates(&[t.clone(), t.clone()]),
            Ok(vec![t.clone()])
        );
        assert!(parse_certificates(&["abc".into()]).is_err());
        assert!(
            parse_certificates(&[
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----".into()
            ])
            .is_err()
        );
    }
}
