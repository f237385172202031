// The AgentVoiceBox web console: sign in, browse projects and sessions, and
// talk to the agent from the microphone over the browser voice path.
import {
  AvbError,
  createAvbClient,
  SessionStatus,
  startBrowserCall,
  type AvbClient,
  type BrowserCall,
  type Persona,
  type Project,
  type Recognition,
  ApiKeyScope,
  type SessionEvent,
  type TurnLatency,
  type VoiceEvent,
} from "@agentvoicebox/sdk";

import { initAgents, showAgents } from "./agents.js";
import { initAudit, showAudit } from "./audit.js";
import { listen, unlisten } from "./live.js";
import { beginSignIn, completeSignIn, type OidcSession } from "./oidc.js";
import { initTeam, showTeam } from "./team.js";
import { $, applyPermissions, button, cell, showError, since, state, when } from "./ui.js";
import { initUsage, showUsage } from "./usage.js";

const storageKey = "avb.credential";

let projectsToken = "";
let call: BrowserCall | undefined;
let mic: MediaStream | undefined;
let capture: AudioContext | undefined;
let player: Player | undefined;

// A client for the credentials, acting in tenant when given (platform
// operators name the tenant they work in; everyone else's credentials do).
type MakeClient = (tenant?: string) => AvbClient;

function clientFor(credential: string): MakeClient {
  const base = { baseUrl: location.origin };
  return (tenant) =>
    credential.startsWith("avb_")
      ? createAvbClient({ ...base, apiKey: credential })
      : createAvbClient({ ...base, token: credential, tenant });
}

// oidc is the company sign-in's session (its tokens stay in memory).
let oidc: OidcSession | undefined;

async function signIn(credential: string) {
  await signInWith(clientFor(credential));
  sessionStorage.setItem(storageKey, credential);
}

// signInWith opens the console for the credentials' tenant. Credentials
// that name none (a platform operator's) get the tenant picker, on the
// tenant picked last or the first.
async function signInWith(make: MakeClient, tenantId = sessionStorage.getItem(tenantKey) ?? "") {
  let client = make(tenantId || undefined);
  let res = await client.tenant.getTenant({}).catch(async (e: unknown) => {
    const err = AvbError.from(e);
    if (err.reason !== "tenant_required" && err.reason !== "tenant_not_found" && err.reason !== "tenant_mismatch") throw err;
    return undefined;
  });
  const picker = $<HTMLSelectElement>("tenant");
  const tenants = await make()
    .admin.listTenants({ pageSize: 100 })
    .then((r) => r.tenants)
    .catch(() => []);
  if (!res) {
    if (tenants.length === 0) throw new Error("These credentials name no tenant: sign in with a tenant's account.");
    client = make(tenants[0].id);
    res = await client.tenant.getTenant({});
  }
  const { tenant, permissions } = res;
  picker.replaceChildren(...tenants.map((t) => Object.assign(document.createElement("option"), { value: t.id, textContent: t.name })));
  picker.value = tenant?.id ?? "";
  picker.onchange = () => {
    sessionStorage.setItem(tenantKey, picker.value);
    signInWith(make, picker.value).catch(showError);
  };
  $("tenant-box").hidden = tenants.length === 0;
  state.avb = client;
  state.permissions = new Set(permissions);
  state.project = undefined;
  $("who").textContent = tenants.length ? "" : (tenant?.name ?? "");
  $("signin").hidden = true;
  $("app").hidden = false;
  $("tabs").hidden = false;
  $("sign-out").hidden = false;
  $("error").textContent = "";
  $("projects").replaceChildren();
  $("session").hidden = true;
  projectsToken = "";
  applyPermissions();
  setCallState("idle");
  await showPage("calls");
  listen(() => void loadSessions().catch(showError));
}

const tenantKey = "avb.tenant";

// The pages, by the name their tab carries, and what opening one loads.
const pages: Record<string, () => Promise<unknown>> = {
  calls: () => Promise.all([loadProjects(), loadSessions()]),
  agents: showAgents,
  usage: showUsage,
  keys: loadKeys,
  team: showTeam,
  audit: () => showAudit(),
};

