#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;

/// A self-signed certificate for `localhost` valid from `from` to `until` (years), and its key.
fn certificate(from: i32, until: i32) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x23, 0x45]));
    (params.self_signed(&key).unwrap(), key)
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

fn load_error(files: &TlsFiles) -> String {
    match load(files, SystemTime::now()) {
        Ok(_) => panic!("loaded"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn certificate_times_are_read_in_both_asn1_forms() {
    let utc = cert_time(UTC_TIME, b"491231235959Z").unwrap();
    assert_eq!(utc.text, "2049-12-31 23:59:59 UTC");
    assert_eq!(utc.unix, 2_524_607_999);
    let old = cert_time(UTC_TIME, b"700101000000Z").unwrap();
    assert_eq!(old.unix, 0);
    let generalized = cert_time(GENERALIZED_TIME, b"20500101000000Z").unwrap();
    assert_eq!(generalized.unix, 2_524_608_000);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    for bad in [
        &b"491231235959"[..],
        b"4912312359590",
        b"491331235959Z",
        b"49123123595aZ",
    ] {
        assert!(cert_time(UTC_TIME, bad).is_err(), "{bad:?}");
    }
    assert!(cert_time(0x04, b"491231235959Z").is_err());
}

#[test]
fn a_matching_pair_loads_and_its_facts_are_the_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(2020, 2099);
    let files = write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
    let loaded = load(&files, SystemTime::now()).unwrap();
    assert_eq!(loaded.facts.serial, "012345");
    assert_eq!(loaded.facts.sha256, hex(&sha256(cert.der())));
    assert_eq!(loaded.facts.not_after.text, "2099-01-01 00:00:00 UTC");
    assert!(loaded.facts.ecdsa);
    assert_eq!(loaded.key.cert.len(), 1);
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused_with_its_date() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(2001, 2002);
    let files = write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
    let e = load_error(&files);
    assert!(e.contains("expired on 2002-01-01 00:00:00 UTC"), "{e}");
    let (cert, key) = certificate(2090, 2099);
    let files = write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
    let e = load_error(&files);
    assert!(
        e.contains("is not valid before 2090-01-01 00:00:00 UTC"),
        "{e}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(2020, 2099);
    let other = rcgen::KeyPair::generate().unwrap();
    let files = write_pair(dir.path(), &cert.pem(), &other.serialize_pem());
    let e = load_error(&files);
    assert!(e.contains("is not the key of the certificate"), "{e}");
}

#[test]
fn files_without_a_certificate_or_a_key_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(2020, 2099);
    let files = write_pair(dir.path(), "not a certificate\n", &key.serialize_pem());
    let e = load_error(&files);
    assert!(e.contains("cert.pem holds no PEM CERTIFICATE"), "{e}");

    let files = write_pair(dir.path(), &key.serialize_pem(), &cert.pem());
    let e = load_error(&files);
    assert!(e.contains("cert.pem holds no PEM CERTIFICATE"), "{e}");

    let files = write_pair(
        dir.path(),
        &cert.pem(),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let e = load_error(&files);
    assert!(
        e.contains("key.pem holds no unencrypted PEM private key"),
        "{e}"
    );

    let garbled = cert.pem().replace("-----END CERTIFICATE-----", "");
    let files = write_pair(dir.path(), &garbled, &key.serialize_pem());
    let e = load_error(&files);
    assert!(e.contains("cert.pem is not valid PEM"), "{e}");

    let files = TlsFiles {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("key.pem"),
    };
    let e = load_error(&files);
    assert!(e.contains("reading the TLS certificate"), "{e}");
    assert!(e.contains("missing.pem"), "{e}");
}

#[test]
fn a_der_that_is_not_a_certificate_is_refused() {
    assert!(parse_certificate(&[]).is_err());
    assert!(parse_certificate(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    assert!(parse_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    let (cert, _) = certificate(2020, 2099);
    let mut trailing = cert.der().to_vec();
    trailing.push(0);
    assert!(parse_certificate(&trailing).is_err());
    assert!(parse_certificate(cert.der()).is_ok());
}

/// `s` escaped as nginx's `$ssl_client_escaped_cert` does: everything but unreserved
/// characters as `%XX`.
fn escaped(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn a_url_encoded_pem_header_gives_the_leaf_and_its_chain() {
    let (leaf, _) = certificate(2020, 2099);
    let (ca, _) = certificate(2020, 2099);
    let both = format!("{}{}", leaf.pem(), ca.pem());
    let ProxyCert::Present(cert) = certificate_from_header(escaped(&both).as_bytes()) else {
        panic!("no certificate");
    };
    assert_eq!(cert.leaf, leaf.der().to_vec());
    assert_eq!(cert.chain, vec![ca.der().to_vec()]);
    assert_eq!(cert.source, CertificateSource::ProxyHeader);
    assert_eq!(
        cert.x5t_s256(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(leaf.der()))
    );

    // Only the newlines and the spaces of the delimiters escaped, `+` and `/` left as they are
    // (AWS ALB's form): `+` stays a `+`.
    let light = leaf.pem().replace('\n', "%0A").replace(' ', "%20");
    let ProxyCert::Present(cert) = certificate_from_header(light.as_bytes()) else {
        panic!("no certificate");
    };
    assert_eq!(cert.leaf, leaf.der().to_vec());
    assert!(cert.chain.is_empty());
}

#[test]
fn an_empty_or_malformed_header_is_no_certificate() {
    assert_eq!(certificate_from_header(b""), ProxyCert::Absent);
    assert_eq!(certificate_from_header(b"  "), ProxyCert::Absent);
    assert_eq!(
        certificate_from_header(b"%zz"),
        ProxyCert::Invalid("no PEM CERTIFICATE")
    );
    assert_eq!(
        certificate_from_header(b"hello"),
        ProxyCert::Invalid("no PEM CERTIFICATE")
    );
    let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        certificate_from_header(escaped(not_x509).as_bytes()),
        ProxyCert::Invalid("not an X.509 certificate")
    );
}

#[test]
fn the_header_is_trusted_only_from_the_listed_proxies_and_only_once() {
    let header = ProxyCertHeader {
        name: HeaderName::from_static("x-client-cert"),
        proxies: vec![
            proxy_network("10.1.0.0/16").unwrap(),
            proxy_network("::1").unwrap(),
        ],
    };
    assert!(header.trusts("10.1.2.3".parse().unwrap()));
    assert!(header.trusts("::ffff:10.1.2.3".parse().unwrap()));
    assert!(header.trusts("::1".parse().unwrap()));
    assert!(!header.trusts("10.2.0.1".parse().unwrap()));
    assert!(!header.trusts("127.0.0.1".parse().unwrap()));

    let (leaf, _) = certificate(2020, 2099);
    let mut headers = HeaderMap::new();
    assert_eq!(header.read(&headers), ProxyCert::Absent);
    headers.append("x-client-cert", escaped(&leaf.pem()).parse().unwrap());
    assert!(matches!(header.read(&headers), ProxyCert::Present(_)));
    headers.append("x-client-cert", escaped(&leaf.pem()).parse().unwrap());
    assert_eq!(
        header.read(&headers),
        ProxyCert::Invalid("the header appears more than once")
    );
}

#[test]
fn proxy_networks_are_networks_or_single_addresses() {
    let trusts = |net: &str, ip: &str| {
        proxy_network(net)
            .unwrap()
            .contains(&ip.parse::<IpAddr>().unwrap())
    };
    assert!(trusts("192.168.0.0/24", "192.168.0.200"));
    assert!(!trusts("192.168.0.0/24", "192.168.1.1"));
    assert!(!trusts("192.168.0.0/24", "::1"));
    assert!(trusts("0.0.0.0/0", "8.8.8.8"));
    assert!(trusts("fd00::/8", "fd12::1"));
    assert!(!trusts("fd00::/8", "fe80::1"));
    assert!(trusts("10.0.0.1", "10.0.0.1"));
    assert!(!trusts("10.0.0.1", "10.0.0.2"));
    assert!(trusts("::ffff:10.0.0.1", "10.0.0.1"));
    assert!(trusts("::1", "::1"));
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "example.com",
        "10.0.0.0/",
        "10.0.0.0/x",
        "",
    ] {
        let e = proxy_network(bad).unwrap_err();
        assert!(e.contains("is not an IP address or network"), "{e}");
    }
}

#[test]
fn a_tls_client_certificate_is_its_leaf_and_the_rest_of_its_chain() {
    let (leaf, _) = certificate(2020, 2099);
    let (ca, _) = certificate(2020, 2099);
    let cert = ClientCertificate::from_tls(&[leaf.der().clone(), ca.der().clone()]).unwrap();
    assert_eq!(cert.leaf, leaf.der().to_vec());
    assert_eq!(cert.chain, vec![ca.der().to_vec()]);
    assert_eq!(cert.source, CertificateSource::Tls);
    assert!(ClientCertificate::from_tls(&[]).is_none());
}

#[test]
fn a_changed_file_is_reloaded_and_a_bad_one_keeps_the_current_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(2020, 2099);
    let files = write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
    let tls = Tls::open("public", files.clone(), true).unwrap();
    let served = || tls.served_certificate();
    assert_eq!(served(), cert.der().to_vec());
    tls.reload_if_changed();
    assert_eq!(served(), cert.der().to_vec());

    // A key that does not match: refused, the old certificate stays.
    let (next, next_key) = certificate(2020, 2098);
    std::fs::write(&files.cert, next.pem()).unwrap();
    assert!(!tls.reload("signal"));
    assert_eq!(served(), cert.der().to_vec());

    // The key follows: the pair loads.
    std::fs::write(&files.key, next_key.serialize_pem()).unwrap();
    assert!(tls.reload("signal"));
    assert_eq!(served(), next.der().to_vec());

    // A rename over the file (a new inode) is seen without a signal.
    let (third, third_key) = certificate(2020, 2097);
    let staged = dir.path().join("staged.pem");
    std::fs::write(
        &staged,
        format!("{}{}", third.pem(), third_key.serialize_pem()),
    )
    .unwrap();
    std::fs::write(&files.key, third_key.serialize_pem()).unwrap();
    std::fs::rename(&staged, &files.cert).unwrap();
    tls.reload_if_changed();
    assert_eq!(served(), third.der().to_vec());
}
