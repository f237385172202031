// The agents page: personas listed and edited in place. The server's field
// violations are shown on the field they belong to; "Try it" calls the
// persona from the microphone.
import { AvbError, type Persona } from "@agentvoicebox/sdk";

import { $, applyPermissions, can, clearError, showError, state } from "./ui.js";

// The form's fields, by the persona field they edit.
const fields = ["name", "description", "instructions", "voice", "model", "toolFiller"] as const;
type Field = (typeof fields)[number];

// The proto name of a field ("toolFiller" is "tool_filler").
const protoName = (f: Field) => f.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

const input = (f: Field) => $<HTMLInputElement | HTMLTextAreaElement>("persona-" + f);

let editing: Persona | undefined;
let tryIt: (p: Persona) => Promise<void> = async () => undefined;

/** initAgents wires the page; tryPersona starts a call with a persona. */
export function initAgents(tryPersona: (p: Persona) => Promise<void>) {
  tryIt = tryPersona;
  $("persona-form").addEventListener("submit", (e) => {
    e.preventDefault();
    save().catch(showError);
  });
  $("persona-new").addEventListener("click", () => edit(undefined));
  $("persona-try").addEventListener("click", () => {
    if (editing) tryIt(editing).catch(showError);
  });
  $("persona-delete").addEventListener("click", () => remove().catch(showError));
}

/** loadAgents lists the tenant's personas. */
export async function loadAgents() {
  if (!state.avb) return;
  const res = await state.avb.personas.listPersonas({ pageSize: 100 });
  $("personas").replaceChildren(
    ...res.personas.map((p) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = p.name;
      b.dataset.id = p.id;
      b.addEventListener("click", () => edit(p));
      li.append(b);
      if (p.description) li.append(" ", Object.assign(document.createElement("small"), { textContent: p.description }));
      return li;
    }),
  );
  if (res.personas.length === 0) $("personas").append(Object.assign(document.createElement("li"), { textContent: "No agents yet." }));
}

// edit fills the form with a persona (or empties it for a new one).
function edit(p: Persona | undefined) {
  editing = p;
  clearFieldErrors();
  $("persona-title").textContent = p ? `Agent: ${p.name}` : "New agent";
  for (const f of fields) input(f).value = p ? String(p[f] ?? "") : "";
  if (!p) input("model").value = "scripted";
  const readOnly = !can("develop");
  for (const f of fields) input(f).readOnly = readOnly;
  $("persona-try").hidden = !p || !can("operate");
  $("persona-delete").hidden = !p || readOnly;
  $("persona-saved").textContent = "";
  input("name").focus();
}

function clearFieldErrors() {
  for (const f of fields) {
    $("persona-" + f + "-error").textContent = "";
    input(f).removeAttribute("aria-invalid");
  }
}

// showFieldErrors puts each violation next to its field; those of no field
// of the form go to the page's error line.
function showFieldErrors(err: AvbError): boolean {
  let shown = false;
  for (const v of err.fieldViolations) {
    const f = fields.find((f) => v.field === "persona." + protoName(f));
    if (!f) continue;
    $("persona-" + f + "-error").textContent = v.description;
    input(f).setAttribute("aria-invalid", "true");
    if (!shown) input(f).focus();
    shown = true;
  }
  return shown;
}

async function save() {
  if (!state.avb) return;
  clearError();
  clearFieldErrors();
  const values = Object.fromEntries(fields.map((f) => [f, input(f).value])) as Record<Field, string>;
  try {
    const saved = editing
      ? (await state.avb.personas.updatePersona({
          personaId: editing.id,
          persona: values,
          updateMask: { paths: fields.map(protoName) },
        })).persona
      : (await state.avb.personas.createPersona({ persona: { ...values, projectId: state.project?.id ?? "" } })).persona;
    await loadAgents();
    edit(saved);
    $("persona-saved").textContent = "Saved.";
  } catch (e) {
    const err = AvbError.from(e);
    if (!showFieldErrors(err)) showError(err);
  }
}

async function remove() {
  if (!state.avb || !editing) return;
  if (!confirm(`Delete the agent ${editing.name}?`)) return;
  await state.avb.personas.deletePersona({ personaId: editing.id });
  edit(undefined);
  await loadAgents();
}

/** showAgents opens the page. */
export async function showAgents() {
  applyPermissions($("page-agents"));
  await loadAgents();
  if (!editing) edit(undefined);
}
