// The dashboard against a real, running Cairn (see lib/harness.mjs for the environment;
// scripts/e2e.sh starts one and runs this). The scenarios run in order and share what
// they create: a run of `hello`, a project and its analysis run, a dead run.
//
// The projects scenarios need the projects/agents API (`/api/projects`,
// `/api/agents/analyze`). They run when `GET /api/projects` answers JSON; otherwise they
// are skipped with "projects API not available: scenario not run" -- unless
// CAIRN_E2E_REQUIRE_PROJECTS=1, which makes them fail instead. The tokens scenario does
// the same with `GET /api/auth/tokens` and CAIRN_E2E_REQUIRE_TOKENS.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  api,
  config,
  eventually,
  LAPTOP,
  openBrowser,
  probeProjectsApi,
  probeTokensApi,
  resetArtifacts,
  screenshot,
  signIn,
  skipReason,
  TABLET,
  unique,
} from './lib/harness.mjs';

const skip = skipReason();

/** Operator- and admin-only controls, by accessible name; a viewer must see none of them. */
const OPERATOR_CONTROLS = [
  /^Analyze$/,
  /^Summarize$/,
  /^New project$/,
  /^Retry…?$/,
  /^Replay…$/,
  /^Cancel run$/,
  /^Retry filtered…$/,
  /^Cancel filtered…$/,
  /^Redrive/,
  /^Purge/,
  /^New schedule$/,
  /^Pause /,
  /^Trigger /,
  /^Edit…/,
  /^Backfill…/,
  /^Delete/,
  /^New user$/,
  /^New service token$/,
];

