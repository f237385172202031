// The console in headless Chromium against a live server (started by the Go
// test TestConsoleInChromium): sign in with an API key, pick a project, and
// call the agent from a fake microphone that plays a spoken WAV file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { chromium, type Page } from "playwright-core";

import { AvbError, createAvbClient } from "@agentvoicebox/sdk";

const env = (k: string) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: this test runs from the Go test TestConsoleInChromium`);
  return v;
};

// shot saves a screenshot of the page, named for what it shows.
async function shot(page: Page, name: string) {
  await page.screenshot({ path: `${env("AVB_SCREENSHOTS")}/${name}.png`, fullPage: true });
}

// check runs axe-core on the page as it is and fails on serious or
// critical accessibility violations, then photographs it. axe is
// evaluated through the DevTools protocol: the console's CSP rightly
// refuses injected scripts.
async function check(page: Page, name: string) {
  const loaded = await page.evaluate(() => "axe" in window);
  if (!loaded) await page.evaluate(readFileSync(env("AVB_AXE"), "utf8") + ";0");
  const violations = await page.evaluate(async () => {
    // @ts-expect-error axe is global once evaluated
    const res = await window.axe.run(document, { resultTypes: ["violations"] });
    return (res.violations as { id: string; impact: string; help: string; nodes: { target: string[] }[] }[])
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  assert.deepEqual(violations, [], `accessibility of ${name}`);
  await shot(page, name);
}

// tab opens a page of the console.
async function tab(page: Page, name: string) {
  await page.click(`#tabs button[data-page="${name}"]`);
  await page.waitForSelector(`#page-${name}:not([hidden])`);
}

// launch opens Chromium with args and a page whose console output and
// errors are kept for a failure's message.
async function launch(args: string[] = [], viewport = { width: 1280, height: 900 }) {
  const browser = await chromium.launch({ executablePath: env("AVB_CHROMIUM"), args: [...args, "--no-sandbox"] });
  const page = await browser.newPage({ viewport });
  const logs: string[] = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  return { browser, page, logs };
}

