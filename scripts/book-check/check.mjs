// Opens every chapter of the built book (`mdbook build` → book/) in headless Chromium and
// fails when a page shows a missing include (an `{{#include` left in the text, an empty code
// block) or a broken image. Saves screenshots of the greedy-loop chapter, of the page on using
// the crate (with its Python-to-Rust table), and of every figure, scrolled into view, so a
// person can look at what a reader sees.
//
//   cd scripts/book-check && npm ci && cd ../..
//   mdbook build
//   node scripts/book-check/check.mjs [BOOK_DIR] [SCREENSHOT_DIR]
//
// Defaults: book/ and target/book-screenshots/ at the repository root. The browser is Debian's
// Chromium (`apt-get install chromium`); set CHROMIUM to use another binary.

import { chromium } from "playwright-core";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bookDir = resolve(process.argv[2] ?? join(root, "book"));
const shotDir = resolve(process.argv[3] ?? join(root, "target/book-screenshots"));
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

// The pages a reader can reach: every chapter SUMMARY.md links (draft entries have no file).
function chapters() {
  const summary = readFileSync(join(root, "chapters/SUMMARY.md"), "utf8");
  const pages = [...summary.matchAll(/\]\(([^)]+\.md)\)/g)].map((m) => m[1].replace(/\.md$/, ".html"));
  if (pages.length === 0) throw new Error("chapters/SUMMARY.md links no chapter");
  return pages;
}

function fail(problems, page, what) {
  problems.push(`${page}: ${what}`);
  console.error(`FAIL ${page}: ${what}`);
}

async function checkPage(page, name, problems) {
  const before = problems.length;
  const file = join(bookDir, name);
  if (!existsSync(file)) {
    fail(problems, name, `not in ${bookDir}; did \`mdbook build\` run?`);
    return;
  }
  await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
  const found = await page.evaluate(async () => {
    const main = document.querySelector("main") ?? document.body;
    const text = main.innerText;
    const leftover = ["{{#include", "{{#rustdoc_include", "{{#playground"].filter((s) => text.includes(s));
    const emptyCode = [...main.querySelectorAll("pre code")]
      .map((c, i) => ({ i, text: c.textContent.trim() }))
      .filter((c) => c.text === "")
      .map((c) => c.i);
    const imgs = [...main.querySelectorAll("img")];
    await Promise.all(imgs.map((img) => img.decode().catch(() => {})));
    const images = imgs.map((img) => ({ src: img.getAttribute("src"), width: img.naturalWidth }));
    const figures = new Set(images.map((img) => img.src)).size;
    return { title: main.querySelector("h1")?.innerText ?? "", leftover, emptyCode, images, figures };
  });
  if (!found.title) fail(problems, name, "no heading: the page looks empty");
  for (const s of found.leftover) fail(problems, name, `an unresolved \`${s}\` is left in the text`);
  for (const i of found.emptyCode) fail(problems, name, `code block #${i + 1} is empty (an include that resolved to nothing?)`);
  for (const img of found.images) {
    if (img.width === 0) fail(problems, name, `image ${img.src} is broken (naturalWidth 0)`);
  }
  const stem = name.replace(/\.html$/, "").replace(/[^\w-]/g, "_");
  let shots = 0;
  if (name.includes("greedy") || name === "using.html") {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(shotDir, `${stem}.png`) });
    await page.screenshot({ path: join(shotDir, `${stem}-full.png`), fullPage: true });
    shots += 2;
  }
  // mdBook 0.5 wraps each image in a click-to-zoom label holding a second, hidden copy of it:
  // every copy must load (checked above), and the visible one is the one to photograph.
  const imgs = page.locator("main img:visible");
  for (let i = 0; i < (await imgs.count()); i++) {
    const img = imgs.nth(i);
    await img.scrollIntoViewIfNeeded();
    await img.evaluate((el) => el.scrollIntoView({ block: "center" }));
    const box = await img.boundingBox();
    const view = page.viewportSize();
    const visible = box && box.width > 0 && box.height > 0 && box.y < view.height && box.y + box.height > 0;
    if (!visible) fail(problems, name, `figure ${i + 1} is not visible after scrolling to it`);
    await page.screenshot({ path: join(shotDir, `${stem}-figure${i + 1}.png`) });
    shots++;
  }
  const verdict = problems.length === before ? "ok" : `FAILED (${problems.length - before} problem(s))`;
  console.log(`${verdict} ${name}: "${found.title}", ${found.figures} figure(s), ${shots} screenshot(s)`);
}

async function main() {
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: apt-get install chromium, or set CHROMIUM`);
  }
  mkdirSync(shotDir, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "book-check-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const problems = [];
  try {
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
    const pages = chapters();
    for (const name of pages) await checkPage(page, name, problems);
    const failed = new Set(problems.map((p) => p.split(":")[0])).size;
    console.log(`book check: ${pages.length} pages opened, ${failed} with problems; screenshots in ${shotDir}`);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  if (problems.length > 0) process.exit(1);
}

main().catch((e) => {
  console.error(`book check: ${e.message}`);
  process.exit(1);
});
