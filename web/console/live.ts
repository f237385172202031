// Live notifications from the tenant's event stream: a session that ended,
// a billing alert. The stream reconnects after a failure (backoff up to
// 30 s) and ends on sign-out.
import type { PlatformEvent } from "@agentvoicebox/sdk";

import { $, state } from "./ui.js";

const maxShown = 5;
let stop: AbortController | undefined;

/** listen follows the event stream until unlisten; onSessionEnded refreshes lists. */
export function listen(onSessionEnded: () => void) {
  unlisten();
  const ctl = new AbortController();
  stop = ctl;
  void (async () => {
    for (let delay = 1000; !ctl.signal.aborted; delay = Math.min(2 * delay, 30_000)) {
      try {
        const stream = state.avb!.events.subscribe({ types: ["session.ended", "billing.alert"] }, { signal: ctl.signal });
        for await (const m of stream) {
          delay = 1000;
          if (m.message.case !== "event") continue;
          const ev = m.message.value;
          notify(ev);
          if (ev.type === "session.ended") onSessionEnded();
        }
      } catch (e) {
        // The stream broke (a deploy, the network): follow it again.
        if (!ctl.signal.aborted) console.warn("event stream:", e instanceof Error ? e.message : e);
      }
      if (ctl.signal.aborted) return;
      await new Promise((r) => setTimeout(r, delay));
    }
  })();
}

export function unlisten() {
  stop?.abort();
  stop = undefined;
}

// message says what an event means for a person.
function message(ev: PlatformEvent): { text: string; severity: string } {
  const d = (ev.data ?? {}) as Record<string, unknown>;
  if (ev.type === "session.ended") {
    const status = String(d.status ?? "");
    const turns = Number(d.turns ?? 0);
    const secs = Number(d.duration_seconds ?? 0).toFixed(0);
    const why = d.reason ? ` (${String(d.reason)})` : "";
    const n = turns === 1 ? "1 turn" : `${turns} turns`;
    return { text: `A call ended (${status}${why}): ${n} in ${secs} s.`, severity: status === "error" ? "error" : "info" };
  }
  const metric = String(d.metric ?? d.alert_name ?? "usage").replaceAll("_", " ");
  const at = d.threshold ? ` reached ${String(d.threshold)}% of its quota` : ` alert ${String(d.alert_code ?? "")}`;
  return { text: `Billing: ${metric}${at}.`, severity: "warning" };
}

function notify(ev: PlatformEvent) {
  const { text, severity } = message(ev);
  const li = document.createElement("li");
  li.className = "notice " + severity;
  li.dataset.type = ev.type;
  li.textContent = text + " ";
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "×";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => li.remove());
  li.append(close);
  const box = $("notices");
  box.prepend(li);
  while (box.children.length > maxShown) box.lastElementChild?.remove();
}
