// Drives Tessera with panva's oauth4webapi (the client) and jose (JWT checks), the way an
// independent client of the standards would. Run by tests/api/interop_clients.rs; by hand, see
// docs/interop.md.
//
//   node tests/interop/oauth4webapi.mjs FLOW [ARGS…]
//
// FLOW is one of:
//   keygen ALG FILE   generate a key pair for ALG (ES256, EdDSA, PS256) with the library, write
//                     the private JWK (with kid = its RFC 7638 thumbprint) to FILE, print the
//                     public JWK
//   secrets           client_secret_basic and client_secret_post: client_credentials, /ping,
//                     refresh_token, introspection, revocation, refresh-token reuse
//   jwt               a JWT access token checked by jose against the discovered JWKS and by
//                     oauth4webapi's RFC 9068 validator
//   introspection-jwt introspection answers as signed JWTs (RFC 9701), verified by the library
//   private-key-jwt   the same grants, introspection and revocation with private_key_jwt
//   dpop              DPoP-bound tokens (RFC 9449), authenticated with private_key_jwt
//   capture           one client_credentials request (private_key_jwt if TESSERA_CLIENT_KEY is
//                     set, else client_secret_basic; DPoP if TESSERA_DPOP_ALG is set), reported
//                     as sent, for a replay test
//
// Environment: TESSERA_ISSUER (required), TESSERA_CLIENT_ID, TESSERA_CLIENT_SECRET,
// TESSERA_CLIENT_KEY (a private JWK file from keygen), TESSERA_SCOPE (default "/ping.read"),
// TESSERA_AUDIENCE (expected `aud` of JWTs, default the issuer), TESSERA_DPOP_ALG (the DPoP
// key's algorithm, default ES256), TESSERA_RETRY_REFRESH (dpop: refresh twice with one refresh
// token), TESSERA_INTEROP_DIR (where tests/interop/setup installed the packages, default
// target/interop).
//
// Prints one JSON object on stdout: {"ok": true, …what was observed…}, or {"ok": false, "step",
// "error"} and exit status 1. The Rust test asserts on the observations; the checks made here
// are those the library needs to go on.

import { readFileSync, writeFileSync } from 'node:fs';

import { describe, env, jose, main, oauth, out, refused, step, summary } from './lib.mjs';

// Most tests serve plain HTTP on loopback, which the library refuses unless told otherwise; over
// https:// it is told nothing (the test CA comes from NODE_EXTRA_CA_CERTS).
const insecure = process.env.TESSERA_ISSUER?.startsWith('http:') ? { [oauth.allowInsecureRequests]: true } : {};

async function discover() {
  step('discovery');
  const issuer = new URL(env('TESSERA_ISSUER'));
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure });
  const as = await oauth.processDiscoveryResponse(issuer, res);
  out.discovery = {
    issuer: as.issuer,
    token_endpoint: as.token_endpoint,
    introspection_endpoint: as.introspection_endpoint,
    revocation_endpoint: as.revocation_endpoint,
    jwks_uri: as.jwks_uri,
    token_endpoint_auth_methods_supported: as.token_endpoint_auth_methods_supported,
    dpop_signing_alg_values_supported: as.dpop_signing_alg_values_supported,
  };
  return as;
}

function client() {
  return { client_id: env('TESSERA_CLIENT_ID') };
}

/**
 * Runs a request, retrying while the server asks for a (new) DPoP nonce; the DPoP handle keeps
 * the nonce the server sent. Counts the retries in `out.nonce_retries[label]`.
 */
async function withNonce(label, fn) {
  out.nonce_retries ??= {};
  out.nonce_retries[label] ??= 0;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt < 2 && oauth.isDPoPNonceError(err)) {
        out.nonce_retries[label]++;
        continue;
      }
      throw err;
    }
  }
}

async function clientCredentials(as, c, auth, scope, options = {}) {
  const res = await oauth.clientCredentialsGrantRequest(as, c, auth, { scope }, { ...options, ...insecure });
  return oauth.processClientCredentialsResponse(as, c, res);
}

