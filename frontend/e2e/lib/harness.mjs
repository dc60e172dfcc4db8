// End-to-end harness: drives Debian's Chromium through playwright-core (no browser
// download) against a running Cairn, whose address and accounts come from the
// environment:
//
//   CAIRN_E2E_URL              base URL of a running Cairn serving the built dashboard
//   CAIRN_E2E_ADMIN_EMAIL      an admin (or operator) account…
//   CAIRN_E2E_ADMIN_PASSWORD   …and its password
//   CAIRN_E2E_VIEWER_EMAIL     a viewer account (optional: created through the admin
//   CAIRN_E2E_VIEWER_PASSWORD    API, POST /api/users, when not given)
//   CHROMIUM_PATH              default /usr/bin/chromium
//   CAIRN_E2E_RUN_TIMEOUT_MS   how long a run may take to finish (default 90000)
//   CAIRN_E2E_REQUIRE_PROJECTS 1: the projects scenarios must run (fail when the server
//                              has no projects API); otherwise they run only when it has
//   CAIRN_E2E_REQUIRE_TOKENS   1: the tokens scenario must run (fail when the server has
//                              no /api/auth/tokens); otherwise it runs only when it has
//
// Every test saves screenshots to e2e/artifacts/, and the console messages of every
// page to e2e/artifacts/console.log.
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** @typedef {import('playwright-core').Page} Page */
/** @typedef {import('playwright-core').BrowserContext} BrowserContext */
/** @typedef {{ email: string, password: string }} Credentials */

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = join(here, '..', 'artifacts');

export const config = {
  url: (process.env.CAIRN_E2E_URL ?? '').replace(/\/+$/, ''),
  admin: { email: process.env.CAIRN_E2E_ADMIN_EMAIL ?? '', password: process.env.CAIRN_E2E_ADMIN_PASSWORD ?? '' },
  viewer: { email: process.env.CAIRN_E2E_VIEWER_EMAIL ?? '', password: process.env.CAIRN_E2E_VIEWER_PASSWORD ?? '' },
  chromium: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  runTimeoutMs: Number(process.env.CAIRN_E2E_RUN_TIMEOUT_MS ?? 90_000),
  requireProjects: process.env.CAIRN_E2E_REQUIRE_PROJECTS === '1',
  requireTokens: process.env.CAIRN_E2E_REQUIRE_TOKENS === '1',
};

/** Why the suite cannot run here, or null when it can. */
export function skipReason() {
  if (!config.url) return 'set CAIRN_E2E_URL to the base URL of a running Cairn';
  if (!config.admin.email || !config.admin.password) return 'set CAIRN_E2E_ADMIN_EMAIL and CAIRN_E2E_ADMIN_PASSWORD';
  return null;
}

export const LAPTOP = { width: 1366, height: 860 };
export const TABLET = { width: 820, height: 1180 };

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-dev-shm-usage',
];

/**
 * A browser with its own fresh profile (`--user-data-dir`), so sessions never leak
 * between the admin and the viewer. Collects console errors and uncaught page errors.
 */
/**
 * @param {string} label
 */
