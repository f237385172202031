// What every page of the console shares: the signed-in client, the
// caller's permissions, and small DOM helpers.
import { AvbError, type AvbClient, type Project } from "@agentvoicebox/sdk";

export const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The console's state: who is signed in, what they may do, where they are. */
export const state: {
  avb?: AvbClient;
  /** The tenant permissions the server says the caller holds (GetTenant). */
  permissions: Set<string>;
  /** The project picked on the calls page. */
  project?: Project;
} = { permissions: new Set() };

/** can reports whether the caller holds a tenant permission. */
export const can = (permission: string) => state.permissions.has(permission);

/**
 * applyPermissions shows only what the caller may do: an element with
 * data-needs="develop" is hidden without that permission. The server checks
 * every call regardless; this only spares people buttons that would fail.
 */
export function applyPermissions(root: ParentNode = document) {
  for (const el of root.querySelectorAll<HTMLElement>("[data-needs]")) {
    el.hidden = !can(el.dataset.needs ?? "");
  }
}

export function showError(e: unknown) {
  const err = AvbError.from(e);
  $("error").textContent = err.reason ? `${err.message} (${err.reason})` : err.message;
}

export function clearError() {
  $("error").textContent = "";
}

/** cell appends a table cell with text to row. */
export function cell(row: HTMLTableRowElement, text: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

/** button makes a button with a label and, for screen readers, a fuller name. */
export function button(label: string, name: string, onClick: () => Promise<unknown>): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (name !== label) b.setAttribute("aria-label", name);
  b.addEventListener("click", () => onClick().catch(showError));
  return b;
}

/** when formats a protobuf timestamp in the reader's locale ("" for none). */
export function when(t?: { seconds: bigint }, none = ""): string {
  return t ? new Date(Number(t.seconds) * 1000).toLocaleString() : none;
}

/** since turns a date input's value into a timestamp (undefined when empty). */
export function since(input: HTMLInputElement): { seconds: bigint; nanos: number } | undefined {
  const d = input.valueAsDate;
  return d ? { seconds: BigInt(Math.floor(d.getTime() / 1000)), nanos: 0 } : undefined;
}