async function refresh(as, c, auth, refreshToken, options = {}) {
  const res = await oauth.refreshTokenGrantRequest(as, c, auth, refreshToken, { ...options, ...insecure });
  return oauth.processRefreshTokenResponse(as, c, res);
}

async function introspect(as, c, auth, token) {
  const res = await oauth.introspectionRequest(as, c, auth, token, insecure);
  return oauth.processIntrospectionResponse(as, c, res);
}

async function revoke(as, c, auth, token) {
  const res = await oauth.revocationRequest(as, c, auth, token, insecure);
  await oauth.processRevocationResponse(res);
}

/** `GET /ping` through the library's protected-resource helper; the status, or the refusal. */
async function ping(as, accessToken, options = {}) {
  const url = new URL('/ping', as.issuer);
  try {
    const res = await oauth.protectedResourceRequest(accessToken, 'GET', url, undefined, undefined, {
      ...options,
      ...insecure,
    });
    return { status: res.status };
  } catch (err) {
    // A nonce request goes up to withNonce, which retries; any other refusal is the answer.
    if (oauth.isDPoPNonceError(err)) throw err;
    return describe(err);
  }
}

/** `GET /ping` with a hand-made Authorization header (no DPoP proof). */
async function rawPing(as, authorization) {
  const res = await fetch(new URL('/ping', as.issuer), { headers: { authorization } });
  return { status: res.status, www_authenticate: res.headers.get('www-authenticate') };
}

async function keygen(alg, file) {
  step('keygen');
  const { privateKey, publicKey } = await oauth.generateKeyPair(alg, { extractable: true });
  const pub = await jose.exportJWK(publicKey);
  const kid = await jose.calculateJwkThumbprint(pub, 'sha256');
  const priv = { ...(await jose.exportJWK(privateKey)), kid, alg };
  writeFileSync(file, JSON.stringify(priv), { mode: 0o600 });
  out.public_jwk = { ...pub, kid, alg, use: 'sig' };
}

/** The client's private key (from keygen) as the library's PrivateKeyJwt authentication. */
async function privateKeyJwt() {
  const jwk = JSON.parse(readFileSync(env('TESSERA_CLIENT_KEY'), 'utf8'));
  const key = await jose.importJWK(jwk, jwk.alg);
  out.client_key = { alg: jwk.alg, kid: jwk.kid };
  return oauth.PrivateKeyJwt({ key, kid: jwk.kid });
}

async function secrets() {
  const as = await discover();
  const c = client();
  const secret = env('TESSERA_CLIENT_SECRET');
  const scope = env('TESSERA_SCOPE', '/ping.read');
  const basic = oauth.ClientSecretBasic(secret);
  const post = oauth.ClientSecretPost(secret);

  step('client_credentials (client_secret_basic)');
  const first = await clientCredentials(as, c, basic, scope);
  out.basic = summary(first);
  step('client_credentials (client_secret_post)');
  const second = await clientCredentials(as, c, post, scope);
  out.post = summary(second);

  step('ping');
  out.ping = await ping(as, first.access_token);

  step('refresh_token');
  const renewed = await refresh(as, c, basic, first.refresh_token);
  out.refreshed = summary(renewed);
  out.refresh_rotated = renewed.refresh_token !== first.refresh_token;

  step('introspection');
  out.introspect_access = await introspect(as, c, basic, renewed.access_token);
  out.introspect_refresh = await introspect(as, c, post, renewed.refresh_token);

  step('revocation');
  await revoke(as, c, post, renewed.refresh_token);
  out.after_revoke = {
    access: await introspect(as, c, basic, renewed.access_token),
    refresh: await introspect(as, c, basic, renewed.refresh_token),
    ping: await ping(as, renewed.access_token),
  };
  // The other grant's family is untouched.
  out.other_family = await introspect(as, c, basic, second.access_token);

  step('refresh-token reuse');
  out.reuse = await refused(() => refresh(as, c, basic, first.refresh_token));

  step('refusals');
  out.wrong_secret_basic = await refused(() => clientCredentials(as, c, oauth.ClientSecretBasic('tes_sk_wrong'), scope));
  out.wrong_secret_post = await refused(() => clientCredentials(as, c, oauth.ClientSecretPost('tes_sk_wrong'), scope));
  out.scope_not_allowed = await refused(() => clientCredentials(as, c, basic, '/fed.read'));
}

