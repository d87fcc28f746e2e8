// Drives the web UI of node B in headless Chromium: paste the token, paste
// a ticket for a video that lives on node A, wait for 100%, play it.
// Usage: node ui.mjs <ui url> <token> <ticket> <screenshot path>
import { chromium } from "playwright-core";

const [url, token, ticket, shot] = process.argv.slice(2);
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
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`ui: screenshot ${shot}`);

  // 4. Reload: the token is remembered.
  await page.reload();
  await page.waitForSelector("#app:not([hidden])", { timeout: 10000 });
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("ui: 1 passed, 0 failed");