// showPage shows one page of the console and loads what it lists.
async function showPage(name: string) {
  for (const tab of $("tabs").querySelectorAll<HTMLButtonElement>("button")) {
    const on = tab.dataset.page === name;
    if (on) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  for (const page of document.querySelectorAll<HTMLElement>(".page")) page.hidden = page.id !== "page-" + name;
  if (name === "calls") $("projects").replaceChildren();
  projectsToken = "";
  $("app").setAttribute("aria-busy", "true");
  try {
    await pages[name]?.();
  } finally {
    $("app").removeAttribute("aria-busy");
  }
}

async function signOut() {
  unlisten();
  sessionStorage.removeItem(storageKey);
  sessionStorage.removeItem(tenantKey);
  await oidc?.signOut(); // ends the identity provider's session too
  location.reload();
}

async function loadProjects() {
  if (!state.avb) return;
  const res = await state.avb.projects.listProjects({ pageSize: 20, pageToken: projectsToken });
  for (const p of res.projects) {
    const li = document.createElement("li");
    li.textContent = p.name;
    li.dataset.id = p.id;
    li.classList.toggle("selected", p.id === state.project?.id);
    li.addEventListener("click", () => {
      selectProject(p);
      void loadSessions();
    });
    $("projects").append(li);
  }
  projectsToken = res.nextPageToken;
  $("projects-more").hidden = projectsToken === "";
}

// selectProject makes p the project calls are made in, and shows it.
function selectProject(p: Project) {
  state.project = p;
  for (const li of $("projects").querySelectorAll("li")) li.classList.toggle("selected", li.dataset.id === p.id);
  $("call-project").textContent = "· " + p.name;
  $<HTMLButtonElement>("call-start").disabled = call !== undefined;
}

// sessionsToken is the next page of the session list ("" at its end).
let sessionsToken = "";

// loadSessions lists the project's sessions through the filters, newest
// first, a page at a time (more appends the next page).
async function loadSessions(more = false) {
  if (!state.avb) return;
  const status = $<HTMLSelectElement>("filter-status").value;
  const res = await state.avb.sessions.listSessions({
    pageSize: 20,
    pageToken: more ? sessionsToken : "",
    projectId: state.project?.id ?? "",
    status: status ? SessionStatus[status as keyof typeof SessionStatus] : SessionStatus.UNSPECIFIED,
    createdAfter: since($<HTMLInputElement>("filter-since")),
  });
  sessionsToken = res.nextPageToken;
  $("sessions-more").hidden = !sessionsToken;
  const rows = res.sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    const created = when(s.createTime);
    const status = SessionStatus[s.status].toLowerCase();
    for (const v of [created, status, String(s.metrics?.turns ?? 0), (s.metrics?.durationSeconds ?? 0).toFixed(1)]) cell(tr, v);
    cell(tr, "").append(button("Open", `Open the session of ${created}`, () => showSession(s.id)));
    return tr;
  });
  if (more) $("sessions").append(...rows);
  else $("sessions").replaceChildren(...rows);
}

// The stages of a turn's waterfall, as the session's response events
// record them (milliseconds from the end of the caller's speech).
// The first is the silence the turn detector waited for after the last
// word; the others count from the turn's end it then declared.
const stages: [key: string, label: string][] = [
  ["vad_end_ms", "end of speech detected"],
  ["stt_final_ms", "transcript final"],
  ["llm_first_token_ms", "first token"],
  ["tts_first_audio_ms", "first audio"],
  ["first_byte_ms", "first byte sent"],
];

