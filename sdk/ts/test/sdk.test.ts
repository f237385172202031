// The SDK against a live server (started by the Go test that runs this
// file): typed clients, paging, error reasons, the event stream and the
// browser voice path.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { AvbError, Code, createAvbClient, startBrowserCall, type BrowserCall, type VoiceEvent } from "../src/index.js";

const env = (k: string) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: this test runs from the Go test TestTypeScriptSDK`);
  return v;
};
const baseUrl = env("AVB_BASE_URL");
const admin = createAvbClient({ baseUrl, token: env("AVB_ADMIN_TOKEN") });
const viewer = createAvbClient({ baseUrl, token: env("AVB_VIEWER_TOKEN") });
const keyClient = createAvbClient({ baseUrl, apiKey: env("AVB_API_KEY"), protocol: "grpc-web", binary: true });

// speakInto sends the caller's audio in 100 ms chunks at real time (3200
// bytes of 16 kHz PCM16).
async function speakInto(call: BrowserCall, pcm: Uint8Array) {
  for (let off = 0; off < pcm.length; off += 3200) {
    await call.sendAudio(pcm.subarray(off, off + 3200));
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("create a project and list with paging", async () => {
  const names = ["sdk-a", "sdk-b", "sdk-c"];
  for (const name of names) {
    const { project } = await admin.projects.createProject({ name, voiceDefaults: { voice: "en-us" } });
    assert.equal(project?.name, name);
    assert.equal(project?.voiceDefaults?.voice, "en-us");
  }
  const seen: string[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const res = await viewer.projects.listProjects({ pageSize: 2, pageToken, nameContains: "sdk-" });
    seen.push(...res.projects.map((p) => p.name));
    pageToken = res.nextPageToken;
    pages++;
  } while (pageToken);
  assert.deepEqual(seen.sort(), names);
  assert.equal(pages, 2);
});

test("a retried create with the same request id returns the same project", async () => {
  const requestId = crypto.randomUUID();
  const a = await admin.projects.createProject({ requestId, name: "sdk-retry" });
  const b = await admin.projects.createProject({ requestId, name: "sdk-retry" });
  assert.equal(a.project?.id, b.project?.id);
});

test("errors carry their code, reason and field violations", async () => {
  await assert.rejects(admin.projects.createProject({ name: "sdk-a" }), (e: unknown) => {
    assert.ok(e instanceof AvbError);
    assert.equal(e.code, Code.AlreadyExists);
    assert.equal(e.reason, "already_exists");
    return true;
  });
  await assert.rejects(admin.projects.createProject({ name: "" }), (e: AvbError) => {
    assert.equal(e.code, Code.InvalidArgument);
    assert.equal(e.reason, "validation_failed");
    assert.deepEqual(e.fieldViolations.map((v) => v.field), ["name"]);
    return true;
  });
  await assert.rejects(viewer.projects.createProject({ name: "nope" }), (e: AvbError) => e.reason === "permission_denied");
  const anonymous = createAvbClient({ baseUrl });
  await assert.rejects(anonymous.projects.listProjects({}), (e: AvbError) => e.code === Code.Unauthenticated && e.reason === "unauthenticated");
  // The same over gRPC-Web with binary protobuf and an API key.
  await assert.rejects(keyClient.projects.createProject({ name: "x".repeat(101), description: "y".repeat(1001) }), (e: AvbError) => {
    assert.equal(e.reason, "validation_failed");
    assert.deepEqual(e.fieldViolations.map((v) => v.field), ["name", "description"]);
    return true;
  });
});

test("Subscribe streams a heartbeat, then the tenant's events", async () => {
  const abort = new AbortController();
  const stream = viewer.events.subscribe({ types: ["project.created"] }, { signal: abort.signal });
  const it = stream[Symbol.asyncIterator]();
  const first = await it.next();
  assert.equal(first.value?.message.case, "heartbeat");
  const { project } = await admin.projects.createProject({ name: "sdk-live" });
  const next = await it.next();
  assert.equal(next.value?.message.case, "event");
  const ev = next.value?.message.value;
  assert.ok(ev && "type" in ev);
  assert.equal(ev.type, "project.created");
  assert.equal(ev.data?.project_id, project?.id);
  abort.abort();
  await assert.rejects(it.next(), (e: AvbError) => e.code === Code.Canceled);
});

test("the browser voice path: audio in by SendAudio, events out by ConverseEvents", async () => {
  const pcm = readFileSync(env("AVB_SPEECH_PCM"));
  const { project } = await keyClient.projects.createProject({
    name: "sdk-voice",
    voiceDefaults: { phraseHints: [env("AVB_ASK"), "cancel my meeting", "hello"] },
  });
  const events: VoiceEvent[] = [];
  let done!: () => void;
  const answered = new Promise<void>((r) => (done = r));
  const call = await startBrowserCall(keyClient, {
    projectId: project?.id,
    onEvent: (e) => {
      events.push(e);
      if (e.event.case === "responseDone") done();
    },
  });
  await speakInto(call, pcm);
  await answered;
  await call.hangUp();
  const final = events.find((e) => e.event.case === "transcriptFinal");
  assert.equal(final?.event.value && "text" in final.event.value ? final.event.value.text : "", env("AVB_ASK"));
  const reply = events.find((e) => e.event.case === "responseDone");
  assert.match(reply?.event.value && "text" in reply.event.value ? reply.event.value.text : "", /booked the meeting/);
  assert.ok(events.some((e) => e.event.case === "responseAudioDelta"));
  const { session } = await keyClient.sessions.getSession({ sessionId: call.sessionId });
  assert.equal(session?.projectId, project?.id);
});

test("a client tool on the browser path: toolCall event in, toolResult by SendControl", async () => {
  const pcm = readFileSync(env("AVB_SPEECH_PCM"));
  const events: VoiceEvent[] = [];
  let done!: () => void;
  const answered = new Promise<void>((r) => (done = r));
  let refused: unknown;
  const call = await startBrowserCall(keyClient, {
    config: {
      phraseHints: [env("AVB_ASK"), "hello"],
      tools: [{ name: "book_meeting", description: "Books a meeting." }],
    },
    onEvent: (e) => {
      events.push(e);
      if (e.event.case === "toolCall") {
        const { callId, arguments: args } = e.event.value;
        const { day, time } = JSON.parse(args) as { day: string; time: string };
        // A result for a call that is not open is refused with its reason.
        call.control({ control: { case: "toolResult", value: { callId: "call_nobody_asked", output: "x" } } }).catch((err) => (refused = err));
        void call.control({ control: { case: "toolResult", value: { callId, output: JSON.stringify({ say: `Booked for ${day} at ${time}.` }) } } });
      }
      if (e.event.case === "responseDone") done();
    },
  });
  await speakInto(call, pcm);
  await answered;
  await call.hangUp();
  const reply = events.find((e) => e.event.case === "responseDone");
  assert.equal(reply?.event.value && "text" in reply.event.value ? reply.event.value.text : "", "Booked for tomorrow at 10:00.");
  assert.ok(refused instanceof AvbError && refused.reason === "tool_call_not_open", `refused: ${String(refused)}`);
});

test("a server that never answers fails a unary call with deadline_exceeded in its bound; a refused one at once", async () => {
  const { createServer } = await import("node:http");
  const hung = createServer(() => undefined); // accepts, never answers
  await new Promise<void>((r) => hung.listen(0, "127.0.0.1", r));
  const port = (hung.address() as { port: number }).port;
  try {
    const client = createAvbClient({ baseUrl: `http://127.0.0.1:${port}`, apiKey: "avb_x", unaryTimeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(client.tenant.getTenant({}), (e: AvbError) => e.code === Code.DeadlineExceeded);
    const took = Date.now() - started;
    assert.ok(took >= 250 && took < 2000, `took ${took} ms`);
  } finally {
    hung.closeAllConnections();
    hung.close();
  }
  const refused = createAvbClient({ baseUrl: `http://127.0.0.1:${port}`, apiKey: "avb_x", unaryTimeoutMs: 300 });
  const started = Date.now();
  await assert.rejects(refused.tenant.getTenant({}), (e: AvbError) => e.code !== Code.DeadlineExceeded);
  assert.ok(Date.now() - started < 1000);
});