test("a browser call from the console shows the live transcript and plays the reply", async () => {
  const baseUrl = env("AVB_BASE_URL");
  const apiKey = env("AVB_API_KEY");
  const avb = createAvbClient({ baseUrl, apiKey });
  // A newcomer's project: no phrase hints. The embedded recognizer then
  // listens for what the scripted model understands, and the console says so.
  const name = "Browser demo " + Date.now();
  await avb.projects.createProject({ name });

  const { browser, page, logs } = await launch([
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${env("AVB_SPEECH_WAV")}`,
    "--autoplay-policy=no-user-gesture-required",
  ]);
  try {
    await page.goto(baseUrl + "/console/");
    await check(page, "sign-in");
    await page.fill("#credential", apiKey);
    await page.click("#sign-in");
    await page.locator("#projects li", { hasText: name }).click();
    await check(page, "calls");
    // An agent: a bad name is refused, and the server's reason shows on
    // that field; fixed, it saves.
    await tab(page, "agents");
    await page.click("#persona-new");
    await page.fill("#persona-name", "   ");
    await page.fill("#persona-instructions", "You book meetings.");
    await page.click("#persona-save");
    await page.locator("#persona-name-error", { hasText: /blank|empty/ }).waitFor({ timeout: 5_000 });
    assert.equal(await page.locator("#persona-name").getAttribute("aria-invalid"), "true");
    assert.equal(await page.locator("#error").textContent(), "");
    await check(page, "agent-field-error");
    const agent = "Booking desk " + Date.now();
    await page.fill("#persona-name", agent);
    await page.click("#persona-save");
    await page.locator("#persona-saved", { hasText: "Saved" }).waitFor({ timeout: 5_000 });
    assert.equal(await page.locator("#persona-name-error").textContent(), "");
    await page.locator("#personas button", { hasText: agent }).waitFor();
    await check(page, "agents");
    // "Try it" calls that agent from the microphone.
    await page.click("#persona-try");
    await page.waitForSelector('#call[data-state="live"]', { timeout: 15_000 });
    assert.match((await page.locator("#call-persona").textContent()) ?? "", new RegExp(agent));
    const note = page.locator("#recognition");
    await note.waitFor({ state: "visible", timeout: 5_000 });
    assert.match((await note.textContent()) ?? "", /limited to the phrases the scripted model understands.*AVB_STT_PROVIDER=openai/);
    // The fake microphone loops the sentence: its transcript and the
    // agent's answer appear, and the answer's audio is played.
    const you = page.locator("#transcript li.you", { hasText: env("AVB_ASK") });
    await you.first().waitFor({ timeout: 30_000 }).catch((e) => {
      throw new Error(`${e}\n${logs.join("\n")}`);
    });
    const answer = page.locator("#transcript li.agent", { hasText: "booked the meeting" }).first();
    await answer.waitFor({ timeout: 15_000 });
    // The turn's latency shows as it happens, and the microphone moves the meter.
    await answer.locator(".latency", { hasText: /first byte \d+ ms after you stopped/ }).waitFor({ timeout: 15_000 });
    await page.waitForFunction(() => (document.getElementById("mic-level") as HTMLMeterElement).value > 0.01, null, { timeout: 10_000 });
    await check(page, "call");
    await page.waitForFunction(() => Number(document.getElementById("call")?.dataset.audioMs) > 500, null, { timeout: 15_000 });
    await page.click("#call-end");
    await page.waitForSelector('#call[data-state="idle"]');
    // The tenant's event stream tells the console the call ended.
    await page
      .locator('#notices li[data-type="session.ended"]', { hasText: "ended (completed)" })
      .first()
      .waitFor({ timeout: 30_000 })
      .catch(async (e) => {
        const { sessions } = await avb.sessions.listSessions({ pageSize: 3 });
        const st = sessions.map((s) => `${s.id} ${s.status} ${s.error} ${s.endTime?.seconds}`).join("; ");
        throw new Error(`${e}\nnotices: ${await page.locator("#notices").innerHTML()}\nsessions: ${st}\n${logs.join("\n")}`);
      });
    // The session is listed under the project; its page shows the turns
    // and each reply's latency waterfall.
    await page.locator("#sessions tr").first().waitFor();
    // Filters: no session of this project ended in error; any status lists it.
    await page.selectOption("#filter-status", "ERROR");
    await page.click("#sessions-filter button");
    await page.waitForFunction(() => document.querySelectorAll("#sessions tr").length === 0, null, { timeout: 5_000 });
    await page.selectOption("#filter-status", "");
    await page.click("#sessions-filter button");
    await page.locator("#sessions tr").first().waitFor();
    await page.locator("#sessions tr button").first().click();
    await page.locator("#session-turns li.you", { hasText: env("AVB_ASK") }).first().waitFor({ timeout: 10_000 });
    const reply = page.locator("#session-turns li.agent", { hasText: "booked the meeting" }).first();
    await reply.waitFor();
    assert.equal(await reply.locator(".waterfall .stage").count(), 5);
    assert.match((await reply.locator(".waterfall").getAttribute("aria-label")) ?? "", /end of speech detected [\d.]+ ms.*first byte sent [\d.]+ ms/);
    assert.match((await page.locator("#session-summary").textContent()) ?? "", /completed: 1 turns? in [\d.]+ s/);
    await check(page, "session");
    // The month's usage per day has the call in it.
    const deadline = Date.now() + 20_000;
    for (;;) {
      await tab(page, "usage");
      await page.locator("#usage-chart canvas").waitFor();
      if (Number(await page.locator("#usage-chart").getAttribute("data-points")) > 0) break;
      if (Date.now() > deadline) throw new Error("the usage chart has no data after the call");
      await tab(page, "calls");
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.match((await page.locator("#usage-chart").getAttribute("aria-label")) ?? "", /Sessions per day this month: .*\b1\b/);
    assert.match((await page.locator("#cost-summary").textContent()) ?? "", /so far this month/);
    await check(page, "usage");
    assert.equal(await page.locator("#error").textContent(), "");
  } finally {
    await browser.close();
  }
});

// signInAs signs in through the development issuer's form.
async function signInAs(page: Page, username: string, role: string, tenantId = env("AVB_TENANT_ID")) {
  await page.goto(env("AVB_BASE_URL") + "/console/");
  await page.click("#sso-sign-in");
  await page.waitForSelector("#username", { timeout: 10_000 });
  await page.fill("#username", username);
  await page.fill("#tenant_id", tenantId);
  await page.selectOption("#roles", role);
  await page.click("#sign-in");
  await page.waitForSelector("#app:not([hidden])", { timeout: 10_000 });
}

test("sign in with the company account: the authorization code flow with PKCE, tokens in memory only", async () => {
  const baseUrl = env("AVB_BASE_URL");
  const { browser, page, logs } = await launch();
  try {
    await page.goto(baseUrl + "/console/");
    await page.click("#sso-sign-in");
    // The identity provider's sign-in page (the development issuer's form).
    await page.waitForSelector("#username", { timeout: 10_000 });
    await shot(page, "sign-in-form");
    await page.fill("#username", "grace@example.com");
    await page.fill("#tenant_id", env("AVB_TENANT_ID"));
    await page.selectOption("#roles", "admin");
    await page.click("#sign-in");
    // Back in the console, signed in as that user, the code gone from the URL.
    await page.waitForSelector("#app:not([hidden])", { timeout: 10_000 }).catch((e) => {
      throw new Error(`${e}\n${logs.join("\n")}`);
    });
    assert.equal(await page.locator("#who").textContent(), env("AVB_TENANT"));
    assert.ok(!page.url().includes("code="), page.url());
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    assert.ok(!/eyJ/.test(stored), `a token was stored: ${stored}`);
    await page.locator("#projects li").first().waitFor({ timeout: 10_000 });
    assert.ok(await page.locator("#tenant-box").isHidden(), "a tenant's user has no tenant picker");
    // An API key: created with its scopes, its secret shown once and copied,
    // then revoked, after which the server refuses it.
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: baseUrl });
    await tab(page, "keys");
    await page.fill("#key-name", "console key");
    await page.click("#key-create");
    await page.waitForSelector("#key-secret-box:not([hidden])");
    await check(page, "api-key-created");
    const secret = (await page.locator("#key-secret").textContent()) ?? "";
    assert.match(secret, /^avb_/);
    await page.click("#key-copy");
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    const withKey = createAvbClient({ baseUrl, apiKey: secret });
    await withKey.sessions.listSessions({});
    const row = page.locator("#keys tr", { hasText: "console key" });
    await row.getByRole("button", { name: /Revoke/ }).click();
    await row.locator("td", { hasText: "revoked" }).waitFor();
    await assert.rejects(withKey.sessions.listSessions({}), (e: AvbError) => e.reason === "api_key_revoked");
    // The team: a role granted to a member shows, and is revoked.
    await tab(page, "team");
    const me = page.locator("#members tr", { hasText: "grace@example.com" });
    await me.waitFor();
    await page.selectOption("#grant-user", { label: "grace@example.com" });
    await page.selectOption("#grant-role", { label: "billing" });
    await page.click("#grant");
    await me.locator(".chip", { hasText: "billing" }).waitFor({ timeout: 5_000 });
    await check(page, "team");
    await me.getByRole("button", { name: "Revoke billing from grace@example.com" }).click();
    await me.locator(".chip", { hasText: "billing" }).waitFor({ state: "detached", timeout: 5_000 });
    // The audit log has all of it; filtered, and downloaded as CSV.
    await tab(page, "audit");
    await page.locator("#audit-entries tr", { hasText: "permission change" }).first().waitFor({ timeout: 5_000 });
    await page.selectOption("#audit-action", "permission_change");
    await page.click("#audit-filter button[type=submit]");
    await page.waitForFunction(
      () => [...document.querySelectorAll("#audit-entries tr")].every((tr) => tr.textContent?.includes("permission change")),
      null,
      { timeout: 5_000 },
    );
    assert.ok((await page.locator("#audit-entries tr").count()) >= 2, "the grant and the revoke");
    await check(page, "audit");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#audit-download")]);
    const csv = readFileSync((await download.path())!, "utf8").trim().split("\n");
    assert.match(csv[0], /action/);
    assert.ok(csv.length >= 3 && csv.slice(1).every((l) => l.includes("permission_change")), csv.join("\n"));
    await page.locator("#audit-status", { hasText: /Downloaded \d+ entries/ }).waitFor();
    // Signing out ends the session at the identity provider too.
    await page.click("#sign-out");
    await page.waitForSelector("#signin:not([hidden])");
    assert.equal(await page.locator("#error").textContent(), "");
  } finally {
    await browser.close();
  }
});

test("a viewer is offered no admin actions, and the server refuses them anyway", async () => {
  const { browser, page } = await launch();
  try {
    await signInAs(page, "victor@example.com", "viewer");
    for (const name of ["usage", "keys", "team", "audit"]) {
      assert.ok(await page.locator(`#tabs button[data-page="${name}"]`).isHidden(), `${name} is offered to a viewer`);
    }
    assert.ok(await page.locator("#call-start").isHidden());
    await tab(page, "agents");
    assert.ok(await page.locator("#persona-new").isHidden());
    assert.ok(await page.locator("#persona-save").isHidden());
    await check(page, "viewer");
    // The UI is not the check: the viewer's own token is refused.
    const viewer = createAvbClient({ baseUrl: env("AVB_BASE_URL"), token: env("AVB_VIEWER_TOKEN") });
    await viewer.sessions.listSessions({});
    await assert.rejects(viewer.apiKeys.createApiKey({ name: "nope", scopes: [] }), (e: AvbError) => e.reason === "permission_denied");
    await assert.rejects(viewer.personas.createPersona({ persona: { name: "nope" } }), (e: AvbError) => e.reason === "permission_denied");
    await assert.rejects(viewer.roles.grantRole({ userId: env("AVB_VIEWER_ID"), role: 1 }), (e: AvbError) => e.reason === "permission_denied");
  } finally {
    await browser.close();
  }
});

