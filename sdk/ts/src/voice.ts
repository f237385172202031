// The browser voice path: a browser cannot stream a request body over fetch,
// so a call is a server stream of events (ConverseEvents) plus unary
// SendAudio / SendControl calls for what goes in.
import { create, type MessageInitShape } from "@bufbuild/protobuf";

import type { AvbClient } from "./client.js";
import { AvbError } from "./errors.js";
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
  /** Every event of the call, in order. */
  onEvent?: (event: VoiceEvent) => void;
  /** Called once when the call ends: undefined for a normal end. */
  onEnd?: (err?: AvbError) => void;
}

/** A live call on the browser path. */
export interface BrowserCall {
  readonly sessionId: string;
  /**
   * Sends caller audio in the session's input format (16-bit PCM, 16 kHz
   * mono unless configured otherwise). Sends are kept in order; send 20 to
   * 100 ms at a time, in real time.
   */
  sendAudio(audio: Int16Array | Uint8Array): Promise<void>;
  /** Sends a control message (commit, clear, cancel a response, end...). */
  control(control: MessageInitShape<typeof ClientControlSchema>): Promise<void>;
  /** Ends the session and closes the event stream. */
  hangUp(): Promise<void>;
  /** Resolves when the event stream has ended. */
  readonly ended: Promise<void>;
}

/**
 * startBrowserCall creates or joins a session, opens its event stream and
 * resolves once the session is live (the session_started event), so audio
 * sent from then on is heard.
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
  const abort = new AbortController();
  const stream = avb.voice.converseEvents({ start: { sessionId } }, { signal: abort.signal });
  let live!: (v: void) => void;
  let failed!: (e: AvbError) => void;
  const started = new Promise<void>((resolve, reject) => {
    live = resolve;
    failed = reject;
  });
  const ended = (async () => {
    let err: AvbError | undefined;
    try {
      for await (const res of stream) {
        const ev = res.event;
        if (!ev) continue;
        if (ev.event.case === "sessionStarted") live();
        opts.onEvent?.(ev);
      }
    } catch (e) {
      const ae = AvbError.from(e);
      if (!abort.signal.aborted) err = ae;
    }
    failed(err ?? AvbError.from(new Error("the call ended before it started")));
    opts.onEnd?.(err);
  })();
  await started;

  let queue = Promise.resolve();
  const inOrder = (fn: () => Promise<unknown>) => {
    const next = queue.then(fn);
    queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next.then(() => undefined);
  };
  return {
    sessionId,
    ended,
    sendAudio: (audio) => {
      const bytes = audio instanceof Int16Array ? new Uint8Array(audio.buffer, audio.byteOffset, audio.byteLength) : audio;
      const copy = bytes.slice(); // the caller may reuse its buffer
      return inOrder(() => avb.voice.sendAudio({ sessionId, audio: copy }));
    },
    control: (control) => inOrder(() => avb.voice.sendControl({ sessionId, control: create(ClientControlSchema, control) })),
    hangUp: async () => {
      try {
        await inOrder(() => avb.voice.sendControl({ sessionId, control: { control: { case: "end", value: {} } } }));
      } finally {
        abort.abort();
        await ended;
      }
    },
  };
}