// showSession shows one session: how it ended, its metrics, and its turns
// with what the caller said, the reply, and each reply's latency waterfall.
async function showSession(id: string) {
  if (!state.avb) return;
  const { session } = await state.avb.sessions.getSession({ sessionId: id });
  const events: SessionEvent[] = [];
  let pageToken = "";
  do {
    const res = await state.avb.sessions.listSessionEvents({ sessionId: id, pageSize: 200, pageToken });
    events.push(...res.events);
    pageToken = res.nextPageToken;
  } while (pageToken && events.length < 2000);
  const m = session?.metrics;
  $("session").hidden = false;
  $("session-id").textContent = id;
  const status = session ? SessionStatus[session.status].toLowerCase() : "";
  $("session-summary").textContent =
    `${status}${session?.error ? ` (${session.error})` : ""}: ${m?.turns === 1 ? "1 turn" : `${m?.turns ?? 0} turns`} in ${(m?.durationSeconds ?? 0).toFixed(1)} s, ` +
    `${m?.inputTokens ?? 0} tokens in and ${m?.outputTokens ?? 0} out, ${(m?.inputAudioSeconds ?? 0).toFixed(1)} s of audio in and ` +
    `${(m?.outputAudioSeconds ?? 0).toFixed(1)} s out` + (m?.toolCalls ? `, ${m.toolCalls} tool calls` : "");
  const items: HTMLLIElement[] = [];
  for (const e of events) {
    const d = (e.data ?? {}) as Record<string, unknown>;
    const text = typeof d.text === "string" ? d.text : "";
    if (e.type === "transcript") {
      const li = document.createElement("li");
      li.className = "you";
      li.textContent = text;
      items.push(li);
    } else if (e.type === "response") {
      const li = document.createElement("li");
      li.className = "agent";
      li.textContent = text + (d.interrupted === true ? " (interrupted)" : "");
      li.append(waterfall(d));
      items.push(li);
    } else if (e.type === "error") {
      const li = document.createElement("li");
      li.className = "error";
      li.textContent = `${String(d.message ?? "")} (${String(d.reason ?? "")})`;
      items.push(li);
    }
  }
  $("session-turns").replaceChildren(...items);
}

// waterfall draws a reply's latency stages on one scale, with the numbers
// in words for those who cannot see the bars.
function waterfall(d: Record<string, unknown>): HTMLElement {
  const values = stages.map(([key, label]) => ({ label, ms: typeof d[key] === "number" ? (d[key] as number) : 0 }));
  // Bars run from the last word: the detector's silence, then each stage.
  const silence = values[0].ms;
  const ends = values.map((v, i) => (i === 0 ? v.ms : silence + v.ms));
  const total = Math.max(1, ...ends);
  const box = document.createElement("div");
  box.className = "waterfall";
  const words =
    `${values[0].label} ${silence.toFixed(1)} ms after the last word; then ` +
    values
      .slice(1)
      .map((v) => `${v.label} ${v.ms.toFixed(1)} ms`)
      .join(", ");
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", words);
  for (const [i, v] of values.entries()) {
    const bar = document.createElement("span");
    bar.className = "stage";
    bar.dataset.stage = v.label;
    bar.dataset.ms = v.ms.toFixed(1);
    bar.style.width = `${(100 * ends[i]) / total}%`;
    bar.title = `${v.label}: ${v.ms.toFixed(1)} ms`;
    box.append(bar);
  }
  const caption = document.createElement("small");
  caption.textContent = words + (d.preemptive === true ? " (prepared while the caller paused)" : "");
  box.append(caption);
  return box;
}

// ------------------------------------------------------------------ API keys

const scopeNames: Record<string, ApiKeyScope> = {
  realtime: ApiKeyScope.REALTIME,
  billing: ApiKeyScope.BILLING,
  admin: ApiKeyScope.ADMIN,
};

function showSecret(secret: string) {
  $("key-secret").textContent = secret;
  $("key-secret-box").hidden = false;
}