export async function openBrowser(label) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), `cairn-e2e-${label}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: LAPTOP,
    baseURL: config.url,
  });
  context.setDefaultTimeout(15_000);
  /** @type {string[]} */
  const problems = [];
  /** @param {Page} page */
  const watch = (page) => {
    page.on('console', (msg) => {
      const where = msg.location()?.url ?? '';
      appendFileSync(join(ARTIFACTS, 'console.log'), `[${label}] ${msg.type()}: ${msg.text()} ${where}\n`);
      if (msg.type() !== 'error') return;
      // Chrome logs every failed request as a console error. Asking "who am I?" while
      // signed out is answered 401 by design; anything else is a real problem.
      if (/Failed to load resource/.test(msg.text()) && /\/api\/auth\/me\b/.test(where) && /401/.test(msg.text())) return;
      problems.push(`console error: ${msg.text()} ${where}`);
    });
    page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    /** Console errors and uncaught exceptions seen since the last call. */
    takeProblems() {
      return problems.splice(0, problems.length);
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Saves a full-page screenshot as e2e/artifacts/<name>.png.
 * @param {Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export function resetArtifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(join(ARTIFACTS, 'console.log'), '');
}

/**
 * Signs in through the form and waits for the app shell.
 * @param {Page} page
 * @param {Credentials} credentials
 */
export async function signIn(page, { email, password }) {
  await page.goto('/signin');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}

/**
 * Calls the API with the browser context's session cookie; throws on a non-2xx answer.
 * @param {BrowserContext} context
 * @param {'GET' | 'POST' | 'PATCH' | 'DELETE'} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function api(context, method, path, body) {
  const res = await context.request.fetch(`${config.url}${path}`, {
    method,
    data: body === undefined ? undefined : body,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  if (!res.ok()) throw new Error(`${method} ${path} answered ${res.status()}: ${text.slice(0, 300)}`);
  return json;
}

/**
 * Whether the server has the projects API: `GET /api/projects` answers JSON. (A server
 * without it answers 404, or, when it serves the dashboard, the dashboard's index page
 * for the unknown path.)
 * @param {BrowserContext} context a signed-in context
 * @returns {Promise<{ available: boolean, why: string }>}
 */
export async function probeProjectsApi(context) {
  return probeApi(context, '/api/projects');
}

/**
 * Whether the server has the personal tokens API (`GET /api/auth/tokens` answers JSON).
 * @param {BrowserContext} context a signed-in context
 * @returns {Promise<{ available: boolean, why: string }>}
 */
export async function probeTokensApi(context) {
  return probeApi(context, '/api/auth/tokens');
}

/**
 * Whether `GET path` answers JSON with a 2xx status.
 * @param {BrowserContext} context a signed-in context
 * @param {string} path
 * @returns {Promise<{ available: boolean, why: string }>}
 */
async function probeApi(context, path) {
  const res = await context.request.fetch(`${config.url}${path}`, { headers: { Accept: 'application/json' } });
  const type = (res.headers()['content-type'] ?? '').split(';')[0].trim();
  const why = `GET ${path} answered ${res.status()} ${type || 'without a content type'}`;
  return { available: res.ok() && type.includes('json'), why };
}

/**
 * Polls `check` until it returns a truthy value, or fails after `timeoutMs`.
 * @template T
 * @param {string} what
 * @param {() => Promise<T>} check
 * @returns {Promise<T>}
 */
export async function eventually(what, check, timeoutMs = config.runTimeoutMs, everyMs = 500) {
  const deadline = Date.now() + timeoutMs;
  /** @type {Error | undefined} */
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = /** @type {Error} */ (e);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/**
 * A name that does not collide with earlier runs of the suite.
 * @param {string} prefix
 */
export function unique(prefix) {
  return `${prefix} ${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}-${Math.random().toString(36).slice(2, 6)}`;
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe-core on the page as it is now and returns its serious and critical
 * violations, one readable line each (rule, impact, the first few offending nodes).
 * @param {Page} page
 * @returns {Promise<string[]>}
 */
export async function axeViolations(page) {
  // Evaluated through the DevTools protocol: the dashboard's Content-Security-Policy
  // (rightly) refuses inline scripts.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource);
  /** @type {{ id: string, impact: string | null, help: string, nodes: { target: unknown[], failureSummary?: string }[] }[]} */
  const violations = await page.evaluate(async () => {
    // @ts-expect-error axe is injected above
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((/** @type {any} */ v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((/** @type {any} */ n) => ({ target: n.target, failureSummary: n.failureSummary })),
    }));
  });
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map(
      (v) =>
        `${v.id} (${v.impact}): ${v.help}; ${v.nodes.length} node(s): ${v.nodes
          .slice(0, 3)
          .map((n) => `${JSON.stringify(n.target)} ${(n.failureSummary ?? '').replace(/\s+/g, ' ').slice(0, 200)}`)
          .join(' | ')}`,
    );
}

/**
 * Waits until the page shows its main heading and has no loading indicator left.
 * @param {Page} page
 */
export async function settled(page) {
  try {
    await page.locator('main h1').first().waitFor();
    await page.waitForFunction(() => !document.querySelector('.state[role="status"]'), null, { timeout: 15_000 });
  } catch (e) {
    await screenshot(page, `unsettled-${new URL(page.url()).pathname.replace(/\W+/g, '-')}`).catch(() => {});
    throw e;
  }
}

/**
 * How far the page scrolls sideways (0 when it fits the window).
 * @param {Page} page
 */
export async function sideways(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}
