// The webhook verifier against signatures avb made (written by the Go test
// TestTypeScriptWebhookVerifier): the README's receiver accepts a real call
// once, and refuses it tampered, replayed, expired or under another secret.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

import { verifyWebhook, WebhookSignatureError } from "../src/index.js";

const file = process.env.AVB_WEBHOOK_FIXTURES;
if (!file) throw new Error("AVB_WEBHOOK_FIXTURES is not set: this test runs from the Go test TestTypeScriptWebhookVerifier");
const f = JSON.parse(readFileSync(file, "utf8")) as { secret: string; body: string; header: string; oldHeader: string; rotatedHeader: string };

const refused = (problem: string) => (err: unknown) => err instanceof WebhookSignatureError && err.problem === problem;

test("the README receiver accepts avb's call once", async () => {
  const secret = f.secret;
  // receiver:start
  const seen = new Map<string, number>();
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    try {
      await verifyWebhook(secret, req.headers["avb-signature"] as string, body, { seen });
    } catch (err) {
      res.writeHead(401).end(String(err)); // tampered, replayed or expired
      return;
    }
    const call = JSON.parse(body.toString("utf8")); // {type, session_id, call_id, name, arguments}
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ say: `Done: ${call.name}.` }));
  });
  // receiver:end
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const post = (body: string, header: string) =>
    fetch(`http://127.0.0.1:${port}/tools`, { method: "POST", body, headers: { "Avb-Signature": header } });
  try {
    const ok = await post(f.body, f.header);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { say: "Done: book_meeting." });
    assert.equal((await post(f.body, f.header)).status, 401, "replayed");
    assert.equal((await post(f.body.replace("tomorrow", "today"), f.rotatedHeader)).status, 401, "tampered");
  } finally {
    server.close();
  }
});

test("tampered, replayed, expired, malformed and foreign signatures are refused", async () => {
  await verifyWebhook(f.secret, f.rotatedHeader, f.body); // one of two v1s (a rotation) matches
  await assert.rejects(verifyWebhook(f.secret, f.header, f.body + " "), refused("mismatch"));
  await assert.rejects(verifyWebhook("whsec_other", f.header, f.body), refused("mismatch"));
  await assert.rejects(verifyWebhook(f.secret, f.oldHeader, f.body), refused("expired"));
  await assert.rejects(verifyWebhook(f.secret, "v1=abc", f.body), refused("malformed"));
  const seen = new Map<string, number>();
  await verifyWebhook(f.secret, f.header, new TextEncoder().encode(f.body), { seen });
  await assert.rejects(verifyWebhook(f.secret, f.header, f.body, { seen }), refused("replayed"));
});
