// Every page with real, awkward data: 100 dead runs whose errors are about 2 KB long
// (the suite's own `e2e_long_error` workflow, which scripts/e2e.sh loads), a replay with
// copied steps, a step waiting for a callback, a project with an analysis, schedules.
//
// On every page, at 1280 and 1440 px: the page never scrolls sideways, and axe-core
// finds no serious or critical violation; a screenshot of each at 1440 px is kept as
// e2e/artifacts/10-<page>-1440.png. Then the new pages end to end (Users & tokens,
// Usage & cost, schedule editing and backfill), the layout shift on /runs, and where
// focus goes after navigating, signing in, opening a run and pressing Retry.
//
// Schedule editing needs `PATCH /api/schedules/{id}` and `POST
// /api/schedules/{id}/backfill`; on a server without them (404/405) that scenario is
// skipped with "schedule editing API not available: scenario not run".
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  api,
  axeViolations,
  config,
  eventually,
  openBrowser,
  screenshot,
  settled,
  sideways,
  signIn,
  skipReason,
  unique,
} from './lib/harness.mjs';

const skip = skipReason();
const WIDTHS = [1280, 1440];
const LONG_RUNS = 100;

/** About 2 KB of error text: words, then one long unbroken token (the worst case for layout). */
/** @param {number} i */
function longText(i) {
  const words = `run ${i} could not parse the amount field of the upstream invoice export because `.repeat(14);
  return `${words}${'0123456789abcdef'.repeat(60)}`.slice(0, 2000);
}