async function jwt() {
  const as = await discover();
  const c = client();
  const basic = oauth.ClientSecretBasic(env('TESSERA_CLIENT_SECRET'));
  const audience = env('TESSERA_AUDIENCE', as.issuer);

  step('client_credentials');
  const t = await clientCredentials(as, c, basic, env('TESSERA_SCOPE', '/ping.read'));
  out.token = summary(t);

  step('jose jwtVerify against the discovered JWKS');
  const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(t.access_token, jwks, {
    issuer: as.issuer,
    audience,
    typ: 'at+jwt',
  });
  out.header = protectedHeader;
  out.claims = payload;

  step('oauth4webapi validateJwtAccessToken (RFC 9068)');
  const request = new Request(new URL('/ping', as.issuer), {
    headers: { authorization: `Bearer ${t.access_token}` },
  });
  const claims = await oauth.validateJwtAccessToken(as, request, audience, insecure);
  out.rfc9068_client_id = claims.client_id;

  step('tampered token');
  const [h, , s] = t.access_token.split('.');
  const forged = jose.base64url.encode(
    JSON.stringify({ ...payload, scope: `${payload.scope} /accounts.write` }),
  );
  out.tampered = await refused(() => jose.jwtVerify(`${h}.${forged}.${s}`, jwks, { issuer: as.issuer }));
  }

/** RFC 9701: introspection answered as a signed JWT, which the library verifies. */
async function introspectionJwt() {
  const as = await discover();
  const c = client();
  const basic = oauth.ClientSecretBasic(env('TESSERA_CLIENT_SECRET'));
  out.introspection_signing_alg_values_supported = as.introspection_signing_alg_values_supported;
  const signed = async (token) => {
    const res = await oauth.introspectionRequest(as, c, basic, token, { requestJwtResponse: true, ...insecure });
    out.content_types = [...(out.content_types ?? []), res.headers.get('content-type')];
    return oauth.processIntrospectionResponse(as, c, res);
  };

  step('client_credentials');
  const t = await clientCredentials(as, c, basic, env('TESSERA_SCOPE', '/ping.read'));
  step('introspection as a JWT');
  out.introspect_access = await signed(t.access_token);
  out.introspect_refresh = await signed(t.refresh_token);
  step('revocation, then introspection as a JWT');
  await revoke(as, c, basic, t.refresh_token);
  out.after_revoke = await signed(t.access_token);
}

async function privateKeyJwtFlow() {
  const as = await discover();
  const c = client();
  const auth = await privateKeyJwt();

  step('client_credentials (private_key_jwt)');
  const t = await clientCredentials(as, c, auth, env('TESSERA_SCOPE', '/ping.read'));
  out.token = summary(t);
  step('ping');
  out.ping = await ping(as, t.access_token);

  step('refresh_token (private_key_jwt)');
  const renewed = await refresh(as, c, auth, t.refresh_token);
  out.refreshed = summary(renewed);

  step('introspection (private_key_jwt)');
  out.introspect_access = await introspect(as, c, auth, renewed.access_token);

  step('revocation (private_key_jwt)');
  await revoke(as, c, auth, renewed.refresh_token);
  out.after_revoke = await introspect(as, c, auth, renewed.access_token);

  // A shared-secret attempt by a client registered for private_key_jwt only.
  if (process.env.TESSERA_CLIENT_SECRET) {
    step('client_secret_basic for a private_key_jwt client');
    const basic = oauth.ClientSecretBasic(process.env.TESSERA_CLIENT_SECRET);
    out.secret_refused = await refused(() => clientCredentials(as, c, basic, '/ping.read'));
  }
}