describe('Cairn dashboard', { skip: skip ?? false }, () => {
  /** @type {Awaited<ReturnType<typeof openBrowser>>} */
  let admin;
  const state = { helloRunId: '', projectUrl: '', runId: '', deadRunId: '' };
  /** @type {{ available: boolean, why: string } | undefined} */
  let projectsApi;
  /** @type {{ available: boolean, why: string } | undefined} */
  let tokensApi;

  before(async () => {
    resetArtifacts();
    admin = await openBrowser('admin');
  });
  after(async () => {
    await admin?.close();
  });
  // Each scenario answers for the console errors it causes, not for an earlier one's.
  beforeEach(() => {
    admin?.takeProblems();
  });

  const noProblems = () => assert.deepEqual(admin.takeProblems(), [], 'no console errors or uncaught exceptions');

  /**
   * Whether a projects scenario can run: true when the server has the projects API;
   * otherwise skips the test (or fails it when CAIRN_E2E_REQUIRE_PROJECTS=1).
   * @param {import('node:test').TestContext} t
   */
  async function projectsScenario(t) {
    projectsApi ??= await probeProjectsApi(admin.context);
    if (projectsApi.available) return true;
    const notRun = `projects API not available: scenario not run (${projectsApi.why})`;
    if (config.requireProjects) assert.fail(`CAIRN_E2E_REQUIRE_PROJECTS=1, but ${projectsApi.why}`);
    console.log(notRun);
    t.skip(notRun);
    return false;
  }

  /**
   * Whether the tokens scenario can run: true when the server has the personal tokens
   * API; otherwise skips the test (or fails it when CAIRN_E2E_REQUIRE_TOKENS=1).
   * @param {import('node:test').TestContext} t
   */
  async function tokensScenario(t) {
    tokensApi ??= await probeTokensApi(admin.context);
    if (tokensApi.available) return true;
    const notRun = `tokens API not available: scenario not run (${tokensApi.why})`;
    if (config.requireTokens) assert.fail(`CAIRN_E2E_REQUIRE_TOKENS=1, but ${tokensApi.why}`);
    console.log(notRun);
    t.skip(notRun);
    return false;
  }

  it('signs in', async () => {
    const { page } = admin;
    await page.goto('/runs');
    await page.getByRole('heading', { name: 'Sign in to Cairn' }).waitFor();
    assert.match(page.url(), /\/signin\?next=%2Fruns$/);
    await screenshot(page, '01-sign-in');
    await page.getByLabel('Email').fill(config.admin.email);
    await page.getByLabel('Password').fill(config.admin.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Runs', level: 1 }).waitFor();
    assert.match(page.url(), /\/runs$/);
    noProblems();
  });

  it('shows every page (screenshots at laptop and tablet widths)', async () => {
    const { page } = admin;
    const pages = [
      ['overview', '/', 'Overview'],
      ['projects', '/projects', 'Projects'],
      ['runs', '/runs', 'Runs'],
      ['dead-letters', '/dead-letters', 'Dead letters'],
      ['schedules', '/schedules', 'Schedules'],
      ['workflows', '/workflows', 'Workflows'],
      ['workflow-hello', '/workflows/hello', 'hello'],
      ['workers', '/workers', 'Workers'],
    ];
    /** @type {[string, { width: number, height: number }][]} */
    const sizes = [
      ['laptop', LAPTOP],
      ['tablet', TABLET],
    ];
    for (const [width, size] of sizes) {
      await page.setViewportSize(size);
      for (const [name, path, heading] of pages) {
        await page.goto(path);
        await page.getByRole('heading', { name: heading, level: 1 }).waitFor();
        // wait until the page has finished loading (no loading indicator left)
        await page.waitForFunction(() => !document.querySelector('.state[role="status"]'), null, { timeout: 15_000 });
        await screenshot(page, `02-${name}-${width}`);
      }
    }
    await page.setViewportSize(LAPTOP);
    noProblems();
  });

  it('lists runs live and opens one with its steps', async () => {
    const { page, context } = admin;
    await page.goto('/runs?workflow=hello');
    await page.getByRole('heading', { name: 'Runs', level: 1 }).waitFor();
    await page.waitForFunction(() => !document.querySelector('.state[role="status"]'), null, { timeout: 15_000 });
    // Submitted behind the page's back: the list shows it without a reload.
    const submitted = await api(context, 'POST', '/api/tasks', { workflow: 'hello', input: { name: 'e2e' } });
    state.helloRunId = submitted.taskId;
    const link = page.getByRole('link', { name: state.helloRunId });
    const row = page.locator('tr', { has: link });
    await row.waitFor();
    await screenshot(page, '03-runs-new-run');
    await row.locator('.pill[data-status="succeeded"]').waitFor({ timeout: config.runTimeoutMs });
    await screenshot(page, '03-runs-succeeded');

    await link.click();
    await page.waitForURL(new RegExp(`/runs/${state.helloRunId}$`));
    await page.getByRole('heading', { name: state.helloRunId, level: 1 }).waitFor();
    const dag = page.getByRole('group', { name: /Steps of run/ });
    await dag.waitFor();
    const steps = dag.locator('[data-step]');
    const nodes = await steps.evaluateAll((ns) => ns.map((n) => [n.getAttribute('data-step'), n.getAttribute('data-status')]));
    assert.deepEqual(
      nodes.map(([id]) => id).sort(),
      ['confirm', 'greet', 'pause'],
      'the DAG draws the workflow\'s three steps',
    );
    assert.ok(nodes.every(([, s]) => s === 'succeeded'), `every step succeeded: ${JSON.stringify(nodes)}`);
    await page.getByRole('list', { name: 'Attempts in time order' }).waitFor();
    await page.getByRole('list', { name: 'Event history, newest first' }).waitFor();
    await screenshot(page, '03-run-detail');
    noProblems();
  });

  it('shows a map step in progress, its items linked to their child runs, until it completes', { timeout: 60_000 }, async () => {
    const { page, context } = admin;
    // e2e/workflows/e2e_slow_map.toml: 12 items, 3 at a time, each about 2.5 s.
    const submitted = await api(context, 'POST', '/api/tasks', { workflow: 'e2e_slow_map', input: {} });
    const runId = submitted.taskId;
    await page.goto(`/runs/${runId}`);
    await page.getByRole('heading', { name: runId, level: 1 }).waitFor();
    const dag = page.getByRole('group', { name: /Steps of run/ });
    await dag.waitFor();

    // Polls the DOM until the map node shows partial progress: some items done, some
    // running, not all done. Everything is read in one go, so the numbers agree.
    const progress = await (
      await page.waitForFunction(
        () => {
          const node = document.querySelector('[data-step="crawl"]');
          const text = node?.querySelector('.dag__progress')?.textContent ?? '';
          const m = text.match(/^(\d+)\/(\d+)(?: · (\d+) running)?/);
          if (!node || !m) return null;
          const [done, total, running] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
          if (!(done >= 1 && running >= 1 && done < total)) return null;
          const width = (/** @type {Element | null} */ el) => Number(el?.getAttribute('d')?.match(/h(-?[\d.]+)/)?.[1] ?? NaN);
          return {
            text,
            done,
            total,
            running,
            status: node.getAttribute('data-status'),
            label: node.getAttribute('aria-label') ?? '',
            track: width(node.querySelector('.dag__bar-track')),
            bar: width(node.querySelector('.dag__bar-done')),
          };
        },
        null,
        { timeout: 30_000, polling: 100 },
      )
    ).jsonValue();
    assert.ok(progress, 'the map node shows its progress');
    assert.equal(progress.total, 12, `the map counts its 12 items: ${progress.text}`);
    assert.ok(progress.running <= 3, `at most max_parallel = 3 items run at once: ${progress.text}`);
    assert.equal(progress.status, 'waiting', 'the map step waits for its items');
    assert.ok(progress.label.startsWith(`crawl map · waiting ${progress.text}`), `the node's name carries its progress: ${progress.label}`);
    assert.ok(progress.track > 0, 'the node draws a progress track');
    assert.ok(
      Math.abs(progress.bar / progress.track - progress.done / progress.total) < 0.01,
      `the bar shows ${progress.done}/${progress.total} done: ${progress.bar} of ${progress.track}`,
    );

    // The step's detail (the waiting map step is shown first): its progress line and its
    // items, those started linking to their child runs.
    const panel = page.getByRole('region', { name: 'Step crawl' });
    await panel.locator('strong', { hasText: /^\d+\/12( · \d+ running)?$/ }).waitFor();
    const table = panel.getByRole('table', { name: 'Items of step crawl' });
    const itemRows = table.locator('tbody tr');
    await eventually(
      'the item list to show 12 items, a finished one linking to its child run',
      async () =>
        (await itemRows.count()) === 12 &&
        (await itemRows.filter({ has: page.locator('.pill[data-status="succeeded"]') }).getByRole('link').count()) >= 1,
      20_000,
      100,
    );
    await screenshot(page, '03-map-in-progress');
    const items = await itemRows.evaluateAll((rows) =>
      rows.map((r) => ({
        status: r.querySelector('.pill')?.getAttribute('data-status') ?? '',
        href: r.querySelector('a')?.getAttribute('href') ?? null,
        run: r.querySelector('a')?.textContent?.trim() ?? null,
      })),
    );
    assert.ok(items.some((i) => i.status !== 'succeeded'), `when shown, not every item had finished: ${JSON.stringify(items)}`);
    for (const i of items) {
      if (i.status === 'pending') assert.equal(i.href, null, 'an item not started has no child run');
      else assert.equal(i.href, `/runs/${i.run}`, `a started item links to its child run: ${JSON.stringify(i)}`);
    }
    const child = await api(context, 'GET', `/api/tasks/${items.find((i) => i.status === 'succeeded')?.run}`);
    assert.equal(child.workflow, 'e2e_slow_map.crawl', 'the child run runs the inline step');
    assert.equal(child.status, 'succeeded');

    // The map completes on the page by itself, all 12 items done.
    const node = dag.locator('[data-step="crawl"]');
    await dag.locator('[data-step="crawl"][data-status="succeeded"]').waitFor({ timeout: 40_000 });
    assert.equal(((await node.locator('.dag__progress').textContent()) ?? '').trim(), '12/12');
    await eventually(
      'every item to be shown succeeded',
      async () => (await itemRows.locator('.pill[data-status="succeeded"]').count()) === 12,
      10_000,
      100,
    );
    assert.equal(await itemRows.getByRole('link').count(), 12, 'every item links to its child run');
    await screenshot(page, '03-map-done');
    const run = await api(context, 'GET', `/api/tasks/${runId}`);
    assert.equal(run.status, 'succeeded');
    noProblems();
  });

  it('creates a project', async (t) => {
    if (!(await projectsScenario(t))) return;
    const { page } = admin;
    const name = unique('E2E project');
    await page.goto('/projects');
    await page.getByRole('button', { name: 'New project' }).first().click();
    const dialog = page.getByRole('dialog', { name: 'New project' });
    await dialog.getByLabel('Name').fill(name);
    await dialog.getByLabel('Description').fill('Created by the end-to-end suite.');
    await screenshot(page, '04-new-project');
    await dialog.getByRole('button', { name: 'Create project' }).click();
    await page.getByRole('heading', { name, level: 1 }).waitFor();
    assert.match(page.url(), /\/projects\/[^/]+$/);
    state.projectUrl = new URL(page.url()).pathname;
    await screenshot(page, '04-project');
    noProblems();
  });

  it('presses Analyze and sees the run go live to succeeded', async (t) => {
    if (!(await projectsScenario(t))) return;
    if (!state.projectUrl) return t.skip('no project was created');
    const { page } = admin;
    await page.goto(state.projectUrl);
    await page.getByRole('button', { name: 'Analyze' }).click();
    const panel = page.locator('section', { has: page.getByRole('heading', { name: 'Analysis you started' }) });
    await panel.waitFor();
    const runLink = panel.getByRole('link').first();
    await runLink.waitFor();
    state.runId = (await runLink.textContent())?.trim() ?? '';
    assert.ok(state.runId, 'the panel links to the run it started');
    await screenshot(page, '05-analyze-started');
    await panel.locator('.pill[data-status="succeeded"]').waitFor({ timeout: config.runTimeoutMs });
    await screenshot(page, '05-analyze-succeeded');
    // the result appears under Results
    await page.locator('section[aria-labelledby="results-title"] .pill[data-status="succeeded"]').first().waitFor();
    noProblems();
  });

  it('opens the analysis run and sees its steps', async (t) => {
    if (!(await projectsScenario(t))) return;
    if (!state.runId) return t.skip('no analysis run was started');
    const { page } = admin;
    await page.getByRole('link', { name: state.runId }).first().click();
    await page.waitForURL(new RegExp(`/runs/${state.runId}$`));
    const dag = page.getByRole('group', { name: /Steps of run/ });
    await dag.waitFor();
    const steps = dag.locator('[data-step]');
    assert.ok((await steps.count()) > 0, 'the DAG draws the steps');
    const statuses = await steps.evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-status')));
    assert.ok(statuses.every((s) => s === 'succeeded' || s === 'skipped'), `every step finished: ${statuses.join(', ')}`);
    await page.getByRole('list', { name: 'Attempts in time order' }).waitFor();
    await page.getByRole('list', { name: 'Event history, newest first' }).waitFor();
    await screenshot(page, '06-analysis-run-detail');
    noProblems();
  });

  it('makes a run dead and redrives it from the Dead letters page', async () => {
    const { page, context } = admin;
    // A run that cannot succeed: an http step to a closed port exhausts its retries.
    const workflow = process.env.CAIRN_E2E_FAILING_WORKFLOW ?? 'call_service';
    const input = JSON.parse(process.env.CAIRN_E2E_FAILING_INPUT ?? '{"url": "http://127.0.0.1:9/"}');
    const submitted = await api(context, 'POST', '/api/tasks', { workflow, input });
    state.deadRunId = submitted.taskId;
    await eventually(`run ${state.deadRunId} to be dead`, async () => {
      const run = await api(context, 'GET', `/api/tasks/${state.deadRunId}`);
      return run.status === 'dead';
    });
    // The bulk retry of dead runs counts them first (dry run) and asks to confirm.
    await page.goto(`/runs?status=dead&workflow=${encodeURIComponent(workflow)}`);
    await page.getByRole('link', { name: state.deadRunId }).waitFor();
    await page.getByRole('button', { name: 'Retry filtered…' }).click();
    const confirm = page.getByRole('alertdialog', { name: 'Retry runs' });
    await confirm.getByRole('button', { name: /^Retry \d+ runs?$/ }).waitFor();
    await screenshot(page, '07-bulk-retry-dry-run');
    await confirm.getByRole('button', { name: 'Keep them' }).click();
    await confirm.waitFor({ state: 'detached' });

    await page.goto('/dead-letters');
    const row = page.locator('tr', { has: page.getByRole('link', { name: state.deadRunId }) });
    await row.waitFor();
    await screenshot(page, '07-dead-letters');
    await row.getByRole('link', { name: /^Inspect dead letter/ }).click();
    await page.getByRole('heading', { name: 'Failure' }).waitFor();
    await page.getByRole('table', { name: 'Every attempt of the failed step' }).waitFor();
    await screenshot(page, '07-dead-letter-detail');
    await page.goBack();
    await row.getByRole('button', { name: /^Redrive dead letter/ }).click();
    await page.getByText(/Redriven: run/).waitFor();
    await screenshot(page, '07-redriven');
    const run = await api(context, 'GET', `/api/tasks/${state.deadRunId}`);
    assert.notEqual(run.status, 'dead', 'the redriven run is queued or running again');
    noProblems();
  });

  it('creates a token, uses it, revokes it; a wrong current password does not sign out', async (t) => {
    if (!(await tokensScenario(t))) return;
    const { page } = admin;
    await page.setViewportSize({ width: 1280, height: 860 });
    const name = unique('e2e token whose name is long enough that the table has to cut it short');
    await page.goto('/tokens');
    await page.getByRole('heading', { name: 'Tokens', level: 1 }).waitFor();
    await page.getByRole('button', { name: 'New token', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'New token' });
    await dialog.getByRole('textbox', { name: 'Name' }).fill(name);
    await dialog.getByLabel('Expires after (days)').fill('7');
    await dialog.getByRole('button', { name: 'Create token' }).click();
    const secretField = dialog.getByLabel('Your new token');
    await secretField.waitFor();
    const secret = await secretField.inputValue();
    assert.ok(secret.length >= 16, 'the new token is shown');
    await dialog.getByText('This token is shown once.').waitFor();
    await screenshot(page, '09-token-created');
    await dialog.getByRole('button', { name: 'Done' }).click();
    await dialog.waitFor({ state: 'detached' });
    assert.ok(!(await page.content()).includes(secret), 'the secret is gone once the dialog is closed');

    // The token works as a bearer token (no cookie: a plain fetch from Node).
    const asToken = () =>
      fetch(`${config.url}/api/auth/me`, { headers: { Authorization: `Bearer ${secret}`, Accept: 'application/json' } });
    assert.equal((await asToken()).status, 200, 'the new token authenticates');

    const table = page.getByRole('table', { name: 'Your tokens' });
    const row = table.locator('tr', { has: page.getByTitle(name, { exact: true }) });
    await row.getByText('active', { exact: true }).waitFor();
    const sideways = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(sideways <= 0, `at 1280 px the page scrolls sideways by ${sideways} px`);
    const wraps = await page.locator('.table-wrap').evaluateAll((ws) => ws.map((w) => w.scrollWidth - w.clientWidth));
    assert.ok(wraps.every((d) => d <= 0), `at 1280 px a token table scrolls sideways: ${wraps.join(', ')} px`);
    await screenshot(page, '09-tokens');

    await row.getByRole('button', { name: `Revoke token ${name}` }).click();
    const confirm = page.getByRole('alertdialog', { name: `Revoke token “${name}”?` });
    await confirm.getByRole('button', { name: 'Revoke token' }).click();
    await confirm.waitFor({ state: 'detached' });
    const notice = page.getByText(`Token “${name}” revoked.`);
    await notice.waitFor();
    assert.ok(await notice.evaluate((el) => el === document.activeElement), 'focus moves to the status message');
    await row.getByText('revoked', { exact: true }).waitFor();
    await screenshot(page, '09-token-revoked');
    await eventually('the revoked token to be refused', async () => (await asToken()).status === 401, 10_000);

    await page.getByLabel('Current password', { exact: true }).fill('not-the-password');
    await page.getByLabel('New password', { exact: true }).fill('e2e-new-password-1');
    await page.getByLabel('Repeat the new password', { exact: true }).fill('e2e-new-password-1');
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.waitForFunction(
      () => document.querySelector('input[name="current-password"]')?.getAttribute('aria-invalid') === 'true',
    );
    await screenshot(page, '09-wrong-password');
    assert.match(page.url(), /\/tokens$/, 'a wrong current password does not sign out');
    await page.getByRole('heading', { name: 'Tokens', level: 1 }).waitFor();
    await page.setViewportSize(LAPTOP);
    // Chrome logs the refused password change (401) as a console error; that one is expected.
    const problems = admin
      .takeProblems()
      .filter((p) => !(/Failed to load resource/.test(p) && /401/.test(p) && /\/api\/auth\/password\b/.test(p)));
    assert.deepEqual(problems, [], 'no console errors or uncaught exceptions');
  });

  it('a viewer cannot see operator actions', async () => {
    let viewer = config.viewer;
    if (!viewer.email) {
      viewer = { email: `viewer-${Date.now()}@e2e.test`, password: 'viewer-password-1' };
      await api(admin.context, 'POST', '/api/users', { ...viewer, name: 'E2E Viewer', role: 'viewer' });
    }
    const browser = await openBrowser('viewer');
    try {
      const { page } = browser;
      await signIn(page, viewer);
      /** @type {[string, string, string | null][]} */
      const visits = [
        ['08-viewer-runs', '/runs', 'Runs'],
        ['08-viewer-dead-letters', '/dead-letters', 'Dead letters'],
        ['08-viewer-schedules', '/schedules', 'Schedules'],
        ['08-viewer-projects', '/projects', 'Projects'],
      ];
      if (state.projectUrl) visits.push(['08-viewer-project', state.projectUrl, null]);
      if (state.helloRunId) visits.push(['08-viewer-run', `/runs/${state.helloRunId}`, null]);
      if (state.runId) visits.push(['08-viewer-analysis-run', `/runs/${state.runId}`, null]);
      if (state.deadRunId) visits.push(['08-viewer-dead-run', `/runs/${state.deadRunId}`, null]);
      tokensApi ??= await probeTokensApi(admin.context);
      if (tokensApi.available) visits.push(['08-viewer-tokens', '/tokens', 'Tokens']);
      for (const [name, path, heading] of visits) {
        await page.goto(path);
        if (heading) await page.getByRole('heading', { name: heading, level: 1 }).waitFor();
        await page.waitForFunction(() => !document.querySelector('.state[role="status"]'), null, { timeout: 15_000 });
        await screenshot(page, name);
        for (const control of OPERATOR_CONTROLS) {
          assert.equal(await page.getByRole('button', { name: control }).count(), 0, `${path} shows ${control} to a viewer`);
        }
      }
      if (tokensApi.available) {
        await page.goto('/tokens');
        await page.getByRole('heading', { name: 'Your tokens' }).waitFor();
        assert.equal(await page.getByRole('heading', { name: 'All tokens' }).count(), 0, 'a viewer sees only their own tokens');
      }
      assert.match((await page.locator('.sidebar__user').textContent()) ?? '', /viewer/);
      assert.deepEqual(browser.takeProblems(), [], 'no console errors or uncaught exceptions');
    } finally {
      await browser.close();
    }
  });
});

if (skip) {
  it(`end-to-end suite skipped: ${skip}`, { skip: true }, () => {});
}
