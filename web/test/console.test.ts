// The console in headless Chromium against a live server (started by the Go
// test TestConsoleInChromium): sign in with an API key, pick a project, and
// call the agent from a fake microphone that plays a spoken WAV file.
import { test } from "node:test";
import assert from "node:assert/strict";
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

// launch opens Chromium with args and a page whose console output and
// errors are kept for a failure's message.
async function launch(args: string[] = []) {
  const browser = await chromium.launch({ executablePath: env("AVB_CHROMIUM"), args: [...args, "--no-sandbox"] });
  const page = await browser.newPage();
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
    await page.fill("#credential", apiKey);
    await page.click("#sign-in");
    await page.locator("#projects li", { hasText: name }).click();
    await page.click("#call-start");
    await page.waitForSelector('#call[data-state="live"]', { timeout: 15_000 });
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
    await shot(page, "call");
    await page.waitForFunction(() => Number(document.getElementById("call")?.dataset.audioMs) > 500, null, { timeout: 15_000 });
    await page.click("#call-end");
    await page.waitForSelector('#call[data-state="idle"]');
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
    assert.match((await page.locator("#session-summary").textContent()) ?? "", /turns in/);
    await shot(page, "session");
    assert.equal(await page.locator("#error").textContent(), "");
  } finally {
    await browser.close();
  }
});

test("sign in with the company account: the authorization code flow with PKCE, tokens in memory only", async () => {
  const baseUrl = env("AVB_BASE_URL");
  const { browser, page, logs } = await launch();
  try {
    await page.goto(baseUrl + "/console/");
    await shot(page, "sign-in");
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
    // An API key: created with its scopes, its secret shown once and copied,
    // then revoked, after which the server refuses it.
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: baseUrl });
    await page.fill("#key-name", "console key");
    await page.click("#key-create");
    await page.waitForSelector("#key-secret-box:not([hidden])");
    await shot(page, "api-key-created");
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
    // Signing out ends the session at the identity provider too.
    await page.click("#sign-out");
    await page.waitForSelector("#signin:not([hidden])");
    assert.equal(await page.locator("#error").textContent(), "");
  } finally {
    await browser.close();
  }
});