async function dpop() {
  const as = await discover();
  const c = client();
  const auth = await privateKeyJwt();
  const scope = env('TESSERA_SCOPE', '/ping.read');
  const dpopAlg = env('TESSERA_DPOP_ALG', 'ES256');

  step(`generate the DPoP key (${dpopAlg})`);
  const proofKey = oauth.DPoP(c, await oauth.generateKeyPair(dpopAlg));
  out.jkt = await proofKey.calculateThumbprint();

  step('client_credentials without DPoP (the client requires it)');
  out.without_dpop = await refused(() => clientCredentials(as, c, auth, scope));

  step('client_credentials with DPoP');
  const t = await withNonce('token', () => clientCredentials(as, c, auth, scope, { DPoP: proofKey }));
  out.token = summary(t);

  step('ping with DPoP');
  out.ping = await withNonce('ping', () => ping(as, t.access_token, { DPoP: proofKey }));

  step('ping with the DPoP token sent as Bearer');
  out.ping_as_bearer = await rawPing(as, `Bearer ${t.access_token}`);
  step('ping with a proof from another key');
  const otherKey = oauth.DPoP(c, await oauth.generateKeyPair(dpopAlg));
  out.ping_other_key = await withNonce('ping', () => ping(as, t.access_token, { DPoP: otherKey }));

  step('introspection of the DPoP token');
  out.introspect_access = await introspect(as, c, auth, t.access_token);

  if (t.access_token.split('.').length === 3) {
    step('oauth4webapi validateJwtAccessToken with the DPoP proof (RFC 9068, RFC 9449)');
    let captured;
    await withNonce('ping', () =>
      oauth.protectedResourceRequest(t.access_token, 'GET', new URL('/ping', as.issuer), undefined, undefined, {
        DPoP: proofKey,
        ...insecure,
        [oauth.customFetch]: (url, init) => {
          captured = new Request(url, init);
          return fetch(url, init);
        },
      }),
    );
    const claims = await oauth.validateJwtAccessToken(as, captured, env('TESSERA_AUDIENCE', as.issuer), insecure);
    out.jwt_cnf = claims.cnf;
  }

  step('refresh_token with DPoP');
  const renewed = await withNonce('token', () => refresh(as, c, auth, t.refresh_token, { DPoP: proofKey }));
  out.refreshed = summary(renewed);
  if (process.env.TESSERA_RETRY_REFRESH) {
    // A client that lost the answer retries with the same refresh token (FAPI 2.0 clients get a
    // retry window for that).
    step('the same refresh_token again, within the retry window');
    out.refresh_retry = summary(
      await withNonce('token', () => refresh(as, c, auth, t.refresh_token, { DPoP: proofKey })),
    );
  }
  out.introspect_refreshed = await introspect(as, c, auth, renewed.access_token);
  out.ping_refreshed = await withNonce('ping', () => ping(as, renewed.access_token, { DPoP: proofKey }));

  step('revocation of the DPoP-bound family');
  await revoke(as, c, auth, renewed.refresh_token);
  out.after_revoke = await introspect(as, c, auth, renewed.access_token);
  out.ping_after_revoke = await withNonce('ping', () => ping(as, renewed.access_token, { DPoP: proofKey }));
}

/**
 * One client_credentials request made by the library, also reported as sent (URL, headers,
 * body), so that the test can replay its assertion or DPoP proof elsewhere.
 */
async function capture() {
  const as = await discover();
  const c = client();
  const auth = process.env.TESSERA_CLIENT_KEY
    ? await privateKeyJwt()
    : oauth.ClientSecretBasic(env('TESSERA_CLIENT_SECRET'));
  const options = {
    [oauth.customFetch]: (url, init) => {
      out.captured = { url, method: init.method, headers: init.headers, body: String(init.body) };
      return fetch(url, init);
    },
  };
  if (process.env.TESSERA_DPOP_ALG) {
    step('generate the DPoP key');
    options.DPoP = oauth.DPoP(c, await oauth.generateKeyPair(process.env.TESSERA_DPOP_ALG));
    out.jkt = await options.DPoP.calculateThumbprint();
  }
  step('client_credentials (captured)');
  const t = await withNonce('token', () => clientCredentials(as, c, auth, env('TESSERA_SCOPE', '/ping.read'), options));
  out.token = summary(t);
}

const flows = {
  keygen,
  secrets,
  jwt,
  'introspection-jwt': introspectionJwt,
  'private-key-jwt': privateKeyJwtFlow,
  dpop,
  capture,
};

await main(flows);
