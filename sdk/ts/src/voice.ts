// The browser voice path: a browser cannot stream a request body over fetch,
// so a call is a server stream of events (ConverseEvents) plus unary
// SendAudio / SendControl calls for what goes in.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";

import type { AvbClient } from "./client.js";
import { AvbError, Code } from "./errors.js";
import type { SessionConfigSchema } from "./gen/avb/v1/session_pb.js";
import { ClientControlSchema, type VoiceEvent } from "./gen/avb/v1/voice_pb.js";

export interface BrowserCallOptions {
  /** Join this session (made with SessionService.CreateSession)... */
  sessionId?: string;
  /** ...or create one in this project, with its voice defaults. */
  projectId?: string;
  personaId?: string;
  voiceConfigId?: string;
  /** Laid over the project, voice config and persona settings. */
  config?: MessageInitShape<typeof SessionConfigSchema>;
  /** Every event of the call, in order (a rejoin shows as sessionStarted with resumed set). */
  onEvent?: (event: VoiceEvent) => void;
  /** Called once when the call ends: undefined for a normal end. */
  onEnd?: (err?: AvbError) => void;
  /**
   * How long the call tries to rejoin its session when the instance holding
   * it drains or dies (30 000 ms by default; 0 never rejoins).
   */
  resumeWithinMs?: number;
}

/** A live call on the browser path. */
export interface BrowserCall {
  readonly sessionId: string;
  /**
   * Sends caller audio in the session's input format (16-bit PCM, 16 kHz
   * mono unless configured otherwise). Sends are kept in order; send 20 to
   * 100 ms at a time, in real time. While the call moves between instances
   * its audio is kept (2 s at most) and sent once it has rejoined.
   */
  sendAudio(audio: Int16Array | Uint8Array): Promise<void>;
  /** Sends a control message (commit, clear, cancel a response, end...). */
  control(control: MessageInitShape<typeof ClientControlSchema>): Promise<void>;
  /** Ends the session and closes the event stream. */
  hangUp(): Promise<void>;
  /** Resolves when the event stream has ended. */
  readonly ended: Promise<void>;
  /** How many times the call rejoined its session on another instance. */
  readonly resumes: number;
}

/** How long a connection may take to start its session. */
const openTimeoutMs = 10_000;

/** How long one SendAudio or SendControl may take. */
const sendTimeoutMs = 5_000;

/** Audio kept while a call moves: 100 sends (2 s of 20 ms frames). */
const maxPending = 100;

/**
 * rejoinable: the stream was cut by its instance going away (a network
 * error, or server_shutting_down), not ended by the server's decision,
 * which carries a reason.
 */
function rejoinable(e: AvbError): boolean {
  if (e.reason === "server_shutting_down") return true;
  return e.reason === "" && [Code.Unavailable, Code.Unknown, Code.Internal, Code.Canceled, Code.Aborted].includes(e.code);
}

/**
 * startBrowserCall creates or joins a session, opens its event stream and
 * resolves once the session is live (the session_started event), so audio
 * sent from then on is heard. When the instance holding the call drains (a
 * sessionMoving event) or dies, the call rejoins its session through the
 * same base URL (the load balancer picks a live instance) and goes on with
 * its history; onEnd hears only of an end that could not be rejoined.
 */
