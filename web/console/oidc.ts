// Sign-in with the company's identity provider: the OpenID Connect
// authorization code flow with PKCE (Keycloak in production, avb's
// development issuer in `make dev`). Tokens live in memory only: a reload
// signs in again (the provider remembers the user). The PKCE verifier and
// state cross the redirect in sessionStorage; they are not credentials.

const pending = "avb.signin";

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
  end_session_endpoint?: string;
}

interface Pending {
  issuer: string;
  clientId: string;
  redirectUri: string;
  verifier: string;
  state: string;
}

interface Tokens {
  access_token: string;
  refresh_token?: string;
  expires_in: number;
}

/** A signed-in user: a fresh access token on demand, and sign-out. */
export interface OidcSession {
  accessToken(): Promise<string>;
  signOut(): Promise<void>;
}

function random(bytes: number): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function base64url(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// issuerTimeoutMs bounds every request to the identity provider: one that
// does not answer fails the sign-in (or renewal) instead of hanging it.
const issuerTimeoutMs = 10_000;

async function discover(issuer: string): Promise<Discovery> {
  const res = await fetch(issuer.replace(/\/+$/, "") + "/.well-known/openid-configuration", { signal: AbortSignal.timeout(issuerTimeoutMs) });
  if (!res.ok) throw new Error(`the identity provider's discovery failed (${res.status})`);
  return (await res.json()) as Discovery;
}

/** beginSignIn sends the browser to the identity provider's sign-in page. */
export async function beginSignIn(issuer: string, clientId: string): Promise<void> {
  const d = await discover(issuer);
  const verifier = random(48);
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
  const p: Pending = { issuer, clientId, redirectUri: location.origin + location.pathname, verifier, state: random(16) };
  sessionStorage.setItem(pending, JSON.stringify(p));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: p.redirectUri,
    scope: "openid profile email",
    state: p.state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${d.authorization_endpoint}?${q}`);
}

async function tokenRequest(url: string, form: Record<string, string>): Promise<Tokens> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
    signal: AbortSignal.timeout(issuerTimeoutMs),
  });
  const body = (await res.json().catch(() => ({}))) as Tokens & { error_description?: string };
  if (!res.ok) throw new Error(`sign-in failed: ${body.error_description ?? res.status}`);
  return body;
}

/**
 * completeSignIn finishes a sign-in the identity provider redirected back
 * from (a code in the URL); undefined when there is none.
 */
export async function completeSignIn(): Promise<OidcSession | undefined> {
  const url = new URL(location.href);
  const code = url.searchParams.get("code");
  const raw = sessionStorage.getItem(pending);
  if (!code || !raw) return undefined;
  sessionStorage.removeItem(pending);
  history.replaceState(null, "", url.pathname); // the code is used once; keep it out of history
  const p = JSON.parse(raw) as Pending;
  if (url.searchParams.get("state") !== p.state) throw new Error("sign-in failed: the state does not match");
  const d = await discover(p.issuer);
  let tokens = await tokenRequest(d.token_endpoint, {
    grant_type: "authorization_code",
    code,
    code_verifier: p.verifier,
    client_id: p.clientId,
    redirect_uri: p.redirectUri,
  });
  let expires = Date.now() + tokens.expires_in * 1000;
  let renewing: Promise<void> | undefined;
  // Renew a minute before expiry (or at 80% of a short lifetime).
  const renew = () =>
    (renewing ??= (async () => {
      try {
        if (!tokens.refresh_token) throw new Error("signed out: the session expired");
        tokens = await tokenRequest(d.token_endpoint, { grant_type: "refresh_token", refresh_token: tokens.refresh_token, client_id: p.clientId });
        expires = Date.now() + tokens.expires_in * 1000;
      } finally {
        renewing = undefined;
      }
    })());
  return {
    accessToken: async () => {
      const margin = Math.min(60_000, (tokens.expires_in * 1000) / 5);
      if (Date.now() > expires - margin) await renew();
      return tokens.access_token;
    },
    signOut: async () => {
      if (d.end_session_endpoint && tokens.refresh_token) {
        await tokenRequest(d.end_session_endpoint, { client_id: p.clientId, refresh_token: tokens.refresh_token }).catch(() => undefined);
      }
    },
  };
}
