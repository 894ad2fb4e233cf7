use super::*;

#[test]
fn an_empty_short_or_unprintable_admin_token_is_refused() {
    let load = |token: &str| {
        let token = token.to_owned();
        Settings::load_from(
            None,
            move |k| (k == "TESSERA_ADMIN_TOKEN").then(|| token.clone()),
            &[],
        )
        .map(|s| s.admin.token.is_some())
        .map_err(|e| e.to_string())
    };
    let refused = |token: &str, says: &str| {
        let e = load(token).err().unwrap_or_default();
        assert!(e.contains("admin_token"), "{token:?}: {e}");
        assert!(e.contains(says), "{token:?}: {e}");
        assert!(token.is_empty() || !e.contains(token), "{e}");
    };
    refused("", "empty");
    refused("short-token", "at least 32");
    refused(&"x".repeat(MIN_ADMIN_TOKEN_CHARS - 1), "at least 32");
    refused(&format!("{}\n", "x".repeat(40)), "visible ASCII");
    refused(
        &format!("{} {}", "x".repeat(20), "y".repeat(20)),
        "visible ASCII",
    );
    assert_eq!(load(&"x".repeat(MIN_ADMIN_TOKEN_CHARS)), Ok(true));
}

#[test]
fn a_metrics_token_is_held_to_the_admin_tokens_rules_and_must_differ_from_it() {
    let admin = "a".repeat(40);
    let load = |token: &str| {
        let (token, admin) = (token.to_owned(), admin.clone());
        Settings::load_from(
            None,
            move |k| match k {
                "TESSERA_METRICS_TOKEN" => Some(token.clone()),
                "TESSERA_ADMIN_TOKEN" => Some(admin.clone()),
                _ => None,
            },
            &[],
        )
        .map(|s| s.admin.metrics_token.is_some())
        .map_err(|e| e.to_string())
    };
    for (token, says) in [
        ("", "empty"),
        ("short-token", "at least 32"),
        (&format!("{}\n", "m".repeat(40)), "visible ASCII"),
        (&admin, "must differ from admin_token"),
    ] {
        let e = load(token).err().unwrap_or_default();
        assert!(e.contains("metrics_token"), "{token:?}: {e}");
        assert!(e.contains(says), "{token:?}: {e}");
        assert!(token.is_empty() || !e.contains(token), "{e}");
    }
    assert_eq!(load(&"m".repeat(MIN_ADMIN_TOKEN_CHARS)), Ok(true));
}

#[test]
fn flags_override_environment_which_overrides_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        "access_ttl = 100\nrefresh_ttl = 200\nlisten = \"0.0.0.0:1\"\n",
    )?;
    let env = |k: &str| (k == "TESSERA_REFRESH_TTL").then(|| "300".to_owned());
    let s = Settings::load_from(Some(&file), env, &[("listen", "127.0.0.1:9".into())])?;
    assert_eq!(
        (
            s.tokens.access_ttl,
            s.tokens.refresh_ttl,
            s.server.listen.as_str()
        ),
        (100, 300, "127.0.0.1:9")
    );
    assert_eq!(s.issuer(), "http://127.0.0.1:9");
    Ok(())
}

#[test]
fn bad_values_and_unknown_settings_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("t.toml");
    std::fs::write(&file, "acess_ttl = 100\n")?;
    assert!(Settings::load_from(Some(&file), |_| None, &[]).is_err());
    let env = |k: &str| (k == "TESSERA_DEFAULT_PROFILE").then(|| "fancy".to_owned());
    assert!(Settings::load_from(None, env, &[]).is_err());
    assert!(Settings::load_from(None, |_| None, &[("access_ttl", "0".into())]).is_err());
    for (name, bad) in [
        ("header_timeout", "0"),
        ("body_timeout", "3601"),
        ("idle_timeout", "0"),
        ("admin_max_connections", "0"),
    ] {
        assert!(
            Settings::load_from(None, |_| None, &[(name, bad.into())]).is_err(),
            "{name} = {bad} was accepted"
        );
    }
    Ok(())
}

