// Clients of every AgentVoiceBox service over one transport.
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";

import { AvbError } from "./errors.js";
import { AdminService } from "./gen/avb/v1/admin_pb.js";
import { ApiKeyService } from "./gen/avb/v1/apikey_pb.js";
import { AuditService } from "./gen/avb/v1/audit_pb.js";
import { BillingService } from "./gen/avb/v1/billing_pb.js";
import { EventService } from "./gen/avb/v1/event_pb.js";
import { NotificationService } from "./gen/avb/v1/notification_pb.js";
import { PersonaService } from "./gen/avb/v1/persona_pb.js";
import { ProjectService } from "./gen/avb/v1/project_pb.js";
import { RoleService } from "./gen/avb/v1/role_pb.js";
import { SessionService } from "./gen/avb/v1/session_pb.js";
import { SystemService } from "./gen/avb/v1/system_pb.js";
import { TenantService } from "./gen/avb/v1/tenant_pb.js";
import { ThemeService } from "./gen/avb/v1/theme_pb.js";
import { UserService } from "./gen/avb/v1/user_pb.js";
import { PhoneNumberService, SipTrunkService } from "./gen/avb/v1/telephony_pb.js";
import { VoiceConfigService } from "./gen/avb/v1/voiceconfig_pb.js";
import { VoiceService } from "./gen/avb/v1/voice_pb.js";

/** A bearer credential, or a function returning a fresh one. */
export type Credential = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The server, for example "https://voice.example.com" or "http://localhost:8080". */
  baseUrl: string;
  /** An API key ("avb_..."), sent as X-API-Key. */
  apiKey?: string;
  /** A user's OIDC access token, or a browser client token ("avbct_..."), sent as a bearer token. */
  token?: Credential;
  /** The tenant (id or slug) when a user token does not name one. */
  tenant?: string;
  /** "connect" (default: JSON over HTTP/1.1 or 2) or "grpc-web". */
  protocol?: "connect" | "grpc-web";
  /** Binary protobuf instead of JSON on the wire (smaller; JSON is easier to inspect). */
  binary?: boolean;
  /** A fetch implementation (defaults to the global one). */
  fetch?: typeof globalThis.fetch;
  /** More interceptors, run after the SDK's own. */
  interceptors?: Interceptor[];
  /**
   * Bounds each unary call, in milliseconds (30 000 by default; 0: no
   * bound): a server that does not answer fails the call with
   * deadline_exceeded instead of leaving it waiting. Streams (a call's
   * events, a subscription) are not bounded: they live as long as they are
   * used. A call's own `timeoutMs` option wins.
   */
  unaryTimeoutMs?: number;
}

/** The bound of unary calls when ClientOptions.unaryTimeoutMs is not set. */
export const defaultUnaryTimeoutMs = 30_000;

// unaryDeadline gives every unary call a deadline.
function unaryDeadline(ms: number): Interceptor {
  return (next) => async (req) => {
    if (req.stream || ms <= 0) return next(req);
    const timer = AbortSignal.timeout(ms);
    try {
      return await next({ ...req, signal: AbortSignal.any([req.signal, timer]) });
    } catch (e) {
      if (timer.aborted && !req.signal.aborted) {
        throw new ConnectError(`no answer from the server within ${ms} ms`, Code.DeadlineExceeded);
      }
      throw e;
    }
  };
}

// credentials adds the caller's credentials to every request.
function credentials(opts: ClientOptions): Interceptor {
  return (next) => async (req) => {
    if (opts.apiKey) req.header.set("X-API-Key", opts.apiKey);
    if (opts.token) {
      const tok = typeof opts.token === "function" ? await opts.token() : opts.token;
      req.header.set("Authorization", "Bearer " + tok);
    }
    if (opts.tenant) req.header.set("X-Tenant-ID", opts.tenant);
    return next(req);
  };
}

// typedErrors turns every failure, also those of a stream, into an AvbError.
const typedErrors: Interceptor = (next) => async (req) => {
  let res;
  try {
    res = await next(req);
  } catch (e) {
    throw AvbError.from(e);
  }
  if (!res.stream) return res;
  const inner = res.message;
  return {
    ...res,
    message: (async function* () {
      try {
        yield* inner;
      } catch (e) {
        throw AvbError.from(e);
      }
    })(),
  };
};

/** The transport all clients share: credentials, typed errors, protocol. */
export function createAvbTransport(opts: ClientOptions): Transport {
  const common = {
    baseUrl: opts.baseUrl.replace(/\/+$/, ""),
    interceptors: [typedErrors, unaryDeadline(opts.unaryTimeoutMs ?? defaultUnaryTimeoutMs), credentials(opts), ...(opts.interceptors ?? [])],
    fetch: opts.fetch,
    useBinaryFormat: opts.binary ?? false,
  };
  return opts.protocol === "grpc-web" ? createGrpcWebTransport(common) : createConnectTransport(common);
}

/** The API's services, by the name the SDK gives their clients. */
export const services = {
  admin: AdminService,
  apiKeys: ApiKeyService,
  audit: AuditService,
  billing: BillingService,
  events: EventService,
  notifications: NotificationService,
  personas: PersonaService,
  phoneNumbers: PhoneNumberService,
  projects: ProjectService,
  roles: RoleService,
  sessions: SessionService,
  sipTrunks: SipTrunkService,
  system: SystemService,
  tenant: TenantService,
  themes: ThemeService,
  users: UserService,
  voice: VoiceService,
  voiceConfigs: VoiceConfigService,
} as const;

/** One typed client per service. */
export type AvbClient = { [K in keyof typeof services]: Client<(typeof services)[K]> };

/**
 * createAvbClient returns clients of every service, over one transport.
 *
 *   const avb = createAvbClient({ baseUrl: "http://localhost:8080", apiKey: "avb_..." });
 *   const { project } = await avb.projects.createProject({ name: "Support" });
 */
export function createAvbClient(opts: ClientOptions | Transport): AvbClient {
  const transport = "baseUrl" in opts ? createAvbTransport(opts) : opts;
  const out = {} as Record<string, unknown>;
  for (const [name, svc] of Object.entries(services)) {
    out[name] = createClient(svc as DescService, transport);
  }
  return out as AvbClient;
}
