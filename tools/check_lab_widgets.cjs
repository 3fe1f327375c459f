#!/usr/bin/env node
// Headless check of the workbook in JupyterLab: the server lands on the notebooks, and the ipywidgets
// dashboard of notebook 02 renders and reacts to its slider. Not part of the test suite (it needs a browser).
//
//   npm install --prefix /tmp/labcheck playwright-core       # once; any directory outside the repo
//   apt-get install -y chromium                              # Debian's browser, used through playwright-core
//   NODE_PATH=/tmp/labcheck/node_modules node tools/check_lab_widgets.cjs
//
// The server starts the way `make lab` starts it (`jupyter lab --ServerApp.root_dir=.
// --LabApp.default_url=/lab/tree/notebooks --allow-root`: the repository is the root, so the notebooks'
// links to ../nanoinfer/... and ../exercises/... resolve), plus flags for a headless run: a fixed port
// and token, no browser, and `expose_app_in_browser` so that the script can drive JupyterLab's command
// registry. Writes figures/02_dashboard_jupyterlab.png and prints a JSON report; exits 1 when a check fails.

const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "..");
const PORT = Number(process.env.LAB_PORT || 8895);
const TOKEN = process.env.LAB_TOKEN || `check-${process.pid}`;
const BASE = `http://127.0.0.1:${PORT}`;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOT = path.join(ROOT, "figures", "02_dashboard_jupyterlab.png");
const NB_PATH = "notebooks/02_scheduling.ipynb";
const DASHBOARD_MARKER = "dashboard = widgets.interactive";

function startLab() {
  const jupyter = path.join(ROOT, ".venv", "bin", "jupyter");
  const common = ["--allow-root", "--no-browser", `--port=${PORT}`, `--IdentityProvider.token=${TOKEN}`,
                  "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"];
  const args = ["lab", "--ServerApp.root_dir=.", "--LabApp.default_url=/lab/tree/notebooks", ...common]; // as `make lab`
  // Private settings and workspaces: autosave off, so the run never rewrites the notebook on disk.
  const scratch = fs.mkdtempSync(path.join(require("os").tmpdir(), "labcheck-"));
  const settings = path.join(scratch, "settings", "@jupyterlab", "docmanager-extension");
  fs.mkdirSync(settings, { recursive: true });
  fs.writeFileSync(path.join(settings, "plugin.jupyterlab-settings"), JSON.stringify({ autosave: false }));
  const apputils = path.join(scratch, "settings", "@jupyterlab", "apputils-extension");
  fs.mkdirSync(apputils, { recursive: true });  // no "news" pop-up over the screenshot
  fs.writeFileSync(path.join(apputils, "notification.jupyterlab-settings"), JSON.stringify({ fetchNews: "false" }));
  const env = { ...process.env, JUPYTERLAB_SETTINGS_DIR: path.join(scratch, "settings"),
                JUPYTERLAB_WORKSPACES_DIR: path.join(scratch, "workspaces") };
  const proc = spawn(jupyter, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  return { proc, args, log: () => log };
}

async function waitForServer(timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const r = await fetch(`${BASE}/api/status?token=${TOKEN}`);
      if (r.ok) return;
    } catch (_) {}
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("JupyterLab did not start in time");
}

