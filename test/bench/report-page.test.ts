// The benchmark report page in a real browser: Debian's Chromium (headless, driven by
// playwright-core) opens the page generated from fixture results and the test reads back what
// a person sees: one chart row per result with its ratio, bars on the right side of 1x and
// of the right length on the log scale, colours by whether the row beats its baseline, the
// legend, the run's metadata, and the spread columns.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
// @ts-expect-error: plain JavaScript module without declarations
import { writeReport } from "../../bench/lib/report-page.mjs";

const CHROMIUM = "/usr/bin/chromium";
const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "results");
const demo = JSON.parse(readFileSync(join(fixtures, "demo.json"), "utf8"));
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === "true") throw new Error(`CI=true but ${CHROMIUM} is missing (.ci/run installs Debian's chromium)`);

let dir: string;
let context: BrowserContext;
let page: Page;

beforeAll(async () => {
  if (!haveChromium) return;
  dir = mkdtempSync(join(tmpdir(), "wasmdev-report-"));
  const html = join(dir, "report.html");
  expect(writeReport(fixtures, html)).toBe(2);
  // A fresh profile per run; nothing in the page or the browser reaches the network.
  context = await chromium.launchPersistentContext(join(dir, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  page = await context.newPage();
  await page.goto(pathToFileURL(html).href);
}, 60_000);

afterAll(async () => {
  await context?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What the browser laid out for one chart row. */
async function chartRow(name: string) {
  const g = page.locator(`section[data-bench="demo"] svg.chart g.row[data-name="${name}"]`);
  const bar = await g.locator("rect.bar").boundingBox();
  return {
    ratioText: await g.locator("text.ratio").textContent(),
    label: await g.locator("text.label").textContent(),
    verdict: await g.getAttribute("data-verdict"),
    bar: bar!,
    fill: await g.locator("rect.bar").evaluate((el) => getComputedStyle(el).fill),
  };
}

describe.skipIf(!haveChromium)("benchmark report page in headless Chromium", () => {
  it("has one section per results file, the legacy one included", async () => {
    expect(await page.locator("section.bench").evaluateAll((els) => els.map((e) => e.getAttribute("data-bench")))).toEqual(["demo", "old"]);
    expect(await page.locator('section[data-bench="old"] .legend').textContent()).toContain("No legend was recorded");
    expect(await page.locator('section[data-bench="old"] g.row').getAttribute("data-name")).toBe("copy/recorded-before-legends");
  });

  it("charts every row with its ratio, on the correct side of 1x and to a log scale", async () => {
    const names = await page.locator('section[data-bench="demo"] g.row').evaluateAll((els) => els.map((e) => e.getAttribute("data-name")));
    expect(names).toEqual(demo.rows.map((r: { name: string }) => r.name));

    const axis = (await page.locator('section[data-bench="demo"] line.axis').boundingBox())!;
    const axisX = axis.x + axis.width / 2;
    const slower = await chartRow("latency/slower"); // ratio 2, lower is better
    const faster = await chartRow("latency/faster"); // ratio 0.5, lower is better
    const rate = await chartRow("rate/faster"); // ratio 1.25, higher is better

    expect([slower.ratioText, faster.ratioText, rate.ratioText]).toEqual(["2.00×", "0.50×", "1.25×"]);
    expect(slower.label).toBe("latency/slower");
    // ratio > 1 grows right from the 1x axis, ratio < 1 left; 2x and 1/2x are equally long.
    expect(slower.bar.x).toBeCloseTo(axisX, 0);
    expect(faster.bar.x + faster.bar.width).toBeCloseTo(axisX, 0);
    expect(slower.bar.width).toBeGreaterThan(20);
    expect(Math.abs(slower.bar.width - faster.bar.width)).toBeLessThan(1.5);
    expect(rate.bar.width / slower.bar.width).toBeCloseTo(Math.log2(1.25), 1);
  });

  it("colours rows by whether they beat the baseline in their direction", async () => {
    const [slower, faster, rate] = await Promise.all(["latency/slower", "latency/faster", "rate/faster"].map(chartRow));
    expect([slower.verdict, faster.verdict, rate.verdict]).toEqual(["worse", "better", "better"]);
    expect(slower.fill).toBe("rgb(230, 81, 0)");
    expect(faster.fill).toBe("rgb(46, 125, 50)");
    expect(rate.fill).toBe("rgb(46, 125, 50)");
  });

  it("shows the legend, the metadata and the spread", async () => {
    const section = page.locator('section[data-bench="demo"]');
    expect(await section.locator(".title").textContent()).toBe(demo.legend.title);
    expect(await section.locator(".legend").textContent()).toBe(`Baseline: ${demo.legend.baseline}`);
    const meta = (await section.locator(".meta").textContent())!;
    for (const part of ["Node v20.20.2", "Example CPU @ 2.00GHz", "2 CPUs, pinned to CPU 0", "0123456789ab", "with local changes", "2026-12-01T10:00:00.000Z"]) {
      expect(meta).toContain(part);
    }
    const cells = await section.locator('tr[data-name="latency/slower"] td').allTextContents();
    expect(cells).toEqual(["latency/slower", "20.00", "10.00", "us", "2.000", "lower", "19.00 / 20.00 / 31.00 (5)", "9.50 / 10.00 / 12.00 (5)"]);
    expect(await section.locator('tr[data-name="latency/faster"] td').last().textContent()).toBe("—");
  });
});