async function loadKeys() {
  if (!state.avb) return;
  const avb = state.avb;
  const res = await avb.apiKeys.listApiKeys({ pageSize: 50, includeRevoked: true });
  $("keys").replaceChildren(
    ...res.apiKeys.map((k) => {
      const tr = document.createElement("tr");
      tr.dataset.id = k.id;
      const revoked = !!k.revokeTime && Number(k.revokeTime.seconds) * 1000 <= Date.now();
      const status = revoked ? "revoked" : k.revokeTime ? `retiring ${when(k.revokeTime)}` : "active";
      const scopes = k.scopes.map((s) => ApiKeyScope[s].toLowerCase()).join(", ");
      for (const v of [k.name, k.prefix + "…", scopes, when(k.lastUsedTime, "never"), status]) cell(tr, v);
      const actions = cell(tr, "");
      if (!revoked) {
        const rotate = button("Rotate", `Rotate ${k.name}: the old key works 24 more hours`, async () => {
          const r = await avb.apiKeys.rotateApiKey({ apiKeyId: k.id });
          showSecret(r.secret);
          await loadKeys();
        });
        const revoke = button("Revoke", `Revoke ${k.name} now`, async () => {
          await avb.apiKeys.revokeApiKey({ apiKeyId: k.id });
          await loadKeys();
        });
        actions.append(rotate, " ", revoke);
      }
      return tr;
    }),
  );
}

async function createKey(form: HTMLFormElement) {
  if (!state.avb) return;
  const scopes = [...form.querySelectorAll<HTMLInputElement>('input[name="scope"]:checked')].map((i) => scopeNames[i.value]);
  const res = await state.avb.apiKeys.createApiKey({ name: $<HTMLInputElement>("key-name").value.trim(), scopes });
  showSecret(res.secret);
  form.reset();
  await loadKeys();
}

// ------------------------------------------------------------------ audio

// The capture worklet hands 20 ms of mono float samples at the context's rate.
const captureWorklet = `
class Capture extends AudioWorkletProcessor {
  constructor() { super(); this.buf = []; this.n = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      this.buf.push(new Float32Array(ch)); this.n += ch.length;
      if (this.n >= sampleRate / 50) {
        const out = new Float32Array(this.n); let o = 0;
        for (const b of this.buf) { out.set(b, o); o += b.length; }
        this.port.postMessage(out, [out.buffer]); this.buf = []; this.n = 0;
      }
    }
    return true;
  }
}
registerProcessor("avb-capture", Capture);
`;

// toPCM16 resamples float samples to 16-bit PCM at 16 kHz (linear interpolation).
function toPCM16(input: Float32Array, fromRate: number): Int16Array {
  const ratio = fromRate / 16000;
  const out = new Int16Array(Math.floor(input.length / ratio));
  for (let i = 0; i < out.length; i++) {
    const x = i * ratio;
    const j = Math.floor(x);
    const a = input[j] ?? 0;
    const b = input[j + 1] ?? a;
    const v = Math.max(-1, Math.min(1, a + (b - a) * (x - j)));
    out[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
  }
  return out;
}

// Player plays the agent's 24 kHz PCM16 audio gaplessly, and stops at once
// when the caller interrupts.
class Player {
  private ctx = new AudioContext();
  private next = 0;
  private playing: AudioBufferSourceNode[] = [];
  playedMs = 0;

  play(pcm: Uint8Array, rate = 24000) {
    const samples = new Int16Array(pcm.buffer.slice(pcm.byteOffset, pcm.byteOffset + pcm.byteLength));
    if (samples.length === 0) return;
    const buf = this.ctx.createBuffer(1, samples.length, rate);
    const ch = buf.getChannelData(0);
    for (let i = 0; i < samples.length; i++) ch[i] = samples[i] / 0x8000;
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.ctx.destination);
    this.next = Math.max(this.next, this.ctx.currentTime + 0.02);
    src.start(this.next);
    this.next += buf.duration;
    this.playing.push(src);
    src.onended = () => (this.playing = this.playing.filter((s) => s !== src));
    this.playedMs += buf.duration * 1000;
    $("call").dataset.audioMs = String(Math.round(this.playedMs));
  }

  stop() {
    for (const s of this.playing) s.stop();
    this.playing = [];
    this.next = 0;
  }

  close() {
    this.stop();
    void this.ctx.close();
  }
}

