// A browser call that outlives its instance (started by the Go test
// TestTypeScriptCallMoves): behind one base URL (the test's balancer) the
// instance holding the call drains, then the next one is killed; the call
// rejoins its session each time and the agent answers every turn.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { createAvbClient, SessionStatus, startBrowserCall, type BrowserCall, type VoiceEvent } from "../src/index.js";

const env = (k: string) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: this test runs from the Go test TestTypeScriptCallMoves`);
  return v;
};
const baseUrl = env("AVB_BASE_URL");
const avb = createAvbClient({ baseUrl, apiKey: env("AVB_API_KEY") });

async function speakInto(call: BrowserCall, pcm: Uint8Array) {
  for (let off = 0; off < pcm.length; off += 640) {
    await call.sendAudio(pcm.subarray(off, off + 640));
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a browser call rejoins its session when its instance drains, then when the next one dies", { timeout: 90_000 }, async () => {
  const pcm = readFileSync(env("AVB_SPEECH_PCM"));
  const events: VoiceEvent[] = [];
  let answers = 0;
  let answered!: () => void;
  let next = new Promise<void>((r) => (answered = r));
  let ended: unknown = "not yet";
  const call = await startBrowserCall(avb, {
    config: { phraseHints: [env("AVB_ASK"), "hello"] },
    onEvent: (e) => {
      events.push(e);
      if (e.event.case === "responseDone") {
        answers++;
        answered();
      }
    },
    onEnd: (err) => (ended = err),
  });
  const turn = async (what: string) => {
    next = new Promise<void>((r) => (answered = r));
    await speakInto(call, pcm);
    const stuck = setTimeout(() => console.error(`no answer ${what}: resumes ${call.resumes}, events ${events.map((e) => e.event.case).join(",")}`), 20_000);
    await next;
    clearTimeout(stuck);
  };
  await turn("before the faults");
  for (const fault of ["drain", "kill"]) {
    const res = await fetch(`${baseUrl}/test/${fault}`, { method: "POST" });
    assert.equal(res.status, 200);
    await turn(`after the ${fault}`);
  }
  assert.equal(answers, 3);
  assert.equal(call.resumes, 2);
  const resumed = events.filter((e) => e.event.case === "sessionStarted" && e.event.value.resumed);
  assert.equal(resumed.length, 2);
  assert.ok(events.some((e) => e.event.case === "sessionMoving"), "the draining instance said the call must move");
  assert.equal(ended, "not yet");
  await call.hangUp();
  assert.equal(ended, undefined);
  // The session ends completed with all three turns, once its workflow has them.
  for (let i = 0; ; i++) {
    const { session } = await avb.sessions.getSession({ sessionId: call.sessionId });
    if (session?.status !== SessionStatus.ACTIVE || i === 100) {
      assert.equal(session?.status, SessionStatus.COMPLETED);
      assert.equal(session?.metrics?.turns, 3);
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
});