/// The rows of the settings table in `docs/configuration.md` (the first table under
/// `## Settings`), as their first four cells: name, environment variable, flag, default.
fn documented_settings(doc: &str) -> Vec<[String; 4]> {
    doc.lines()
        .skip_while(|line| *line != "## Settings")
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let mut cells = line.trim_start_matches('|').splitn(5, '|').map(str::trim);
            std::array::from_fn(|_| cells.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Every way `docs/configuration.md`'s settings table disagrees with [`SETTINGS`].
fn disagreements(doc: &str) -> Vec<String> {
    let rows = documented_settings(doc);
    let mut wrong = Vec::new();
    for row in &rows {
        let [name, ..] = row;
        let known = SETTINGS.iter().any(|s| format!("`{}`", s.name) == *name);
        if !known {
            wrong.push(format!(
                "the table documents {name}, which is not a setting"
            ));
        }
        if rows.iter().filter(|r| r[0] == *name).count() > 1 {
            wrong.push(format!("the table documents {name} more than once"));
        }
    }
    for s in SETTINGS {
        let name = s.name;
        if SETTINGS.iter().filter(|t| t.name == name).count() > 1 {
            wrong.push(format!("the code has more than one setting named `{name}`"));
        }
        let Some([_, env, flag, default]) = rows.iter().find(|r| r[0] == format!("`{name}`"))
        else {
            wrong.push(format!("the table has no row for the setting `{name}`"));
            continue;
        };
        let want_env = format!("`{}`", s.env_var());
        if *env != want_env {
            wrong.push(format!(
                "`{name}`: the table says environment variable {env}, the code {want_env}"
            ));
        }
        let want_flag = match s.flag {
            Flag::Serve => format!("`--{}`", s.flag_name()),
            Flag::Global => format!("`--{}` (global)", s.flag_name()),
            Flag::No => "—".to_owned(),
        };
        if *flag != want_flag {
            wrong.push(format!(
                "`{name}`: the table says flag {flag}, the code {want_flag}"
            ));
        }
        // A default may be followed by a note: "`2592000` (30 days)", "`0`: automatic".
        let agrees = match (s.default)() {
            Some(value) => default
                .strip_prefix(&format!("`{value}`"))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', ':'])),
            None => *default == s.unset,
        };
        if !agrees {
            let code = (s.default)().map_or_else(|| s.unset.to_owned(), |v| format!("`{v}`"));
            wrong.push(format!(
                "`{name}`: the table says default {default}, the code {code}"
            ));
        }
    }
    wrong
}

#[test]
fn the_documented_settings_table_matches_every_setting_name_env_var_flag_and_default()
-> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path)?;
    let wrong = disagreements(&doc);
    assert!(
        wrong.is_empty(),
        "docs/configuration.md disagrees with the settings in src/config.rs:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

#[test]
fn a_documented_default_flag_or_setting_that_differs_from_the_code_is_named() {
    let doc = "## Settings\n\n| name | env | flag | default | meaning |\n|---|---|---|---|---|\n\
        | `access_ttl` | `TESSERA_ACCESS_TTL` | `--access-ttl` | `3601` | … |\n\
        | `refresh_ttl` | `TESSERA_REFRESH` | — | `2592000` (30 days) | … |\n\
        | `issuer` | `TESSERA_ISSUER` | `--issuer` | none | … |\n\
        | `acess_ttl` | `TESSERA_ACESS_TTL` | — | `1` | … |\n";
    let wrong = disagreements(doc);
    for says in [
        "`access_ttl`: the table says default `3601`, the code `3600`",
        "`refresh_ttl`: the table says environment variable `TESSERA_REFRESH`, the code \
         `TESSERA_REFRESH_TTL`",
        "`refresh_ttl`: the table says flag —, the code `--refresh-ttl`",
        "`issuer`: the table says default none, the code `http://<bound listen address>` \
         (`https://` with `tls_cert`)",
        "the table documents `acess_ttl`, which is not a setting",
        "the table has no row for the setting `listen`",
    ] {
        assert!(
            wrong.iter().any(|w| w == says),
            "{says:?} not in {wrong:#?}"
        );
    }
    assert!(
        !wrong
            .iter()
            .any(|w| w.starts_with("`refresh_ttl`: the table says default")),
        "{wrong:#?}"
    );
}

#[test]
fn a_wrong_type_names_the_setting_and_a_nested_table_is_an_unknown_setting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("t.toml");
    let refusal = |toml: &str| -> anyhow::Result<String> {
        std::fs::write(&file, toml)?;
        Ok(Settings::load_from(Some(&file), |_| None, &[])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default())
    };
    assert_eq!(
        refusal("access_ttl = \"soon\"\n")?,
        "invalid configuration: access_ttl: expected an integer, found string"
    );
    assert_eq!(
        refusal("admin_token = 12345\n")?,
        "invalid configuration: admin_token: expected a string, found integer"
    );
    assert_eq!(
        refusal("database_max_connections = -1\n")?,
        "invalid configuration: database_max_connections: -1 is not between 0 and 4294967295"
    );
    let nested = refusal("[tokens]\naccess_ttl = 900\n")?;
    assert!(
        nested.starts_with(
            "invalid configuration: unknown setting `tokens`, expected one of `listen`, "
        ),
        "{nested}"
    );
    assert!(nested.contains(", `access_ttl`, "), "{nested}");
    Ok(())
}

#[test]
fn master_key_is_not_shown_by_debug() -> anyhow::Result<()> {
    let env = |k: &str| (k == "TESSERA_MASTER_KEY").then(|| "c2VjcmV0".to_owned());
    let s = Settings::load_from(None, env, &[])?;
    assert!(!format!("{s:?}").contains("c2VjcmV0"));
    Ok(())
}

#[test]
fn tls_settings_come_in_pairs_and_a_proxy_header_needs_its_proxies() {
    let load = |flags: &[(&str, &str)]| {
        let flags: Vec<(&str, String)> = flags.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Settings::load_from(None, |_| None, &flags).map_err(|e| format!("{e:#}"))
    };
    let e = load(&[("tls_cert", "c.pem")]).unwrap_err();
    assert!(e.contains("tls_cert is set without tls_key"), "{e}");
    let e = load(&[("tls_key", "k.pem")]).unwrap_err();
    assert!(e.contains("tls_key is set without tls_cert"), "{e}");
    let e = load(&[("admin_tls_key", "k.pem")]).unwrap_err();
    assert!(
        e.contains("admin_tls_key is set without admin_tls_cert"),
        "{e}"
    );
    let e = load(&[("tls_client_cert_header", "X-Client-Cert")]).unwrap_err();
    assert!(e.contains("tls_client_cert_proxies is empty"), "{e}");
    let e = load(&[
        ("tls_client_cert_header", "X Client Cert"),
        ("tls_client_cert_proxies", "10.0.0.1"),
    ])
    .unwrap_err();
    assert!(e.contains("is not a header name"), "{e}");
    let e = load(&[
        ("tls_client_cert_header", "X-Client-Cert"),
        ("tls_client_cert_proxies", "10.0.0.1 proxy.local"),
    ])
    .unwrap_err();
    assert!(
        e.contains("\"proxy.local\" is not an IP address or network"),
        "{e}"
    );
    let e = load(&[("tls_client_cert_proxies", "10.0.0.1")]).unwrap_err();
    assert!(e.contains("without tls_client_cert_header"), "{e}");

    let s = load(&[
        ("listen", "127.0.0.1:9"),
        ("tls_cert", "c.pem"),
        ("tls_key", "k.pem"),
    ])
    .unwrap();
    assert_eq!(s.issuer(), "https://127.0.0.1:9");
    assert_eq!(s.tls.admin_files(), s.tls.public_files());
    let s = load(&[
        ("tls_cert", "c.pem"),
        ("tls_key", "k.pem"),
        ("admin_tls_cert", "ac.pem"),
        ("admin_tls_key", "ak.pem"),
    ])
    .unwrap();
    assert_eq!(
        s.tls.admin_files().map(|f| f.cert),
        Some(std::path::PathBuf::from("ac.pem"))
    );
}
