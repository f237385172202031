// The audit log page (admins): entries filtered by action, resource and
// date, newest first, and the same filter downloaded as CSV.
import { $, cell, showError, since, state, when } from "./ui.js";

let pageToken = "";

function filter() {
  return {
    action: $<HTMLSelectElement>("audit-action").value,
    resourceType: $<HTMLInputElement>("audit-resource").value.trim(),
    startTime: since($<HTMLInputElement>("audit-since")),
  };
}

/** initAudit wires the filters, paging and the download. */
export function initAudit() {
  $("audit-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    showAudit().catch(showError);
  });
  $("audit-more").addEventListener("click", () => showAudit(true).catch(showError));
  $("audit-download").addEventListener("click", () => download().catch(showError));
}

/** showAudit lists a page of entries through the filters (more appends). */
export async function showAudit(more = false) {
  if (!state.avb) return;
  const res = await state.avb.audit.listAuditLogs({ pageSize: 50, pageToken: more ? pageToken : "", filter: filter() });
  pageToken = res.nextPageToken;
  $("audit-more").hidden = !pageToken;
  const rows = res.entries.map((e) => {
    const tr = document.createElement("tr");
    cell(tr, when(e.time));
    cell(tr, e.actorEmail || `${e.actorType} ${e.actorId}`.trim());
    cell(tr, e.action.replaceAll("_", " "));
    cell(tr, `${e.resourceType} ${e.resourceId}`.trim());
    cell(tr, e.description);
    return tr;
  });
  if (more) $("audit-entries").append(...rows);
  else $("audit-entries").replaceChildren(...rows);
}

// download streams the filtered log as CSV into a file the browser saves.
async function download() {
  if (!state.avb) return;
  const parts: BlobPart[] = [];
  let rows = 0;
  const status = $("audit-status");
  for await (const chunk of state.avb.audit.exportAuditLogs({ filter: filter() })) {
    parts.push(new Uint8Array(chunk.csv));
    rows += chunk.rows;
    status.textContent = `${rows} entries…`;
  }
  const url = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
  const a = Object.assign(document.createElement("a"), { href: url, download: `audit-${new Date().toISOString().slice(0, 10)}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  status.textContent = `Downloaded ${rows} entries.`;
}
