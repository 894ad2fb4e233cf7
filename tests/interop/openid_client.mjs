// Drives Tessera with panva's openid-client (v6, the high-level client built on oauth4webapi),
// which retries on `use_dpop_nonce` by itself. Run by tests/api/interop_clients.rs; by hand,
// see docs/interop.md.
//
//   node tests/interop/openid_client.mjs FLOW
//
// FLOW is one of:
//   secrets   client_secret_basic and client_secret_post: client_credentials, /ping,
//             refresh_token, introspection, revocation, refresh-token reuse
//   dpop      DPoP-bound tokens (RFC 9449), authenticated with private_key_jwt
//
// Environment: as for oauth4webapi.mjs (TESSERA_ISSUER, TESSERA_CLIENT_ID,
// TESSERA_CLIENT_SECRET, TESSERA_CLIENT_KEY, TESSERA_SCOPE, TESSERA_DPOP_ALG).
//
// Prints one JSON object on stdout, as oauth4webapi.mjs does, with the same members for the
// same flow, so the Rust test checks both alike.

import { readFileSync } from 'node:fs';

import { describe, env, jose, load, main, out, refused, step, summary } from './lib.mjs';

const client = await load('openid-client');

/**
 * Counts the answers that asked for a DPoP nonce: the library must have retried each itself
 * for the flow to go on.
 */
async function countingFetch(url, init) {
  const res = await fetch(url, init);
  const challenge = res.headers.get('www-authenticate') ?? '';
  let asked = challenge.includes('use_dpop_nonce');
  if (!asked && res.status === 400) {
    asked = (await res.clone().text()).includes('use_dpop_nonce');
  }
  if (asked) out.nonce_requests = (out.nonce_requests ?? 0) + 1;
  return res;
}

/** The library's configuration from Tessera's RFC 8414 metadata. */
async function configure(clientAuth) {
  step('discovery');
  const config = await client.discovery(new URL(env('TESSERA_ISSUER')), env('TESSERA_CLIENT_ID'), undefined, clientAuth, {
    algorithm: 'oauth2',
    // Plain HTTP on loopback in most tests, which the library refuses unless told otherwise;
    // over https:// it is told nothing (the test CA comes from NODE_EXTRA_CA_CERTS).
    execute: env('TESSERA_ISSUER').startsWith('http:') ? [client.allowInsecureRequests] : [],
    [client.customFetch]: countingFetch,
  });
  const meta = config.serverMetadata();
  out.discovery = { issuer: meta.issuer, token_endpoint: meta.token_endpoint };
  return config;
}

/** `GET /ping` through the library; the status, or the refusal. */
async function ping(config, accessToken, options) {
  try {
    const res = await client.fetchProtectedResource(
      config,
      accessToken,
      new URL('/ping', env('TESSERA_ISSUER')),
      'GET',
      undefined,
      undefined,
      options,
    );
    return { status: res.status };
  } catch (err) {
    return describe(err);
  }
}

async function secrets() {
  const secret = env('TESSERA_CLIENT_SECRET');
  const scope = env('TESSERA_SCOPE', '/ping.read');
  const basic = await configure(client.ClientSecretBasic(secret));
  const post = await configure(client.ClientSecretPost(secret));

  step('client_credentials (client_secret_basic)');
  const first = await client.clientCredentialsGrant(basic, { scope });
  out.basic = summary(first);
  step('client_credentials (client_secret_post)');
  const second = await client.clientCredentialsGrant(post, { scope });
  out.post = summary(second);

  step('ping');
  out.ping = await ping(basic, first.access_token);

  step('refresh_token');
  const renewed = await client.refreshTokenGrant(basic, first.refresh_token);
  out.refreshed = summary(renewed);
  out.refresh_rotated = renewed.refresh_token !== first.refresh_token;

  step('introspection');
  out.introspect_access = await client.tokenIntrospection(basic, renewed.access_token);
  out.introspect_refresh = await client.tokenIntrospection(post, renewed.refresh_token);

  step('revocation');
  await client.tokenRevocation(post, renewed.refresh_token);
  out.after_revoke = {
    access: await client.tokenIntrospection(basic, renewed.access_token),
    refresh: await client.tokenIntrospection(basic, renewed.refresh_token),
    ping: await ping(basic, renewed.access_token),
  };
  out.other_family = await client.tokenIntrospection(basic, second.access_token);

  step('refresh-token reuse');
  out.reuse = await refused(() => client.refreshTokenGrant(basic, first.refresh_token));

  step('refusals');
  const wrongBasic = await configure(client.ClientSecretBasic('tes_sk_wrong'));
  out.wrong_secret_basic = await refused(() => client.clientCredentialsGrant(wrongBasic, { scope }));
  const wrongPost = await configure(client.ClientSecretPost('tes_sk_wrong'));
  out.wrong_secret_post = await refused(() => client.clientCredentialsGrant(wrongPost, { scope }));
  out.scope_not_allowed = await refused(() => client.clientCredentialsGrant(basic, { scope: '/fed.read' }));
}

async function dpop() {
  const jwk = JSON.parse(readFileSync(env('TESSERA_CLIENT_KEY'), 'utf8'));
  const key = await jose.importJWK(jwk, jwk.alg);
  out.client_key = { alg: jwk.alg, kid: jwk.kid };
  const config = await configure(client.PrivateKeyJwt({ key, kid: jwk.kid }));
  const scope = env('TESSERA_SCOPE', '/ping.read');
  const dpopAlg = env('TESSERA_DPOP_ALG', 'ES256');

  step(`generate the DPoP key (${dpopAlg})`);
  const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair(dpopAlg));
  out.jkt = await DPoP.calculateThumbprint();

  step('client_credentials without DPoP (the client requires it)');
  out.without_dpop = await refused(() => client.clientCredentialsGrant(config, { scope }));

  step('client_credentials with DPoP');
  const t = await client.clientCredentialsGrant(config, { scope }, { DPoP });
  out.token = summary(t);

  step('ping with DPoP');
  out.ping = await ping(config, t.access_token, { DPoP });
  step('ping with the DPoP token sent as Bearer');
  const res = await fetch(new URL('/ping', env('TESSERA_ISSUER')), {
    headers: { authorization: `Bearer ${t.access_token}` },
  });
  out.ping_as_bearer = { status: res.status };

  step('introspection of the DPoP token');
  out.introspect_access = await client.tokenIntrospection(config, t.access_token);

  step('refresh_token with DPoP');
  const renewed = await client.refreshTokenGrant(config, t.refresh_token, undefined, { DPoP });
  out.refreshed = summary(renewed);
  out.introspect_refreshed = await client.tokenIntrospection(config, renewed.access_token);
  out.ping_refreshed = await ping(config, renewed.access_token, { DPoP });

  step('revocation of the DPoP-bound family');
  await client.tokenRevocation(config, renewed.refresh_token);
  out.after_revoke = await client.tokenIntrospection(config, renewed.access_token);
  out.ping_after_revoke = await ping(config, renewed.access_token, { DPoP });
}

await main({ secrets, dpop });
