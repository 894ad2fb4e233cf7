use super::*;
use crate::domain::crypto::RootKey;
use proptest::strategy::Strategy as _;

fn client(keys: &DerivedKeys, secret: &str) -> Client {
    Client {
        secret: SecretHash(keys.hash_secret(secret)),
        ..Client::fixture()
    }
}

#[test]
fn previous_secret_works_until_its_expiry() -> anyhow::Result<()> {
    let keys = RootKey::generate()?.derive()?;
    let mut c = client(&keys, "new");
    c.previous_secret = Some((SecretHash(keys.hash_secret("old")), 100));
    assert!(c.secret_matches("new", &keys, 50));
    assert!(c.secret_matches("old", &keys, 99));
    assert!(!c.secret_matches("old", &keys, 100));
    assert!(!c.secret_matches("other", &keys, 50));
    Ok(())
}

#[test]
fn origins_compare_by_scheme_host_and_port() -> anyhow::Result<()> {
    let keys = RootKey::generate()?.derive()?;
    let mut c = client(&keys, "s");
    assert!(c.check_origin(None).is_ok());
    c.origins = vec![parse_origin("https://App.example.com")?];
    assert!(c.check_origin(Some("https://app.example.com")).is_ok());
    assert!(
        c.check_origin(Some("https://app.example.com/page?q=1"))
            .is_ok()
    );
    assert!(
        c.check_origin(Some("https://app.example.com:8443"))
            .is_err()
    );
    assert!(c.check_origin(Some("http://app.example.com")).is_err());
    assert!(
        c.check_origin(Some("https://app.example.com.evil.test"))
            .is_err()
    );
    assert!(c.check_origin(None).is_err());
    assert!(parse_origin("https://a.test/path").is_err());
    assert!(parse_origin("ftp://a.test").is_err());
    // A default port in the request matches the stored form, which has none.
    assert!(c.check_origin(Some("https://app.example.com:443")).is_ok());
    Ok(())
}

#[test]
fn a_stored_origin_with_a_default_port_still_matches() {
    let c = Client {
        origins: vec!["https://app.example.com:443".into()],
        ..Client::fixture()
    };
    assert!(c.check_origin(Some("https://app.example.com")).is_ok());
    assert!(
        c.check_origin(Some("https://app.example.com:8443"))
            .is_err()
    );
}

