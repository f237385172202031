// Verifying avb's webhook signatures (Node 18+, Deno, Bun, workers: Web Crypto).
//
// avb signs each webhook request (tool calls, notifications) with
//   Avb-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
// carrying one v1 per secret in use (two while a secret is being rotated).

/** Why a signature was refused. */
export type WebhookSignatureProblem = "malformed" | "mismatch" | "expired" | "replayed";

/** A webhook request whose signature does not verify. */
export class WebhookSignatureError extends Error {
  constructor(readonly problem: WebhookSignatureProblem) {
    super(`avb webhook signature refused: ${problem}`);
    this.name = "WebhookSignatureError";
  }
}

export interface VerifyOptions {
  /** How far the timestamp may be from now (default 300 s). */
  toleranceSeconds?: number;
  /** Signatures already accepted, kept until they expire: pass the same map to every call to refuse replays. */
  seen?: Map<string, number>;
  /** Now, in unix seconds (for tests). */
  now?: number;
}

const encoder = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function equalTime(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Checks the Avb-Signature header against the raw request body (verify the
 * bytes received, before parsing them). Throws WebhookSignatureError.
 */
export async function verifyWebhook(secret: string, header: string | null | undefined, body: string | Uint8Array, opts: VerifyOptions = {}): Promise<void> {
  const tolerance = opts.toleranceSeconds ?? 300;
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  let t = 0;
  const sigs: string[] = [];
  for (const part of (header ?? "").split(",")) {
    const i = part.indexOf("=");
    if (i < 0) throw new WebhookSignatureError("malformed");
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    if (k === "t") {
      if (t !== 0 || !/^[0-9]+$/.test(v)) throw new WebhookSignatureError("malformed");
      t = Number(v);
    } else if (k === "v1") {
      sigs.push(v);
    }
  }
  if (t === 0 || sigs.length === 0) throw new WebhookSignatureError("malformed");
  if (Math.abs(now - t) > tolerance) throw new WebhookSignatureError("expired");
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const raw = typeof body === "string" ? encoder.encode(body) : body;
  const signed = new Uint8Array(encoder.encode(`${t}.`).length + raw.length);
  signed.set(encoder.encode(`${t}.`));
  signed.set(raw, encoder.encode(`${t}.`).length);
  const want = hex(await crypto.subtle.sign("HMAC", key, signed));
  const match = sigs.find((s) => equalTime(s, want));
  if (!match) throw new WebhookSignatureError("mismatch");
  if (opts.seen) {
    for (const [s, until] of opts.seen) if (until < now) opts.seen.delete(s);
    if (opts.seen.has(match)) throw new WebhookSignatureError("replayed");
    opts.seen.set(match, t + tolerance);
  }
}
