// The team page (admins): the tenant's members and their roles, granted
// and revoked here. Roles an identity provider grants come back with the
// member's next token; those granted here are avb's own.
import { TenantRole, type User } from "@agentvoicebox/sdk";

import { $, button, cell, showError, state, when } from "./ui.js";

const roleName = (r: TenantRole) => TenantRole[r].toLowerCase();

/** initTeam wires the grant form. */
export function initTeam() {
  $("grant-role").replaceChildren(
    ...[TenantRole.ADMIN, TenantRole.DEVELOPER, TenantRole.OPERATOR, TenantRole.VIEWER, TenantRole.BILLING].map((r) =>
      Object.assign(document.createElement("option"), { value: String(r), textContent: roleName(r) }),
    ),
  );
  $("grant-form").addEventListener("submit", (e) => {
    e.preventDefault();
    grant().catch(showError);
  });
}

async function grant() {
  if (!state.avb) return;
  const userId = $<HTMLSelectElement>("grant-user").value;
  const role = Number($<HTMLSelectElement>("grant-role").value) as TenantRole;
  await state.avb.roles.grantRole({ userId, role });
  await showTeam();
}

const label = (u: User) => [u.firstName, u.lastName].filter(Boolean).join(" ") || u.email || u.subject;

/** showTeam lists the members with their roles. */
export async function showTeam() {
  if (!state.avb) return;
  const avb = state.avb;
  const [users, roles] = await Promise.all([
    avb.users.listUsers({ pageSize: 500 }),
    avb.roles.listRoleAssignments({ pageSize: 500 }),
  ]);
  const byUser = new Map<string, TenantRole[]>();
  for (const a of roles.assignments) byUser.set(a.userId, [...(byUser.get(a.userId) ?? []), a.role]);
  $("members").replaceChildren(
    ...users.users.map((u) => {
      const tr = document.createElement("tr");
      tr.dataset.id = u.id;
      cell(tr, label(u));
      cell(tr, u.email);
      const held = cell(tr, "");
      for (const r of byUser.get(u.id) ?? []) {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.append(roleName(r), " ");
        chip.append(
          button("×", `Revoke ${roleName(r)} from ${label(u)}`, async () => {
            await avb.roles.revokeRole({ userId: u.id, role: r });
            await showTeam();
          }),
        );
        held.append(chip, " ");
      }
      cell(tr, u.isActive ? when(u.lastLoginTime, "never") : "deactivated");
      return tr;
    }),
  );
  $("grant-user").replaceChildren(
    ...users.users.filter((u) => u.isActive).map((u) => Object.assign(document.createElement("option"), { value: u.id, textContent: label(u) })),
  );
}