describe('Every page, with 100 long errors', { skip: skip ?? false }, () => {
  /** @type {Awaited<ReturnType<typeof openBrowser>>} */
  let admin;
  const ids = { dead: '', deadLetter: '', project: '', replay: '', waiting: '', schedule: '' };

  before(async () => {
    admin = await openBrowser('pages');
    const { context } = admin;
    await signIn(admin.page, config.admin);
    // 100 runs that die at once, each with a ~2 KB error.
    const batch = await api(context, 'POST', '/api/tasks/batch', {
      workflow: 'e2e_long_error',
      tasks: Array.from({ length: LONG_RUNS }, (_, i) => ({ input: { text: longText(i) } })),
    });
    ids.dead = batch.tasks[0].taskId;
    const batchIds = new Set(batch.tasks.map((/** @type {{ taskId: string }} */ t) => t.taskId));
    await eventually(`${LONG_RUNS} e2e_long_error runs to be dead`, async () => {
      const page = await api(context, 'GET', '/api/tasks?workflow=e2e_long_error&status=dead&limit=200');
      return page.items.filter((/** @type {{ id: string }} */ r) => batchIds.has(r.id)).length >= LONG_RUNS;
    });
    const run = await api(context, 'GET', `/api/tasks/${ids.dead}`);
    assert.ok((run.error ?? '').length >= 1900, `the runs' errors are about 2 KB (${(run.error ?? '').length} characters)`);
    ids.deadLetter = String(run.deadLetter?.id ?? '');

    // A succeeded run replayed from its last step: its first steps are copied.
    const hello = await api(context, 'POST', '/api/tasks', { workflow: 'hello', input: { name: 'replay source' } });
    await eventually('the hello run to succeed', async () => (await api(context, 'GET', `/api/tasks/${hello.taskId}`)).status === 'succeeded');
    ids.replay = (await api(context, 'POST', `/api/tasks/${hello.taskId}/replay`, { fromStep: 'confirm' })).taskId;

    // A step waiting for a callback (the "agent" accepts the job with a 204).
    const research = await api(context, 'POST', '/api/tasks', {
      workflow: 'research_with_external_agent',
      input: { question: 'Which invoices failed to parse?', agent_url: `${config.url}/api/auth/logout` },
    });
    ids.waiting = research.taskId;
    await eventually('the research run to wait for its callback', async () => {
      const r = await api(context, 'GET', `/api/tasks/${ids.waiting}`);
      return r.steps.some((/** @type {any} */ s) => s.status === 'waiting') || r.status === 'dead';
    });

    const project = await api(context, 'POST', '/api/projects', { name: unique('E2E pages project'), description: 'For the page tour.' });
    ids.project = String(project.id);
    // Twice: the second analysis finds the first finished, so it has a success rate.
    for (const n of [1, 2]) {
      const analysis = await api(context, 'POST', '/api/agents/analyze', { projectId: project.id });
      await eventually(`analysis ${n} to finish`, async () => {
        const r = await api(context, 'GET', `/api/tasks/${analysis.taskId}`);
        return ['succeeded', 'dead'].includes(r.status);
      });
    }

    const schedule = await api(context, 'POST', '/api/schedules', {
      name: `e2e-nightly-${Date.now()}`,
      workflow: 'hello',
      cron: '0 6 * * *',
      timezone: 'Europe/Paris',
      input: { name: 'scheduled' },
    });
    ids.schedule = String(schedule.id);
  });
  after(async () => {
    await admin?.close();
  });
  beforeEach(() => {
    admin?.takeProblems();
  });

  /** @returns {[string, string][]} name and path of every page */
  const pages = () => [
    ['overview', '/'],
    ['projects', '/projects'],
    ['project', `/projects/${ids.project}`],
    ['runs', '/runs'],
    ['runs-dead', '/runs?status=dead'],
    ['run-dead', `/runs/${ids.dead}`],
    ['run-replay', `/runs/${ids.replay}`],
    ['run-waiting', `/runs/${ids.waiting}`],
    ['dead-letters', '/dead-letters'],
    ...(ids.deadLetter ? [/** @type {[string, string]} */ (['dead-letter', `/dead-letters/${ids.deadLetter}`])] : []),
    ['notifications', '/notifications'],
    ['schedules', '/schedules'],
    ['workflows', '/workflows'],
    ['workflow', '/workflows/e2e_long_error'],
    ['workers', '/workers'],
    ['usage', '/usage'],
    ['tokens', '/tokens'],
    ['users', '/users'],
  ];

  it('never scrolls sideways at 1280 and 1440 px, and axe finds nothing serious', async () => {
    const { page } = admin;
    /** @type {string[]} */
    const failures = [];
    for (const width of WIDTHS) {
      await page.setViewportSize({ width, height: 900 });
      for (const [name, path] of pages()) {
        await page.goto(path);
        try {
          await settled(page);
        } catch (e) {
          await screenshot(page, `10-${name}-${width}-unsettled`);
          failures.push(`${path} at ${width} px did not finish loading: ${/** @type {Error} */ (e).message.split('\n')[0]}`);
          continue;
        }
        const over = await sideways(page);
        if (over > 0) failures.push(`${path} at ${width} px scrolls sideways by ${over} px`);
        const violations = await axeViolations(page);
        for (const v of violations) failures.push(`${path} at ${width} px: ${v}`);
        if (width === 1440) await screenshot(page, `10-${name}-1440`);
      }
    }
    assert.deepEqual(failures, [], failures.join('\n'));
    assert.deepEqual(admin.takeProblems(), [], 'no console errors or uncaught exceptions');
  });

  it('shows a long error cut short, with the full text on hover', async () => {
    const { page } = admin;
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto('/runs?workflow=e2e_long_error');
    await settled(page);
    const cell = page.locator('.error-cell').first();
    const { clipped, title } = await cell.evaluate((el) => ({ clipped: el.scrollWidth > el.clientWidth, title: el.getAttribute('title') ?? '' }));
    assert.ok(clipped, 'the error is cut with an ellipsis');
    assert.ok(title.length >= 1900, 'the full error is its title');
  });

  it('does not shift the layout of /runs as it loads', async () => {
    const { page } = admin;
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.goto('/runs');
    await settled(page);
    await page.waitForTimeout(1500); // let the live indicator connect; what moves meanwhile is measured
    const cls = await page.evaluate(
      () =>
        new Promise((resolve) => {
          let total = 0;
          new PerformanceObserver((list) => {
            for (const e of /** @type {any[]} */ (list.getEntries())) if (!e.hadRecentInput) total += e.value;
          }).observe({ type: 'layout-shift', buffered: true });
          setTimeout(() => resolve(total), 300);
        }),
    );
    assert.ok(Number(cls) < 0.1, `cumulative layout shift on /runs is ${cls}`);
  });

  it('says a replayed step was copied and a waiting step waits, with its timeout', async () => {
    const { page } = admin;
    await page.goto(`/runs/${ids.replay}`);
    await settled(page);
    await page.getByRole('group', { name: /Steps of run/ }).getByRole('button', { name: /^greet / }).click();
    const panel = page.locator('section', { has: page.getByRole('heading', { name: 'Step greet' }) });
    await panel.getByText(/^Copied from run/).waitFor();
    assert.ok(!/Attempts\s*0\b/.test((await panel.textContent()) ?? ''), 'a copied step does not read "0 attempts"');

    await page.goto(`/runs/${ids.waiting}`);
    await settled(page);
    const run = await api(admin.context, 'GET', `/api/tasks/${ids.waiting}`);
    assert.ok(
      run.steps.some((/** @type {any} */ s) => s.status === 'waiting'),
      `the research run waits for its callback (it is ${run.status}: ${run.error ?? ''}; scripts/e2e.sh sets CAIRN_WEBHOOK_SECRET)`,
    );
    {
      const step = page.locator('section', { has: page.getByRole('heading', { name: 'Step findings' }) });
      await step.getByText('Times out', { exact: true }).waitFor();
      const attempts = step.getByRole('table', { name: 'Attempts of step findings' });
      await attempts.locator('.pill[data-status="waiting"]').waitFor();
      assert.equal(await attempts.locator('.pill[data-status="running"]').count(), 0, 'the waiting attempt does not read "running"');
      assert.match((await attempts.textContent()) ?? '', /times out in/);
    }
    assert.deepEqual(admin.takeProblems(), [], 'no console errors or uncaught exceptions');
  });

  it('shows the project analysis as findings with a success rate', async () => {
    const { page } = admin;
    await page.goto(`/projects/${ids.project}`);
    await settled(page);
    const results = page.locator('section[aria-labelledby="results-title"]');
    await results.getByRole('heading', { name: 'Findings' }).first().waitFor();
    await results.getByText('Success rate').first().waitFor();
    assert.ok((await results.locator('.findings').first().locator('li').count()) > 0, 'the findings are a list');
  });

  it('reads the event history as a timeline, with JSON on demand', async () => {
    const { page } = admin;
    await page.goto(`/runs/${ids.dead}`);
    await settled(page);
    const events = page.getByRole('list', { name: 'Event history, newest first' });
    await events.getByText(/^Run died: /).waitFor();
    const json = events.locator('details').first();
    await json.locator('summary').click();
    await json.locator('pre').waitFor();
    assert.match((await json.locator('pre').textContent()) ?? '', /"kind":/);
  });

  it('moves focus to the heading after sign-in and on opening a run, and to the outcome of Retry (after confirming)', async () => {
    const browser = await openBrowser('focus');
    try {
      const { page } = browser;
      await page.goto('/runs?workflow=e2e_long_error&status=dead');
      await page.getByLabel('Email').fill(config.admin.email);
      await page.getByLabel('Password').fill(config.admin.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      const heading = page.getByRole('heading', { name: 'Runs', level: 1 });
      await heading.waitFor();
      await eventually('focus on the Runs heading', async () => heading.evaluate((el) => el === document.activeElement), 5000, 100);

      const link = page.getByRole('table', { name: /^Runs:/ }).locator('a.mono').first();
      const runId = ((await link.textContent()) ?? '').trim();
      await link.click();
      const runHeading = page.getByRole('heading', { name: runId, level: 1 });
      await runHeading.waitFor();
      await eventually('focus on the run heading', async () => runHeading.evaluate((el) => el === document.activeElement), 5000, 100);

      await page.getByRole('button', { name: 'Retry…' }).click();
      const confirm = page.getByRole('alertdialog', { name: 'Retry this run?' });
      await confirm.waitFor();
      assert.deepEqual(await axeViolations(page), [], 'the confirmation has no serious accessibility problem');
      await screenshot(page, '10-retry-confirm-1440');
      await confirm.getByRole('button', { name: 'Retry run' }).click();
      const outcome = page.locator('p.callout', { hasText: /^Retried: run is now/ });
      await outcome.waitFor();
      await eventually('focus on the outcome', async () => outcome.evaluate((el) => el === document.activeElement), 5000, 100);
      assert.deepEqual(browser.takeProblems(), [], 'no console errors or uncaught exceptions');
    } finally {
      await browser.close();
    }
  });

  it('Users & tokens: creates a user, who signs in; changes their role, disables and deletes them', async () => {
    const { page, context } = admin;
    await page.setViewportSize({ width: 1440, height: 900 });
    const email = `e2e-${Date.now()}@example.test`;
    const password = 'e2e-user-password-1';
    await page.goto('/users');
    await settled(page);
    await page.getByRole('button', { name: 'New user' }).click();
    const dialog = page.getByRole('dialog', { name: 'New user' });
    await dialog.getByLabel('Email').fill(email);
    await dialog.getByLabel('Name').fill('E2E Person');
    await dialog.getByLabel('Role').selectOption('viewer');
    await dialog.getByLabel('Password').fill(password);
    await dialog.getByRole('button', { name: 'Create user' }).click();
    await page.getByText(`${email} can now sign in as viewer.`).waitFor();

    const other = await openBrowser('new-user');
    try {
      await signIn(other.page, { email, password });
      assert.match((await other.page.locator('.sidebar__user').textContent()) ?? '', /viewer/);
      assert.equal(await other.page.getByRole('link', { name: 'Users & tokens' }).count(), 0, 'a viewer has no Users & tokens link');
    } finally {
      await other.close();
    }

    const row = page.locator('tr', { hasText: email });
    await row.getByRole('button', { name: `Edit… ${email}` }).click();
    const edit = page.getByRole('dialog', { name: `Edit ${email}` });
    await edit.getByLabel('Role').selectOption('operator');
    await edit.getByRole('button', { name: 'Save changes' }).click();
    await page.getByText(`${email} updated.`).waitFor();
    await row.getByText('operator', { exact: true }).waitFor();
    await screenshot(page, '10-users-edited-1440');
    const users = await api(context, 'GET', '/api/users');
    assert.equal(users.items.find((/** @type {any} */ u) => u.email === email)?.role, 'operator');

    await row.getByRole('button', { name: `Delete… ${email}` }).click();
    await page.getByRole('alertdialog').getByRole('button', { name: 'Delete user' }).click();
    await page.getByText(`${email} deleted, with their sessions and tokens.`).waitFor();
    const after = await api(context, 'GET', '/api/users');
    assert.ok(!after.items.some((/** @type {any} */ u) => u.email === email), 'the user is gone');
    assert.deepEqual(admin.takeProblems(), [], 'no console errors or uncaught exceptions');
  });

  it('Usage & cost: counts the runs of the period, per workflow', async () => {
    const { page } = admin;
    await page.goto('/usage?since=24h');
    await settled(page);
    const row = page.getByRole('table', { name: /^Usage from/ }).locator('tr', { has: page.getByRole('link', { name: 'e2e_long_error' }) });
    const cells = await row.locator('td').allTextContents();
    assert.ok(Number(cells[3]?.replace(/\D/g, '')) >= LONG_RUNS, `e2e_long_error counts its runs: ${cells.join(' | ')}`);
    await page.getByRole('region', { name: 'Totals' }).getByText('Estimated cost').waitFor();
    assert.deepEqual(admin.takeProblems(), [], 'no console errors or uncaught exceptions');
  });

  it('edits a schedule and backfills it', async (t) => {
    const { page, context } = admin;
    const probe = await context.request.fetch(`${config.url}/api/schedules/${ids.schedule}`, {
      method: 'PATCH',
      data: {},
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    });
    if (probe.status() === 404 || probe.status() === 405) {
      const why = `schedule editing API not available: scenario not run (PATCH /api/schedules/{id} answered ${probe.status()})`;
      console.log(why);
      t.skip(why);
      return;
    }
    const before = await api(context, 'GET', `/api/schedules/${ids.schedule}`);
    await page.goto('/schedules');
    await settled(page);
    await page.getByRole('button', { name: `Edit… ${before.name}` }).click();
    const dialog = page.getByRole('dialog', { name: `Edit schedule “${before.name}”` });
    await dialog.getByLabel('Cron expression').fill('30 5 * * 1-5');
    await dialog.getByRole('button', { name: 'Save schedule' }).click();
    await dialog.waitFor({ state: 'detached' });
    await eventually('the schedule to have its new cron', async () => (await api(context, 'GET', `/api/schedules/${ids.schedule}`)).cron === '30 5 * * 1-5', 10_000);

    await page.getByRole('button', { name: `Backfill… ${before.name}` }).click();
    const backfill = page.getByRole('dialog', { name: `Backfill “${before.name}”` });
    const day = 86_400_000;
    const local = (/** @type {number} */ ms) => {
      const d = new Date(ms);
      const p = (/** @type {number} */ n) => String(n).padStart(2, '0');
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
    };
    await backfill.getByLabel('From').fill(local(Date.now() - 14 * day));
    await backfill.getByLabel('To').fill(local(Date.now() - day));
    await backfill.getByRole('button', { name: 'Start runs' }).click();
    await backfill.getByText(/^Started \d+ runs? of hello|^No tick of this schedule/).waitFor();
    await screenshot(page, '10-schedule-backfilled-1440');
    await backfill.getByRole('button', { name: 'Done' }).click();
    assert.deepEqual(admin.takeProblems(), [], 'no console errors or uncaught exceptions');
  });
});

describe('The browser cache', { skip: skip ?? false }, () => {
  it(
    'a page revisited from the browser cache still runs',
    async () => {
      const browser = await openBrowser('cache');
      try {
        const { page } = browser;
        await signIn(page, config.admin);
        await page.goto('/workers');
        await settled(page);
        await page.reload(); // revalidates the cached page: 304 Not Modified
        await settled(page);
      } finally {
        await browser.close();
      }
    },
  );
});

if (skip) {
  it(`page tour skipped: ${skip}`, { skip: true }, () => {});
}
