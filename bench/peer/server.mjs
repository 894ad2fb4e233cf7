// The peer of Tessera's load harness (bench/run): node-oidc-provider configured for the two
// workloads both servers support, client_credentials and introspection, with one confidential
// client (client_secret_basic) and the provider's default in-memory adapter. Opaque access
// tokens, no persistence and no durability: it is the fastest configuration this peer has.
//
// Environment: PEER_PORT (loopback port), PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_SCOPE.
import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT || 18090);
const clientId = process.env.PEER_CLIENT_ID || 'bench-peer';
const clientSecret = process.env.PEER_CLIENT_SECRET || 'bench-peer-secret-0123456789abcdef';
const scope = process.env.PEER_SCOPE || 'api.read';

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope,
  }],
  scopes: [scope],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
  },
  // One hour, as Tessera's default access-token lifetime.
  ttl: { ClientCredentials: 3600 },
});
provider.proxy = false;
// Quiet: the provider logs nothing per request by default; keep errors off the hot path too.
provider.on('server_error', (_ctx, err) => { console.error('server_error', err); });

provider.listen(port, '127.0.0.1', () => {
  console.log(`peer listening on http://127.0.0.1:${port}`);
});
