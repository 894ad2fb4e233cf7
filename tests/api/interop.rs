//! Interop: an independent OAuth 2.0 client library (the `oauth2` crate) drives a
//! `rfc6749`-profile client through the endpoints it discovers from the metadata document.

use oauth2::basic::BasicClient;
use oauth2::{
    AccessToken, ClientId, ClientSecret, IntrospectionUrl, RevocationUrl, Scope,
    StandardRevocableToken, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use serde_json::Value;

use crate::helpers::*;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The oauth2 crate's HTTP hook, implemented with reqwest (the TLS tests use it too).
pub async fn send(
    http: reqwest::Client,
    req: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpError> {
    let err = |e: &dyn std::fmt::Display| HttpError(e.to_string());
    let (parts, body) = req.into_parts();
    let method =
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).map_err(|e| err(&e))?;
    let mut rb = http.request(method, parts.uri.to_string()).body(body);
    for (k, v) in &parts.headers {
        rb = rb.header(k.as_str(), v.as_bytes());
    }
    let resp = rb.send().await.map_err(|e| err(&e))?;
    let mut builder = axum::http::Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        builder = builder.header(k.as_str(), v.as_bytes());
    }
    let bytes = resp.bytes().await.map_err(|e| err(&e))?;
    builder.body(bytes.to_vec()).map_err(|e| err(&e))
}

#[tokio::test]
async fn an_oauth2_library_obtains_refreshes_introspects_and_revokes_tokens() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read", &["--profile", "rfc6749"]);
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    let url = |k: &str| meta[k].as_str().unwrap().to_owned();
    let client = BasicClient::new(ClientId::new(c.id.clone()))
        .set_client_secret(ClientSecret::new(c.secret.clone()))
        .set_token_uri(TokenUrl::new(url("token_endpoint")).unwrap())
        .set_revocation_url(RevocationUrl::new(url("revocation_endpoint")).unwrap())
        .set_introspection_url(IntrospectionUrl::new(url("introspection_endpoint")).unwrap());
    let http = reqwest::Client::new();
    let http_client = |req| send(http.clone(), req);

    let token = client
        .exchange_client_credentials()
        .add_scope(Scope::new("/ping.read".into()))
        .add_scope(Scope::new("/accounts.read".into()))
        .request_async(&http_client)
        .await
        .expect("client_credentials");
    assert_eq!(token.expires_in().unwrap().as_secs(), 3600);
    let scopes: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, ["/ping.read", "/accounts.read"]);
    assert_eq!(app.ping(token.access_token().secret()).await, 200);

    let refreshed = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .add_scope(Scope::new("/ping.read".into()))
        .request_async(&http_client)
        .await
        .expect("refresh_token");
    assert_ne!(
        refreshed.access_token().secret(),
        token.access_token().secret()
    );
    assert_eq!(refreshed.scopes().unwrap().len(), 1);

    let info = client
        .introspect(refreshed.access_token())
        .request_async(&http_client)
        .await
        .expect("introspect");
    assert!(info.active());
    assert_eq!(info.client_id().unwrap().as_str(), c.id);
    assert_eq!(
        info.token_type(),
        Some(&oauth2::basic::BasicTokenType::Bearer)
    );

    // The oauth2 crate refuses to send revocation requests over plain http (RFC 7009 §2.1
    // requires TLS), and the test server speaks http on loopback: check that refusal, then
    // revoke at the discovered revocation endpoint with an RFC 7009 request of our own.
    let refused = client.revoke_token(StandardRevocableToken::RefreshToken(
        refreshed.refresh_token().unwrap().clone(),
    ));
    assert!(format!("{:?}", refused.err()).contains("InsecureUrl"));
    let r = reqwest::Client::new()
        .post(url("revocation_endpoint"))
        .basic_auth(&c.id, Some(&c.secret))
        .header("content-type", FORM)
        .body(form(&[
            ("token", refreshed.refresh_token().unwrap().secret()),
            ("token_type_hint", "refresh_token"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "RFC 7009 success in the rfc6749 profile");
    let info = client
        .introspect(refreshed.access_token())
        .request_async(&http_client)
        .await
        .expect("introspect");
    assert!(
        !info.active(),
        "revoking the refresh token revoked its family"
    );

    // The library surfaces RFC 6749 errors as such.
    let err = client
        .exchange_client_credentials()
        .add_scope(Scope::new("/accounts.write".into()))
        .request_async(&http_client)
        .await
        .expect_err("disallowed scope");
    assert!(format!("{err:?}").contains("invalid_scope"), "{err:?}");
    let info = client
        .introspect(&AccessToken::new("garbage".into()))
        .request_async(&http_client)
        .await
        .unwrap();
    assert!(!info.active());
}