#[test]
fn origins_are_stored_normalised() -> anyhow::Result<()> {
    for (given, stored) in [
        ("https://App.Example.COM", "https://app.example.com"),
        ("HTTPS://a.test/", "https://a.test"),
        ("https://a.test:443", "https://a.test"),
        ("http://a.test:80", "http://a.test"),
        ("http://a.test:443", "http://a.test:443"),
        ("https://a.test:8443", "https://a.test:8443"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ] {
        assert_eq!(parse_origin(given)?, stored, "{given}");
    }
    assert_eq!(
        parse_origins(&["https://a.test".into(), "https://A.test:443/".into()])?,
        vec!["https://a.test".to_owned()]
    );
    Ok(())
}

#[test]
fn values_that_are_not_web_origins_are_refused_naming_the_field() {
    for bad in [
        "https://a.com\u{0}",
        "https://a.com\n",
        "https://a .com",
        " https://a.com",
        "https://a.com:99999",
        "https://a.com:0",
        "https://a.com/path",
        "https://a.com//",
        "https://a.com?q",
        "https://a.com#f",
        "https://user@a.com",
        "https://user:pw@a.com",
        "https://a.com\\x",
        "https://%61.com",
        "https://",
        "https:///a.com",
        "https:a.com",
        "a.com",
        "ftp://a.com",
        "javascript://a.com",
        "https://999.1.1.1",
        "https://a\u{202e}b.com",
        "",
    ] {
        let e = parse_origin(bad).err();
        assert!(e.is_some(), "{bad:?} accepted");
        let e = e.unwrap_or_else(|| OAuthError::invalid_request(""));
        assert_eq!(e.field, Some("origins"), "{bad:?}");
        assert!(e.description.starts_with("origins "), "{}", e.description);
        assert!(
            !e.description.chars().any(is_forbidden_char),
            "{}",
            e.description
        );
    }
    let many: Vec<String> = (0..=MAX_LIST_ENTRIES)
        .map(|i| format!("https://a{i}.test"))
        .collect();
    assert!(parse_origins(&many).is_err());
}

#[test]
fn names_are_trimmed_bounded_and_free_of_control_and_bidi_characters() -> anyhow::Result<()> {
    assert_eq!(parse_name("  billing  ")?, "billing");
    assert_eq!(
        parse_name("Ünïcødé 名前 👨\u{200d}👩")?,
        "Ünïcødé 名前 👨\u{200d}👩"
    );
    assert_eq!(
        parse_name(&"n".repeat(MAX_NAME_CHARS))?.len(),
        MAX_NAME_CHARS
    );
    for bad in [
        String::new(),
        "   ".into(),
        "a\0b".into(),
        "a\u{1b}[31mred".into(),
        "line\nbreak".into(),
        "tab\there".into(),
        "trailing newline\n".into(),
        "del\u{7f}".into(),
        "c1\u{9b}".into(),
        "rtl\u{202e}txt".into(),
        "iso\u{2066}late".into(),
        "zw\u{200b}sp".into(),
        "bom\u{feff}".into(),
        "ls\u{2028}".into(),
        "n".repeat(MAX_NAME_CHARS + 1),
    ] {
        let e = parse_name(&bad).err();
        assert!(e.is_some(), "{bad:?} accepted");
        assert_eq!(e.map(|e| e.field), Some(Some("name")), "{bad:?}");
    }
    Ok(())
}

#[test]
fn audiences_resources_and_resource_servers_are_bounded_and_printable() -> anyhow::Result<()> {
    assert_eq!(parse_audience(Some(""))?, None);
    assert_eq!(
        parse_audience(Some("https://api"))?,
        Some("https://api".into())
    );
    assert_eq!(parse_resource_server(Some("none"))?, None);
    assert_eq!(parse_resource_server(Some("*"))?, Some("*".into()));
    let long = format!("https://a.test/{}", "x".repeat(MAX_VALUE_CHARS));
    for (field, result) in [
        ("audience", parse_audience(Some("a\0")).err()),
        ("audience", parse_audience(Some("a b")).err()),
        ("audience", parse_audience(Some(&long)).err()),
        (
            "resource_server",
            parse_resource_server(Some("x\u{1b}")).err(),
        ),
        ("resource_server", parse_resource_server(Some(&long)).err()),
        ("resources", parse_resource("urn:a\0").err()),
        ("resources", parse_resource(&long).err()),
    ] {
        assert_eq!(result.map(|e| e.field), Some(Some(field)));
    }
    Ok(())
}

#[test]
fn keep_old_is_bounded_at_thirty_days() {
    assert_eq!(check_keep_old(0).ok(), Some(0));
    assert_eq!(check_keep_old(MAX_KEEP_OLD).ok(), Some(2_592_000));
    assert_eq!(
        check_keep_old(MAX_KEEP_OLD + 1).err().map(|e| e.field),
        Some(Some("keep_old"))
    );
}

proptest::proptest! {
    #[test]
    fn any_value_with_a_control_or_bidi_character_is_refused(
        before in "[a-z]{0,8}",
        c in proptest::prop_oneof![0u32..0x20, 0x7fu32..0xa0, 0x202au32..0x202f, 0x2066u32..0x206a]
            .prop_filter_map("a char", char::from_u32),
        after in "[a-z]{0,8}",
    ) {
        let v = format!("{before}{c}{after}");
        let name = format!("n{v}n");
        let server = format!("x{v}");
        let resource = format!("urn:{v}");
        let origin = format!("https://{v}.test");
        proptest::prop_assert!(parse_name(&name).is_err());
        proptest::prop_assert!(parse_audience(Some(&v)).is_err());
        proptest::prop_assert!(parse_resource_server(Some(&server)).is_err());
        proptest::prop_assert!(parse_resource(&resource).is_err());
        proptest::prop_assert!(parse_origin(&origin).is_err());
    }

    #[test]
    fn valid_origins_round_trip_normalised(
        https in proptest::bool::ANY,
        labels in proptest::collection::vec("[a-zA-Z][a-zA-Z0-9]{0,9}", 1..4),
        port in proptest::option::of(1u16..=65535),
        slash in proptest::bool::ANY,
    ) {
        let scheme = if https { "HTTPS" } else { "http" };
        let host = labels.join(".");
        let given = format!(
            "{scheme}://{host}{}{}",
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            if slash { "/" } else { "" },
        );
        let default = if https { 443 } else { 80 };
        let expected = format!(
            "{}://{}{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase(),
            port.filter(|p| *p != default).map(|p| format!(":{p}")).unwrap_or_default()
        );
        proptest::prop_assert_eq!(parse_origin(&given).ok(), Some(expected.clone()));
        // The normal form is a fixed point, and a request sending the origin as given
        // matches it.
        proptest::prop_assert_eq!(parse_origin(&expected).ok(), Some(expected.clone()));
        proptest::prop_assert_eq!(normalize_origin(&given), expected);
    }
}