test("on a phone-width screen, a platform operator picks the tenant and every page fits", async () => {
  const { browser, page, logs } = await launch([], { width: 390, height: 844 });
  try {
    await signInAs(page, "olga@example.com", "sysadmin", "");
    await page.waitForSelector("#tenant-box:not([hidden])").catch((e) => {
      throw new Error(`${e}\n${logs.join("\n")}`);
    });
    await page.selectOption("#tenant", env("AVB_TENANT_ID"));
    await page.locator("#projects li").first().waitFor({ timeout: 10_000 });
    for (const name of ["calls", "agents", "usage", "keys", "team", "audit"]) {
      await tab(page, name);
      await page.waitForSelector("#app:not([aria-busy])");
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      const wide = await page.evaluate(() =>
        [...document.querySelectorAll<HTMLElement>("body *")]
          .filter((el) => el.offsetParent && el.getBoundingClientRect().right > window.innerWidth + 1 && !el.parentElement?.closest(".scroll, nav"))
          .map((el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}`)
          .slice(-5),
      );
      assert.ok(overflow <= 1, `${name} is ${overflow}px wider than the screen: ${wide.join(", ")}`);
      await check(page, "phone-" + name);
    }
    assert.equal(await page.locator("#error").textContent(), "");
  } finally {
    await browser.close();
  }
});
