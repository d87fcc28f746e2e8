// Drives the web UI of node B in headless Chromium: paste the token, paste
// a ticket for a video that lives on node A, wait for 100%, play it; then
// search for a file shared on A, Get it from the results, pause it (its
// progress must hold), resume it and wait for 100%.
// Usage: node ui.mjs <ui url> <token> <ticket> <screenshot path> <search words>
import { chromium } from "playwright-core";

const [url, token, ticket, shot, words] = process.argv.slice(2);
const fail = (msg) => { console.error(`ui: FAIL: ${msg}`); process.exitCode = 1; };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);

  // 1. The token, pasted once.
  await page.waitForSelector("#login:not([hidden])", { timeout: 10000 });
  await page.fill("#token", "wrong-token");
  await page.click("#token-form button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("refused"));
  errors.length = 0; // the refused token's 401 was the point
  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.waitForSelector("#app:not([hidden])", { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("peer-id").textContent.length > 20);
  const stored = await page.evaluate(() => localStorage.getItem("spore-token"));
  if (stored !== token) fail("the token was not kept in localStorage");

  // 2. Paste a ticket; progress reaches 100%.
  await page.fill("#ticket", ticket);
  await page.click("#download-form button");
  await page.waitForFunction(() => {
    const row = document.querySelector("#downloads tbody tr");
    return row && row.dataset.state === "done" && row.querySelector(".pct").textContent === "100%";
  }, null, { timeout: 60000 });
  console.log("ui: download reached 100%");
  await page.waitForFunction(
    () => Number(document.getElementById("peer-count").textContent) >= 1
      && document.querySelectorAll("#peers tbody tr").length >= 1,
    null, { timeout: 10000 },
  ).catch(() => fail("the peer count or the peers list stayed empty"));

  // 3. Play it from the gateway.
  await page.click("#downloads tbody tr button.play");
  await page.waitForFunction(() => {
    const v = document.getElementById("player");
    return v.currentTime > 0.5 && !v.error;
  }, null, { timeout: 30000 });
  const media = await page.evaluate(() => {
    const v = document.getElementById("player");
    return { src: v.currentSrc, time: v.currentTime, width: v.videoWidth, height: v.videoHeight };
  });
  console.log(`ui: playing ${media.src} at ${media.time.toFixed(2)} s, ${media.width}x${media.height}`);
  if (media.width !== 320 || media.height !== 240) fail(`video size ${media.width}x${media.height}`);

  // 4. Search from B: A (a neighbour since the download) answers; Get the hit.
  await page.fill("#search-q", words);
  await page.click("#search-form button");
  const hitRow = "#results tbody tr:has(td:text-is('harbour-lecture-notes.bin'))";
  await page.waitForSelector(hitRow, { timeout: 15000 });
  const hit = await page.$eval(hitRow, (tr) => ({
    id: tr.dataset.id, cells: [...tr.cells].map((c) => c.textContent),
  }));
  console.log(`ui: search hit ${hit.cells.slice(0, 4).join(" | ")}`);
  if (hit.cells[1] !== "6.0 MiB") fail(`search hit size ${hit.cells[1]}`);
  if (!(Number(hit.cells[2]) >= 1)) fail(`search hit sources ${hit.cells[2]}`);
  await page.click(`${hitRow} button.get`);
  const row = `#downloads tbody tr[data-id='${hit.id}']`;
  await page.waitForSelector(`${row}[data-state='downloading']`, { timeout: 15000 });
  console.log("ui: the search result is downloading");

  // 5. Pause (it is capped at 1 MiB/s on A, so it is still running), check
  // that it holds, resume, wait for 100%.
  await page.click(`${row} button.pause`);
  await page.waitForSelector(`${row}[data-state='paused']`, { timeout: 10000 });
  const pausedAt = await page.$eval(`${row} .pct`, (e) => e.textContent);
  if (pausedAt === "100%") fail("the download finished before it could be paused");
  await page.waitForTimeout(1500);
  const heldAt = await page.$eval(`${row} .pct`, (e) => e.textContent);
  const stillPaused = await page.$eval(row, (tr) => tr.dataset.state);
  console.log(`ui: paused at ${pausedAt}, ${heldAt} 1.5 s later (${stillPaused})`);
  if (heldAt !== pausedAt || stillPaused !== "paused") fail("the paused download moved");
  if (await page.$(`${row} button.pause`)) fail("a paused download offers Pause");
  await page.click(`${row} button.resume`);
  await page.waitForFunction((sel) => {
    const tr = document.querySelector(sel);
    return tr && tr.dataset.state === "done" && tr.querySelector(".pct").textContent === "100%";
  }, row, { timeout: 30000 });
  console.log("ui: resumed and reached 100%");

  // 6. A media result has a Play link to the gateway: search the video by
  // type and play it from the results.
  await page.fill("#search-q", "clip");
  await page.selectOption("#search-type", "video");
  await page.click("#search-form button");
  const clipRow = "#results tbody tr:has(td:text-is('clip.webm'))";
  await page.waitForSelector(`${clipRow} a.play`, { timeout: 15000 });
  await page.waitForFunction(() => /result/.test(document.getElementById("search-status").textContent)
    && !document.getElementById("search-status").textContent.includes("…"), null, { timeout: 15000 });
  const kinds = await page.$$eval("#results tbody tr", (rows) => rows.map((r) => r.cells[3].textContent));
  if (!kinds.length || kinds.some((k) => !k.includes("video"))) fail(`type=video results: ${kinds.join(", ")}`);
  await page.click(`${clipRow} a.play`);
  await page.waitForFunction(() => {
    const v = document.getElementById("player");
    return v.currentSrc.includes("filename=clip.webm") && v.currentTime > 0.2 && !v.error;
  }, null, { timeout: 15000 });
  console.log("ui: played the video from a search result");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`ui: screenshot ${shot}`);

  // 7. Reload: the token is remembered.
  await page.reload();
  await page.waitForSelector("#app:not([hidden])", { timeout: 10000 });
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("ui: 1 passed, 0 failed");
