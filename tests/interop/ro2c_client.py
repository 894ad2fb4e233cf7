"""Drives Tessera with requests-oauth2client (and its jwskate keys), the way an independent
client of the standards would. Run by tests/api/interop_clients.rs; by hand, see docs/interop.md.

    target/interop/venv/bin/python tests/interop/ro2c_client.py FLOW [ARGS...]

FLOW is one of:
  keygen ALG FILE   generate a key for ALG (ES256, EdDSA, PS256) with jwskate, write the private
                    JWK (kid = its RFC 7638 thumbprint) to FILE, print the public JWK
  secrets           client_secret_basic and client_secret_post: client_credentials, /ping,
                    refresh_token, introspection, revocation, refresh-token reuse
  jwt               a JWT access token checked by jwskate against the JWKS named by discovery
  private-key-jwt   the same grants with private_key_jwt
  dpop              DPoP-bound tokens (RFC 9449), authenticated with private_key_jwt

Environment: TESSERA_ISSUER (required), TESSERA_CLIENT_ID, TESSERA_CLIENT_SECRET,
TESSERA_CLIENT_KEY (a private JWK file from keygen), TESSERA_SCOPE (default "/ping.read"),
TESSERA_AUDIENCE (expected `aud` of JWTs, default the issuer), TESSERA_DPOP_ALG (default
ES256).

Prints one JSON object on stdout: {"ok": true, ...what was observed...}, or {"ok": false,
"step", "error"} and exit status 1. The Rust test asserts on the observations.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import traceback
from typing import Any, Callable

import requests
from jwskate import Jwk, JwtVerifier, SignedJwt
from requests_oauth2client import (
    BearerToken,
    ClientSecretBasic,
    ClientSecretPost,
    DPoPKey,
    OAuth2Client,
    PrivateKeyJwt,
)

out: dict[str, Any] = {"ok": True}
step = "start"


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is not set")
    return value


def describe(err: BaseException) -> dict[str, Any]:
    """What an error says, for the report: its class, an OAuth error code, a status."""
    d: dict[str, Any] = {"name": type(err).__name__, "message": str(err)}
    response = getattr(err, "response", None)
    if response is not None:
        d["status"] = response.status_code
        try:
            d["error"] = response.json().get("error")
        except ValueError:
            pass
    return d


def refused(fn: Callable[[], Any]) -> dict[str, Any]:
    """Runs `fn`, which must fail; returns what the failure said."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - every refusal is reported, whatever its class
        return describe(err)
    raise RuntimeError("expected a refusal, the request succeeded")


def summary(t: BearerToken) -> dict[str, Any]:
    return {
        "token_type": t.token_type,
        "class": type(t).__name__,
        "scope": t.scope,
        "expires_in": t.expires_in,
        "has_refresh_token": isinstance(t.refresh_token, str),
    }


def discover(auth: Any) -> OAuth2Client:
    """The client, from Tessera's RFC 8414 metadata. `testing=True` for a plain HTTP issuer on
    loopback, as most tests serve, which the library otherwise refuses; over https:// the
    library checks as usual (the test CA comes from REQUESTS_CA_BUNDLE)."""
    global step
    step = "discovery"
    issuer = env("TESSERA_ISSUER")
    client = OAuth2Client.from_discovery_endpoint(
        url=f"{issuer}/.well-known/oauth-authorization-server",
        issuer=issuer,
        auth=auth,
        testing=issuer.startswith("http:"),
    )
    out["discovery"] = {
        "issuer": client.issuer,
        "token_endpoint": client.token_endpoint,
        "introspection_endpoint": client.introspection_endpoint,
        "revocation_endpoint": client.revocation_endpoint,
    }
    return client


def ping(token: BearerToken | str | None, authorization: str | None = None) -> dict[str, Any]:
    """`GET /ping`: with the token as the requests auth handler (a DPoPToken adds its proof),
    or with a hand-made Authorization header."""
    url = f"{env('TESSERA_ISSUER')}/ping"
    try:
        if authorization is not None:
            r = requests.get(url, headers={"Authorization": authorization}, timeout=30)
        else:
            r = requests.get(url, auth=token, timeout=30)
    except Exception as err:  # noqa: BLE001 - e.g. the library's MissingDPoPNonce on a 401
        # A DPoPToken treats every 401 with a DPoP challenge as a nonce request and raises when
        # it carries no nonce: report that refusal with the response it got.
        return describe(err)
    return {"status": r.status_code, "www_authenticate": r.headers.get("WWW-Authenticate")}


