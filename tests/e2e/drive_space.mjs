// Drive the earthvl Space in a real headless Chromium, as a person would, for tests/test_space_browser.py.
//
//   node drive_space.mjs --url http://127.0.0.1:7860/ --image scene.png --out shots/ [--bad-image notes.png]
//       [--query "a river"] [--preset "Land cover"] [--chromium /usr/bin/chromium] [--timeout 60000]
//
// Caption: Describe with no image, then with --bad-image (the errors the page shows), then upload --image,
// Describe, wait for the caption.
// Classify: upload, pick the preset, Classify, wait for the top class. Retrieve: type the query, Search, wait for
// the thumbnails. A screenshot after each step under --out; one JSON object on stdout with what the page showed.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    image: { type: "string" },
    "bad-image": { type: "string" },
    out: { type: "string" },
    query: { type: "string", default: "a river through fields" },
    preset: { type: "string", default: "Land cover" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
    timeout: { type: "string", default: "60000" },
  },
});
for (const name of ["url", "image", "out"]) {
  if (!opts[name]) throw new Error(`--${name} is required`);
}
const timeout = Number(opts.timeout);
mkdirSync(opts.out, { recursive: true });

// Without the background-networking switches Chromium's own connections (updates, sync, QUIC probes) are what a
// closed network refuses; a fresh profile keeps runs independent.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const profile = mkdtempSync(join(tmpdir(), "earthvl-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: opts.chromium,
  headless: true,
  args: ARGS,
  viewport: { width: 1280, height: 1000 },
});
const origin = new URL(opts.url).origin;
// Only the app itself is reachable: web fonts and other third-party requests fail fast instead of hanging the page.
await context.route("**/*", (route) =>
  route.request().url().startsWith(origin) || route.request().url().startsWith("data:") ? route.continue() : route.abort()
);
const pageErrors = [];
const result = { screenshots: [], page_errors: pageErrors };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  await page.goto(opts.url, { waitUntil: "domcontentloaded" });
  await page.locator("#caption-image").waitFor();

  const shot = async (name) => {
    const path = join(opts.out, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    result.screenshots.push(path);
  };
  const textOf = async (selector) => {
    const box = page.locator(`${selector} textarea, ${selector} input`).first();
    return (await box.count()) ? await box.inputValue() : (await page.locator(selector).innerText()).trim();
  };
  const tab = (name) => page.getByRole("tab", { name, exact: true }).click();
  // Wait for `ready` (a promise), failing fast with the tab's status line when the app reports an error instead.
  const settle = async (ready, status) => {
    const failed = page.locator(status).filter({ hasText: /^\s*Error/ });
    const error = failed.waitFor().then(() => true, () => false);
    const done = ready.then(() => false);
    done.catch(() => {}); // the race reports it; never an unhandled rejection after the page closes
    if (await Promise.race([done, error])) throw new Error(`${status} says: ${(await failed.innerText()).trim()}`);
  };

  // Bad input: Describe with no image. The message is a Gradio toast or the tab's status line.
  await page.locator("#caption-button").click();
  const message = page.locator('[data-testid="toast-text"], #caption-status').filter({ hasText: /\S/ }).first();
  await message.waitFor();
  result.error_message = (await message.innerText()).trim();
  await shot("caption-error");
  result.traceback_shown = (await page.locator("body").innerText()).includes("Traceback");
  const close = page.locator(".toast-body .toast-close");
  if (await close.count()) await close.first().click();
  if (opts["bad-image"]) {
    await page.locator("#caption-image input[type=file]").setInputFiles(opts["bad-image"]);
    const before = result.error_message;
    await page.locator("#caption-button").click();
    const changed = page.locator('[data-testid="toast-text"], #caption-status').filter({ hasText: /\S/ })
      .filter({ hasNotText: before }).first();
    await changed.waitFor();
    result.bad_image_message = (await changed.innerText()).trim();
    await shot("caption-bad-image");
    result.traceback_shown ||= (await page.locator("body").innerText()).includes("Traceback");
    if (await close.count()) await close.first().click();
  }

  await page.locator("#caption-image input[type=file]").setInputFiles(opts.image);
  await page.locator("#caption-image img").first().waitFor();
  await page.locator("#caption-button").click();
  const answered = page.waitForFunction(
    () => (document.querySelector("#caption-output textarea")?.value ?? "").trim().length > 0,
    null,
    { timeout }
  );
  await settle(answered, "#caption-status");
  result.caption = (await textOf("#caption-output")).trim();
  result.caption_prompt = await textOf("#caption-prompt");
  await shot("caption");

  await tab("Classify");
  await page.locator("#classify-image input[type=file]").setInputFiles(opts.image);
  await page.locator("#classify-image img").first().waitFor();
  await page.locator("#classify-labels textarea, #classify-labels input").first().fill("");
  const preset = page.locator("#classify-preset input").first();
  await preset.click();
  await page.getByRole("option", { name: opts.preset, exact: true }).click();
  await page.getByRole("listbox").waitFor({ state: "hidden" });
  result.preset = await preset.inputValue();
  await page.locator("#classify-button").click();
  const top = page.locator('#classify-output [data-testid="label-output-value"]').filter({ hasText: /\S/ });
  await settle(top.first().waitFor(), "#classify-status");
  result.top_class = (await top.first().innerText()).trim();
  await shot("classify");

  await tab("Retrieve");
  await page.locator("#retrieve-query textarea, #retrieve-query input").first().fill(opts.query);
  await page.locator("#retrieve-button").click();
  const thumbnails = page.locator("#retrieve-gallery .thumbnail-item img");
  await settle(thumbnails.first().waitFor(), "#retrieve-status");
  for (const img of await thumbnails.all()) {
    await img.scrollIntoViewIfNeeded(); // thumbnails load lazily
    await img.evaluate((el) => el.decode());
  }
  result.gallery_items = await thumbnails.count();
  result.gallery_files = await thumbnails.evaluateAll((imgs) =>
    imgs.map((img) => decodeURIComponent(new URL(img.src).pathname).split("/").pop())
  );
  await thumbnails.first().scrollIntoViewIfNeeded(); // back to the top of the gallery for the screenshot
  result.query = opts.query;
  await shot("retrieve");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