// ------------------------------------------------------------------ call

let partial: HTMLLIElement | undefined;
let agentLine: HTMLLIElement | undefined;

function line(cls: string, text: string): HTMLLIElement {
  const li = document.createElement("li");
  li.className = cls;
  li.textContent = text;
  $("transcript").append(li);
  return li;
}

function onEvent(ev: VoiceEvent) {
  const e = ev.event;
  switch (e.case) {
    case "sessionStarted":
      showRecognition(e.value.recognition);
      break;
    case "speechStarted":
      player?.stop(); // barge-in: stop the reply now
      break;
    case "transcriptPartial":
      partial ??= line("you partial", "");
      partial.textContent = e.value.text;
      break;
    case "transcriptFinal":
      if (partial) partial.remove();
      partial = undefined;
      if (e.value.text) line("you", e.value.text);
      break;
    case "responseStarted":
      agentLine = line("agent", "");
      break;
    case "responseTextDelta":
      agentLine ??= line("agent", "");
      agentLine.textContent += e.value.text;
      break;
    case "responseAudioDelta":
      player?.play(e.value.audio);
      break;
    case "responseDone":
      if (agentLine && e.value.text) agentLine.textContent = e.value.text;
      if (agentLine && e.value.latency) agentLine.append(latencyNote(e.value.latency, e.value.interrupted));
      agentLine = undefined;
      break;
    case "error":
      $("error").textContent = `${e.value.message} (${e.value.reason})`;
      break;
  }
}

// level is a frame's loudness for the meter (RMS, 0 to 1, boosted so
// speech moves it).
function level(frame: Float32Array): number {
  let sum = 0;
  for (const x of frame) sum += x * x;
  return Math.min(1, 3 * Math.sqrt(sum / Math.max(1, frame.length)));
}

// latencyNote is a turn's latency as it happens: when the reply's first
// byte left after the end of the caller's speech, and the stages before it.
function latencyNote(l: TurnLatency, interrupted: boolean): HTMLElement {
  const note = document.createElement("small");
  note.className = "latency";
  note.textContent =
    ` first byte ${l.firstByteMs.toFixed(0)} ms after you stopped (transcript ${l.sttFinalMs.toFixed(0)}, ` +
    `first token ${l.llmFirstTokenMs.toFixed(0)}, first audio ${l.ttsFirstAudioMs.toFixed(0)} ms)` +
    (l.preemptive ? ", prepared while you paused" : "") +
    (interrupted ? ", interrupted" : "");
  return note;
}

// showRecognition says plainly what the call's speech recognition hears:
// the embedded recognizer with phrases hears only them.
function showRecognition(r: Recognition | undefined) {
  const note = $("recognition");
  note.hidden = !r?.phrasesOnly;
  if (!r?.phrasesOnly) return;
  const examples = r.examples.map((e) => `"${e}"`).join(", ");
  const source = r.fromModel ? "the phrases the scripted model understands" : "this project's phrase hints";
  note.textContent =
    `Speech recognition is limited to ${source} (${r.phrases}, such as ${examples}); other words are heard as the closest of them. ` +
    "To understand anything a caller says, run avb with AVB_STT_PROVIDER=openai and AVB_OPENAI_BASE_URL set to an OpenAI-compatible transcription server.";
}

function setCallState(phase: "idle" | "connecting" | "live") {
  $("call").dataset.state = phase;
  $("call-status").textContent = phase === "idle" ? "" : phase;
  $<HTMLButtonElement>("call-start").disabled = phase !== "idle" || !state.project;
  $<HTMLButtonElement>("call-end").disabled = phase !== "live";
}

