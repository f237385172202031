// Typed API errors: every error the API returns carries a stable,
// machine-readable reason (google.rpc.ErrorInfo), and validation errors name
// each bad field (google.rpc.BadRequest).
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export { Code };

/** A field that failed validation. */
export interface FieldViolation {
  /** The request field, as in the proto: "persona.name". */
  field: string;
  description: string;
}

const errorInfoType = "google.rpc.ErrorInfo";
const badRequestType = "google.rpc.BadRequest";

/**
 * AvbError is every error the SDK's clients throw: a ConnectError (so
 * `code`, `rawMessage` and the response `metadata` are there) with the
 * API's machine-readable `reason` ("token_expired", "permission_denied",
 * "validation_failed", ...) and, for validation, one entry per bad field.
 * Reasons are part of the API and never renamed.
 */
export class AvbError extends ConnectError {
  // The name stays "ConnectError": connect's own code recognizes errors by
  // it and passes an AvbError through unchanged.
  private readonly avbError = true;
  /** The machine-readable reason; "" when the server sent none (network errors). */
  readonly reason: string;
  /** The ErrorInfo metadata (for example retry hints). */
  readonly info: Record<string, string>;
  /** One entry per bad field, for validation_failed. */
  readonly fieldViolations: FieldViolation[];

  constructor(err: ConnectError) {
    super(err.rawMessage, err.code, err.metadata, undefined, err.cause);
    this.details = err.details;
    let reason = "";
    let info: Record<string, string> = {};
    const violations: FieldViolation[] = [];
    for (const d of err.details) {
      if (!("type" in d)) continue;
      if (d.type === errorInfoType) {
        ({ reason, metadata: info } = decodeErrorInfo(d.value));
      } else if (d.type === badRequestType) {
        violations.push(...decodeBadRequest(d.value));
      }
    }
    this.reason = reason;
    this.info = info;
    this.fieldViolations = violations;
  }

  // ConnectError's instanceof accepts any ConnectError; an AvbError is one
  // that was made here.
  static override [Symbol.hasInstance](v: unknown): boolean {
    return typeof v === "object" && v !== null && (v as { avbError?: unknown }).avbError === true;
  }

  /** Wraps anything a client call threw into an AvbError. */
  static override from(err: unknown): AvbError {
    if (err instanceof AvbError) return err;
    return new AvbError(ConnectError.from(err));
  }
}

function decodeErrorInfo(b: Uint8Array): { reason: string; metadata: Record<string, string> } {
  const r = new BinaryReader(b);
  let reason = "";
  const metadata: Record<string, string> = {};
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === WireType.LengthDelimited) {
      reason = r.string();
    } else if (no === 3 && wt === WireType.LengthDelimited) {
      const e = new BinaryReader(r.bytes());
      let k = "";
      let v = "";
      while (e.pos < e.len) {
        const [eno, ewt] = e.tag();
        if (eno === 1) k = e.string();
        else if (eno === 2) v = e.string();
        else e.skip(ewt, eno);
      }
      metadata[k] = v;
    } else {
      r.skip(wt, no);
    }
  }
  return { reason, metadata };
}

function decodeBadRequest(b: Uint8Array): FieldViolation[] {
  const r = new BinaryReader(b);
  const out: FieldViolation[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no !== 1 || wt !== WireType.LengthDelimited) {
      r.skip(wt, no);
      continue;
    }
    const v = new BinaryReader(r.bytes());
    const fv: FieldViolation = { field: "", description: "" };
    while (v.pos < v.len) {
      const [vno, vwt] = v.tag();
      if (vno === 1) fv.field = v.string();
      else if (vno === 2) fv.description = v.string();
      else v.skip(vwt, vno);
    }
    out.push(fv);
  }
  return out;
}