async function main() {
  const report = { mode: "make lab", checks: {} };
  const lab = startLab();
  report.command = `jupyter ${lab.args.join(" ")}`;
  let browser;
  try {
    await waitForServer();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });

    // 1. Landing: the file browser shows the notebooks.
    await page.goto(`${BASE}/?token=${TOKEN}`);  // follows the server's default URL, as a browser opened by Lab would
    await page.waitForSelector(".jp-DirListing-item", { timeout: 60000 });
    await page.waitForTimeout(1000);
    const listed = await page.$$eval(".jp-DirListing-item .jp-DirListing-itemText", (els) => els.map((e) => e.textContent.trim()));
    report.checks.landing_lists_notebooks = ["01_architecture.ipynb", "02_scheduling.ipynb"].every((n) => listed.includes(n));
    report.file_browser = listed;

    // 2. Open notebook 02 and run every cell up to the dashboard.
    await page.goto(`${BASE}/lab/tree/${NB_PATH}?token=${TOKEN}`);
    await page.waitForFunction(() => window.jupyterapp && window.jupyterapp.shell.currentWidget
                               && window.jupyterapp.shell.currentWidget.content
                               && window.jupyterapp.shell.currentWidget.content.widgets, null, { timeout: 90000 });
    // A link from the notebook to an engine module opens in JupyterLab (links point to ../nanoinfer/...,
    // inside the server's root, the repository).
    const link = page.locator(".jp-RenderedMarkdown a", { hasText: "scheduler.py" }).first();
    await link.waitFor({ state: "attached", timeout: 90000 });
    report.module_link_href = await link.getAttribute("href");
    await link.click();
    report.checks.module_link_opens = await page.waitForFunction(
      () => [...document.querySelectorAll(".lm-TabBar-tabLabel")].some((t) => t.textContent.trim() === "scheduler.py"),
      null, { timeout: 10000 }).then(() => true, () => false);
    await page.keyboard.press("Escape");  // close the error dialog, if any
    await page.evaluate(async (nbPath) => {  // back to the notebook
      await window.jupyterapp.commands.execute("docmanager:open", { path: nbPath });
    }, NB_PATH);

    const t0 = Date.now();
    const ran = await page.evaluate(async (marker) => {
      const app = window.jupyterapp;
      const panel = app.shell.currentWidget;
      await panel.context.ready;
      await panel.sessionContext.ready;
      const nb = panel.content;
      const idx = nb.widgets.findIndex((c) => c.model.sharedModel.getSource().includes(marker));
      nb.activeCellIndex = idx;
      await app.commands.execute("notebook:run-all-above");
      nb.activeCellIndex = idx;
      await app.commands.execute("notebook:run-cell");
      return { index: idx, cells: nb.widgets.length, kernel: panel.sessionContext.kernelDisplayName };
    }, DASHBOARD_MARKER);
    report.dashboard_cell = ran;
    if (ran.index < 0) throw new Error("the dashboard cell was not found");

    // Wait until the kernel is idle again and the widget shows a slider and a figure.
    await page.waitForFunction(() => {
      const panel = window.jupyterapp.shell.currentWidget;
      return panel.sessionContext.session.kernel.status === "idle"
        && document.querySelector(".widget-interact .widget-slider")
        && document.querySelector(".widget-interact img");
    }, null, { timeout: 540000, polling: 1000 });
    report.seconds_to_run_cells = Math.round((Date.now() - t0) / 1000);
    report.checks.widget_renders = true;

    const widget = page.locator(".widget-interact").first();
    await widget.scrollIntoViewIfNeeded();
    const before = await widget.locator("img").first().getAttribute("src");
    const readout = async () => (await widget.locator(".widget-readout").first().textContent()).trim();
    report.slider_before = await readout();

    // 3. Move the slider with the keyboard, as a user would, and wait for a new figure.
    const handle = widget.locator(".noUi-handle, .ui-slider-handle").first();
    await handle.focus();
    for (let i = 0; i < 12; i++) await page.keyboard.press("ArrowRight");
    await page.waitForFunction((old) => {
      const img = document.querySelector(".widget-interact img");
      return img && img.getAttribute("src") !== old;
    }, before, { timeout: 60000 });
    await page.waitForFunction(() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === "idle",
                               null, { timeout: 60000 });
    await page.waitForTimeout(1500);
    report.slider_after = await readout();
    report.checks.slider_redraws_figure = report.slider_after !== report.slider_before;

    fs.mkdirSync(path.dirname(SHOT), { recursive: true });
    await widget.screenshot({ path: SHOT });
    report.screenshot = path.relative(ROOT, SHOT);
  } catch (err) {
    report.error = String(err && err.stack || err).split("\n").slice(0, 4).join("\n");
    report.server_log_tail = lab.log().split("\n").slice(-15).join("\n");
  } finally {
    if (browser) await browser.close();
    lab.proc.kill("SIGTERM");
  }
  const ok = !report.error && Object.values(report.checks).length === 4 && Object.values(report.checks).every(Boolean);
  report.ok = ok;
  console.log(JSON.stringify(report, null, 2));
  process.exit(ok ? 0 : 1);
}

main();