// startCall calls the agent of the picked project from the microphone, as
// persona when one is given ("Try it" on the agents page).
async function startCall(persona?: Persona) {
  if (!state.avb || !state.project) return;
  $("call-persona").hidden = !persona;
  $("call-persona").textContent = persona ? `Talking to ${persona.name}.` : "";
  setCallState("connecting");
  $("transcript").replaceChildren();
  $("error").textContent = "";
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    player = new Player();
    call = await startBrowserCall(state.avb, { projectId: state.project.id, personaId: persona?.id, onEvent, onEnd: (err) => endCall(err) });
    capture = new AudioContext();
    await capture.audioWorklet.addModule(URL.createObjectURL(new Blob([captureWorklet], { type: "text/javascript" })));
    const node = new AudioWorkletNode(capture, "avb-capture");
    const rate = capture.sampleRate;
    const meter = $<HTMLMeterElement>("mic-level");
    node.port.onmessage = (m: MessageEvent<Float32Array>) => {
      meter.value = level(m.data);
      call?.sendAudio(toPCM16(m.data, rate)).catch(showError);
    };
    capture.createMediaStreamSource(mic).connect(node);
    setCallState("live");
  } catch (e) {
    showError(e);
    await endCall();
  }
}

async function endCall(err?: AvbError) {
  if (err) showError(err);
  const c = call;
  call = undefined;
  mic?.getTracks().forEach((t) => t.stop());
  mic = undefined;
  void capture?.close();
  capture = undefined;
  player?.close();
  player = undefined;
  setCallState("idle");
  if (c && !err) {
    await c.hangUp().catch(() => undefined);
  }
  await loadSessions().catch(showError);
}

// ------------------------------------------------------------------ wiring

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($<HTMLTextAreaElement>("credential").value.trim()).catch(showError);
});
$("sign-out").addEventListener("click", () => void signOut());
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  createKey(e.target as HTMLFormElement).catch(showError);
});
$("key-copy").addEventListener("click", () => {
  navigator.clipboard.writeText($("key-secret").textContent ?? "").then(
    () => ($("key-copy").textContent = "Copied"),
    showError,
  );
});
$("projects-more").addEventListener("click", () => loadProjects().catch(showError));
$("sessions-refresh").addEventListener("click", () => loadSessions().catch(showError));
$("sessions-more").addEventListener("click", () => loadSessions(true).catch(showError));
$("sessions-filter").addEventListener("submit", (e) => {
  e.preventDefault();
  loadSessions().catch(showError);
});
$("call-start").addEventListener("click", () => void startCall());
for (const tab of $("tabs").querySelectorAll<HTMLButtonElement>("button")) {
  tab.addEventListener("click", () => showPage(tab.dataset.page ?? "calls").catch(showError));
}
initAgents(tryPersona);
initUsage();
initTeam();
initAudit();

// tryPersona calls a persona from the calls page, in its project, or the
// one picked, or the first.
async function tryPersona(p: Persona) {
  await showPage("calls");
  let project = state.project;
  if (p.projectId && project?.id !== p.projectId) {
    project = (await state.avb!.projects.getProject({ projectId: p.projectId })).project;
  }
  project ??= (await state.avb!.projects.listProjects({ pageSize: 1 })).projects[0];
  if (!project) throw new Error("Create a project first: a call belongs to a project.");
  selectProject(project);
  await startCall(p);
}
$("call-end").addEventListener("click", () => void endCall());

// start offers the company sign-in when the server names an identity
// provider, finishes one the provider redirected back from, or resumes a
// pasted credential.
async function start() {
  const info = await createAvbClient({ baseUrl: location.origin })
    .system.getServerInfo({})
    .catch(() => undefined);
  const provider = info?.signIn;
  if (provider?.issuer && provider.clientId) {
    $("sso").hidden = false;
    $("sso-sign-in").addEventListener("click", () => beginSignIn(provider.issuer, provider.clientId).catch(showError));
  }
  const session = await completeSignIn();
  if (session) {
    oidc = session;
    await signInWith((tenant) => createAvbClient({ baseUrl: location.origin, token: () => session.accessToken(), tenant }));
    return;
  }
  const saved = sessionStorage.getItem(storageKey);
  if (saved) await signIn(saved).catch(() => sessionStorage.removeItem(storageKey));
}
start().catch(showError);