export async function startBrowserCall(avb: AvbClient, opts: BrowserCallOptions): Promise<BrowserCall> {
  let sessionId = opts.sessionId ?? "";
  if (!sessionId) {
    const res = await avb.sessions.createSession({
      projectId: opts.projectId ?? "",
      personaId: opts.personaId ?? "",
      voiceConfigId: opts.voiceConfigId ?? "",
      config: opts.config,
    });
    sessionId = res.session?.id ?? "";
  }
  const resumeWithinMs = opts.resumeWithinMs ?? 30_000;
  const hungUp = new AbortController();
  let resumes = 0;
  // While moving, audio waits here; flushed once the call has rejoined.
  let moving: Promise<void> | undefined;
  let pending: Uint8Array[] = [];

  // open starts one event stream and resolves at its session_started; its
  // events then flow to onEvent until it ends, which the returned promise
  // reports (undefined: a normal end).
  const open = async (): Promise<{ done: Promise<AvbError | undefined>; moveAsked: Promise<void> }> => {
    const abort = new AbortController();
    hungUp.signal.addEventListener("abort", () => abort.abort(), { once: true });
    const stream = avb.voice.converseEvents({ start: { sessionId } }, { signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    let first: IteratorResult<{ event?: VoiceEvent }>;
    // An instance that accepts and answers nothing is given up on.
    const late = setTimeout(() => abort.abort(), openTimeoutMs);
    try {
      first = await it.next();
    } catch (e) {
      throw abort.signal.aborted && !hungUp.signal.aborted
        ? new AvbError(new ConnectError("the session did not start in time", Code.Unavailable))
        : AvbError.from(e);
    } finally {
      clearTimeout(late);
    }
    const ev = first.value?.event;
    if (first.done || ev?.event.case !== "sessionStarted") {
      abort.abort();
      throw AvbError.from(new Error("the call ended before it started"));
    }
    opts.onEvent?.(ev);
    let askMove!: () => void;
    const moveAsked = new Promise<void>((r) => (askMove = r));
    const done = (async () => {
      try {
        for (;;) {
          const next = await it.next();
          if (next.done) return undefined;
          const e = next.value.event;
          if (!e) continue;
          if (e.event.case === "sessionMoving") askMove();
          opts.onEvent?.(e);
        }
      } catch (e) {
        return hungUp.signal.aborted ? undefined : AvbError.from(e);
      } finally {
        abort.abort();
      }
    })();
    return { done, moveAsked };
  };

  // rejoin opens the session's stream again, retrying until resumeWithinMs.
  const rejoin = async (cause: AvbError): Promise<Awaited<ReturnType<typeof open>>> => {
    const deadline = Date.now() + resumeWithinMs;
    let backoff = 50;
    for (;;) {
      try {
        const s = await open();
        resumes++;
        return s;
      } catch (e) {
        const err = AvbError.from(e);
        if (!rejoinable(err) || Date.now() + backoff > deadline || hungUp.signal.aborted) throw cause;
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(2 * backoff, 1000);
    }
  };

  const first = await open();
  // run follows the call across instances until it ends for good.
  const run = async (s: Awaited<ReturnType<typeof open>>): Promise<AvbError | undefined> => {
    for (;;) {
      const why = await Promise.race([s.done.then((err) => ({ err, move: false })), s.moveAsked.then(() => ({ err: undefined, move: true }))]);
      if (!why.move && (!why.err || !rejoinable(why.err) || resumeWithinMs <= 0)) return why.err;
      let moved!: () => void;
      moving = new Promise<void>((r) => (moved = r));
      const old = s;
      try {
        s = await rejoin(why.err ?? AvbError.from(new Error("the instance is shutting down")));
      } catch (e) {
        moving = undefined;
        moved();
        return AvbError.from(e);
      }
      // The old stream (told to move) delivers what is in flight, then ends.
      void old.done;
      const frames = pending;
      pending = [];
      moving = undefined;
      moved();
      for (const f of frames) await avb.voice.sendAudio({ sessionId, audio: f }, { timeoutMs: sendTimeoutMs }).catch(() => undefined);
    }
  };
  const ended = run(first).then((err) => opts.onEnd?.(err));

  let queue = Promise.resolve();
  const inOrder = (fn: () => Promise<unknown>) => {
    const next = queue.then(fn);
    queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next.then(() => undefined);
  };
  const sendAudio = async (audio: Uint8Array) => {
    if (moving) {
      pending.push(audio);
      if (pending.length > maxPending) pending.shift();
      return;
    }
    try {
      await avb.voice.sendAudio({ sessionId, audio }, { timeoutMs: sendTimeoutMs });
    } catch (e) {
      const err = AvbError.from(e);
      // The holder is gone and the event stream has not noticed yet: keep
      // the audio for the rejoin rather than fail the caller.
      if (err.code !== Code.Unavailable || resumeWithinMs <= 0) throw err;
      pending.push(audio);
      if (pending.length > maxPending) pending.shift();
    }
  };
  return {
    sessionId,
    ended,
    get resumes() {
      return resumes;
    },
    sendAudio: (audio) => {
      const bytes = audio instanceof Int16Array ? new Uint8Array(audio.buffer, audio.byteOffset, audio.byteLength) : audio;
      const copy = bytes.slice(); // the caller may reuse its buffer
      return inOrder(() => sendAudio(copy));
    },
    control: (control) =>
      inOrder(async () => {
        await moving;
        await avb.voice.sendControl({ sessionId, control: create(ClientControlSchema, control) }, { timeoutMs: sendTimeoutMs });
      }),
    hangUp: async () => {
      try {
        await inOrder(async () => {
          await moving;
          await avb.voice.sendControl({ sessionId, control: { control: { case: "end", value: {} } } }, { timeoutMs: sendTimeoutMs });
        });
      } finally {
        hungUp.abort();
        await ended;
      }
    },
  };
}