def keygen(alg: str, path: str) -> None:
    global step
    step = "keygen"
    key = Jwk.generate(alg=alg)
    key = key.with_kid_thumbprint()
    with open(path, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(dict(key), f)
    out["public_jwk"] = {**dict(key.public_jwk()), "use": "sig"}


def private_key() -> Jwk:
    with open(env("TESSERA_CLIENT_KEY"), encoding="utf-8") as f:
        jwk = Jwk(json.load(f))
    out["client_key"] = {"alg": jwk.alg, "kid": jwk.kid}
    return jwk


def secrets() -> None:
    global step
    cid, secret = env("TESSERA_CLIENT_ID"), env("TESSERA_CLIENT_SECRET")
    scope = env("TESSERA_SCOPE", "/ping.read")
    basic = discover(ClientSecretBasic(cid, secret))
    post = discover(ClientSecretPost(cid, secret))

    step = "client_credentials (client_secret_basic)"
    first = basic.client_credentials(scope=scope)
    out["basic"] = summary(first)
    step = "client_credentials (client_secret_post)"
    second = post.client_credentials(scope=scope)
    out["post"] = summary(second)

    step = "ping"
    out["ping"] = ping(first)

    step = "refresh_token"
    renewed = basic.refresh_token(first)
    out["refreshed"] = summary(renewed)
    out["refresh_rotated"] = renewed.refresh_token != first.refresh_token

    step = "introspection"
    out["introspect_access"] = basic.introspect_token(renewed)
    out["introspect_refresh"] = post.introspect_token(renewed, token_type_hint="refresh_token")

    step = "revocation"
    out["revoked"] = post.revoke_refresh_token(renewed)
    out["after_revoke"] = {
        "access": basic.introspect_token(renewed.access_token),
        "refresh": basic.introspect_token(renewed.refresh_token),
        "ping": ping(renewed),
    }
    out["other_family"] = basic.introspect_token(second.access_token)

    step = "refresh-token reuse"
    out["reuse"] = refused(lambda: basic.refresh_token(first.refresh_token))

    step = "refusals"
    out["wrong_secret_basic"] = refused(
        lambda: discover(ClientSecretBasic(cid, "tes_sk_wrong")).client_credentials(scope=scope)
    )
    out["wrong_secret_post"] = refused(
        lambda: discover(ClientSecretPost(cid, "tes_sk_wrong")).client_credentials(scope=scope)
    )
    out["scope_not_allowed"] = refused(lambda: basic.client_credentials(scope="/fed.read"))


def jwt() -> None:
    global step
    client = discover(ClientSecretBasic(env("TESSERA_CLIENT_ID"), env("TESSERA_CLIENT_SECRET")))
    issuer = env("TESSERA_ISSUER")

    step = "client_credentials"
    t = client.client_credentials(scope=env("TESSERA_SCOPE", "/ping.read"))
    out["token"] = summary(t)

    # No `alg` given: each published key's own `alg` is the only one it verifies with.
    step = "jwskate JwtVerifier against the discovered JWKS"
    verifier = JwtVerifier(
        client.authorization_server_jwks,
        issuer=issuer,
        audience=env("TESSERA_AUDIENCE", issuer),
    )
    signed = SignedJwt(t.access_token)
    verifier.verify(signed)
    out["header"] = dict(signed.headers)
    out["claims"] = dict(signed.claims)

    step = "tampered token"
    head, _, sig = t.access_token.split(".")
    forged = json.dumps({**signed.claims, "scope": f"{signed.claims['scope']} /accounts.write"})
    forged_b64 = base64.urlsafe_b64encode(forged.encode()).rstrip(b"=").decode()
    out["tampered"] = refused(lambda: verifier.verify(f"{head}.{forged_b64}.{sig}"))


def assertion_clients(key: Jwk) -> tuple[OAuth2Client, OAuth2Client]:
    """Two clients with private_key_jwt: one whose assertions have the library's default
    `aud` (the URL of the endpoint called, which for the token endpoint is what RFC 7523 allows),
    and one whose `aud` is the issuer, as RFC 7523bis and FAPI 2.0 ask (used for introspection
    and revocation, where the endpoint URL is not an audience the server accepts)."""
    cid = env("TESSERA_CLIENT_ID")
    by_endpoint = discover(PrivateKeyJwt(cid, key))
    by_issuer = discover(PrivateKeyJwt(cid, key, aud=env("TESSERA_ISSUER")))
    return by_endpoint, by_issuer


def private_key_jwt() -> None:
    global step
    by_endpoint, by_issuer = assertion_clients(private_key())
    scope = env("TESSERA_SCOPE", "/ping.read")

    step = "client_credentials (private_key_jwt, aud = token endpoint)"
    t = by_endpoint.client_credentials(scope=scope)
    out["token"] = summary(t)
    step = "client_credentials (private_key_jwt, aud = issuer)"
    out["token_issuer_aud"] = summary(by_issuer.client_credentials(scope=scope))
    step = "ping"
    out["ping"] = ping(t)

    step = "refresh_token (private_key_jwt)"
    renewed = by_endpoint.refresh_token(t)
    out["refreshed"] = summary(renewed)

    step = "introspection (private_key_jwt)"
    out["introspect_access"] = by_issuer.introspect_token(renewed)

    step = "revocation (private_key_jwt)"
    out["revoked"] = by_issuer.revoke_refresh_token(renewed)
    out["after_revoke"] = by_issuer.introspect_token(renewed.access_token)


def dpop() -> None:
    global step
    key = private_key()
    by_endpoint, by_issuer = assertion_clients(key)
    scope = env("TESSERA_SCOPE", "/ping.read")
    dpop_alg = env("TESSERA_DPOP_ALG", "ES256")

    step = f"generate the DPoP key ({dpop_alg})"
    proof_key = DPoPKey.generate(alg=dpop_alg)
    out["jkt"] = proof_key.dpop_jkt

    step = "client_credentials without DPoP (the client requires it)"
    out["without_dpop"] = refused(lambda: by_endpoint.client_credentials(scope=scope))

    step = "client_credentials with DPoP"
    t = by_endpoint.client_credentials(scope=scope, dpop_key=proof_key)
    out["token"] = summary(t)
    out["as_nonce_used"] = proof_key.as_nonce is not None

    step = "ping with DPoP"
    out["ping"] = ping(t)
    step = "ping with the DPoP token sent as Bearer"
    out["ping_as_bearer"] = ping(None, authorization=f"Bearer {t.access_token}")

    step = "introspection of the DPoP token"
    out["introspect_access"] = by_issuer.introspect_token(t.access_token)

    step = "refresh_token with DPoP"
    renewed = by_endpoint.refresh_token(t)
    out["refreshed"] = summary(renewed)
    out["refreshed_same_key"] = getattr(renewed, "dpop_key", None) is proof_key
    out["introspect_refreshed"] = by_issuer.introspect_token(renewed.access_token)
    out["ping_refreshed"] = ping(renewed)

    step = "revocation of the DPoP-bound family"
    out["revoked"] = by_issuer.revoke_refresh_token(renewed)
    out["after_revoke"] = by_issuer.introspect_token(renewed.access_token)
    out["ping_after_revoke"] = ping(renewed)


FLOWS: dict[str, Callable[..., None]] = {
    "keygen": keygen,
    "secrets": secrets,
    "jwt": jwt,
    "private-key-jwt": private_key_jwt,
    "dpop": dpop,
}


def main() -> int:
    try:
        flow, *args = sys.argv[1:]
        if flow not in FLOWS:
            raise RuntimeError(f"unknown flow {flow}; one of {', '.join(FLOWS)}")
        out["flow"] = flow
        FLOWS[flow](*args)
    except Exception as err:  # noqa: BLE001 - reported as JSON, with the step it failed in
        print(json.dumps({**out, "ok": False, "step": step, "error": describe(err),
                          "traceback": traceback.format_exc()}, default=str))
        return 1
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
