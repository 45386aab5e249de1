// Headless-browser tests against a real 3-node `confab up` cluster.
//
// Run through run.sh (which installs node_modules and checks the tools):
//   CONFAB_BIN_DIR=target/debug CONFAB_SCREENSHOTS_DIR=target/browser-screenshots node cluster.test.mjs
//
// 1. starts `confab up --nodes 3` on free ports in a temp data dir and waits for every /readyz;
// 2. signs tokens with `confab token` and the dev secret `confab up` keeps in <data dir>/dev-jwt-secret;
// 3. chat: the page at / on node 1 answers a turn that fills slots; the same user on node 2
//    gets the turn back (resume) and keeps its slots on the next turn;
// 4. dashboard: /dashboard refuses a wrong token and a chat-only token; with an admin token it
//    shows 3 members and 96 vnodes, then, without a reload, follows `confabctl nodes drain node-3`
//    down to 2 members and 64 vnodes;
// and always stops the cluster (SIGINT, then SIGKILL after a grace) and removes the temp dir.
//
// Nothing here waits a fixed time for the product: every wait is a condition polled up to a
// deadline (CONFAB_BROWSER_TIMEOUT_S, default 60 s).

import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BIN_DIR = path.resolve(process.env.CONFAB_BIN_DIR || 'target/debug');
const SHOTS = path.resolve(process.env.CONFAB_SCREENSHOTS_DIR || 'target/browser-screenshots');
const CHROMIUM = process.env.CONFAB_CHROMIUM || '/usr/bin/chromium';
const CONFAB = path.join(BIN_DIR, 'confab');
const CONFABCTL = path.join(BIN_DIR, 'confabctl');
/** The deadline of one awaited condition. */
const TIMEOUT_MS = 1000 * Number(process.env.CONFAB_BROWSER_TIMEOUT_S || 60);
/** Start-up of a debug cluster on a busy 2-core machine may take longer than one condition. */
const STARTUP_MS = Math.max(TIMEOUT_MS, 120_000);
/** How long `confab up` gets to stop its nodes after SIGINT before the group is killed. */
const STOP_GRACE_MS = 60_000;
/** The whole run, at most. */
const WATCHDOG_MS = 15 * 60_000;
const NODES = 3;
const VNODES_PER_NODE = 32;

const t0 = Date.now();
const stamp = () => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s`;
const log = (...args) => console.log(stamp(), ...args);
const step = (text) => console.log(`${stamp()} -- ${text}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}

/**
 * Polls `probe` until it returns a truthy value (returned) or the deadline passes
 * (throws with `what` and the last value `describe` gives, so a failure says what was seen).
 */
async function waitFor(what, probe, { timeout = TIMEOUT_MS, every = 250, describe } = {}) {
  const deadline = Date.now() + timeout;
  let last, lastError;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      let seen = '';
      try {
        seen = describe ? JSON.stringify(await describe()) : JSON.stringify(last);
      } catch (e) {
        seen = `(cannot describe: ${e.message})`;
      }
      throw new Failure(
        `timed out after ${timeout / 1000}s waiting for ${what}; last seen: ${seen}` +
          (lastError ? `; last error: ${lastError.message}` : ''),
      );
    }
    await sleep(every);
  }
}

/** Runs a binary to completion: { code, stdout, stderr }. Never throws on a non-zero exit. */
function run(file, args, { timeout = TIMEOUT_MS, env } = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout, env: { ...process.env, ...env }, maxBuffer: 16 << 20, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(new Error(`${path.basename(file)} ${args.join(' ')}: ${error.message}\n${stderr}`));
        } else {
          resolve({ code: error ? error.code : 0, stdout, stderr });
        }
      },
    );
  });
}

/** Whether a TCP port on 127.0.0.1 can be bound now. */
function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A base port whose `count` consecutive ports are all free, in [lo, hi). */
async function freePortRange(count, lo, hi, avoid = []) {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = lo + Math.floor(Math.random() * (hi - lo - count));
    const ports = Array.from({ length: count }, (_, i) => base + i);
    if (ports.some((p) => avoid.includes(p))) continue;
    let ok = true;
    for (const p of ports) if (!(ok = await portFree(p))) break;
    if (ok) return base;
  }
  throw new Failure(`no ${count} consecutive free ports in ${lo}..${hi}`);
}

/** GET http://127.0.0.1:port/path: { status, body }, or { status: 0, error } when it cannot connect. */
async function http(port, urlPath, { token, timeout = 5000 } = {}) {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(timeout),
    });
    return { status: r.status, body: await r.text() };
  } catch (e) {
    return { status: 0, error: e.cause?.code || e.message };
  }
}

async function adminJson(port, urlPath, token) {
  const r = await http(port, urlPath, { token });
  check(r.status === 200, `GET ${urlPath} on :${port}: HTTP ${r.status} ${r.body ?? r.error}`);
  return JSON.parse(r.body);
}

// ---------------------------------------------------------------------------------------------
// The cluster: `confab up` in a process group of its own, its output in a log file.

class Cluster {
  constructor() {
    this.tmp = mkdtempSync(path.join(os.tmpdir(), 'confab-browser-'));
    this.dataDir = path.join(this.tmp, 'data');
    this.logPath = path.join(SHOTS, 'confab-up.log');
    this.output = '';
    this.child = null;
    this.exit = null;
  }

  async start() {
    for (let attempt = 1; ; attempt++) {
      // Below the usual ephemeral range (32768+), where outgoing connections take ports.
      this.httpPort = await freePortRange(NODES, 20000, 26000);
      this.clusterPort = await freePortRange(NODES, 26000, 32000);
      const args = [
        'up',
        '--nodes', String(NODES),
        '--http-port', String(this.httpPort),
        '--cluster-port', String(this.clusterPort),
        '--data-dir', this.dataDir,
      ];
      step(`starting: ${CONFAB} ${args.join(' ')}`);
      this.spawn(args);
      try {
        await this.waitReady();
        return;
      } catch (e) {
        // Another process may have taken a port between the check and the bind: try new ones.
        const portTaken = /address already in use|addrinuse/i.test(this.output);
        if (!(portTaken && this.exit && attempt < 3)) throw e;
        log(`a port was taken meanwhile; retrying on other ports (attempt ${attempt + 1})`);
        await this.stop();
        rmSync(this.dataDir, { recursive: true, force: true });
      }
    }
  }

  spawn(args) {
    mkdirSync(SHOTS, { recursive: true });
    const file = createWriteStream(this.logPath, { flags: 'a' });
    file.write(`\n===== ${new Date().toISOString()} confab ${args.join(' ')}\n`);
    this.output = '';
    this.exit = null;
    // detached: a process group of its own, so that a SIGKILL after the grace reaches the nodes too.
    const child = spawn(CONFAB, args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: '1' },
    });
    this.child = child;
    this.exitPromise = once(child, 'exit').then(([code, signal]) => {
      this.exit = { code, signal };
      file.end(`===== confab up exited: code ${code} signal ${signal}\n`);
    });
    const take = (chunk) => {
      const text = chunk.toString();
      this.output += text;
      file.write(text);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', (e) => {
      this.output += `spawn error: ${e.message}\n`;
    });
  }

  get ports() {
    return Array.from({ length: NODES }, (_, i) => this.httpPort + i);
  }

  async waitReady() {
    for (const [i, port] of this.ports.entries()) {
      await waitFor(
        `node-${i + 1}'s http://127.0.0.1:${port}/readyz to answer 200`,
        async () => {
          if (this.exit) {
            throw new Failure(
              `confab up exited during start-up (code ${this.exit.code}, signal ${this.exit.signal}):\n${tail(this.output, 40)}`,
            );
          }
          return (await http(port, '/readyz')).status === 200;
        },
        { timeout: STARTUP_MS, describe: () => http(port, '/readyz') },
      );
      log(`node-${i + 1} ready on http://127.0.0.1:${port}`);
    }
  }

  /** SIGINT to `confab up` (it stops every node cleanly), SIGKILL to its group after the grace. */
  async stop() {
    if (!this.child) return null;
    const pid = this.child.pid;
    let how;
    if (!this.exit && pid) {
      step(`stopping confab up (pid ${pid}): SIGINT`);
      const began = Date.now();
      try {
        process.kill(pid, 'SIGINT');
      } catch (_) {}
      const stopped = await Promise.race([this.exitPromise.then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
      if (!stopped) {
        log(`confab up did not stop within ${STOP_GRACE_MS / 1000}s: SIGKILL to its process group`);
        try {
          process.kill(-pid, 'SIGKILL');
        } catch (_) {}
        await this.exitPromise;
        how = { ...this.exit, killed: true, seconds: (Date.now() - began) / 1000 };
      } else {
        how = { ...this.exit, killed: false, seconds: (Date.now() - began) / 1000 };
        log(`confab up exited in ${how.seconds.toFixed(1)}s: code ${how.code}, signal ${how.signal}`);
      }
    } else {
      how = { ...this.exit, killed: false, seconds: 0 };
    }
    // Its nodes are in its group: none may outlive it.
    if (pid) {
      try {
        process.kill(-pid, 'SIGKILL');
        log('killed processes left over in the cluster process group');
      } catch (_) {}
    }
    this.child = null;
    return how;
  }

  /** The last resort on the way out (a sync 'exit' handler): no grace. */
  killNow() {
    if (this.child?.pid && !this.exit) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch (_) {}
    }
    this.removeTmp();
  }

  removeTmp() {
    if (this.tmp && existsSync(this.tmp)) {
      rmSync(this.tmp, { recursive: true, force: true });
      log(`removed ${this.tmp}`);
    }
  }

  /** The dev JWT secret `confab up` created in its data dir. */
  secret() {
    const file = path.join(this.dataDir, 'dev-jwt-secret');
    const secret = readFileSync(file, 'utf8').trim();
    check(secret.length > 0, `${file} is empty`);
    return secret;
  }
}

function tail(text, lines) {
  return text.split('\n').slice(-lines).join('\n');
}

async function token(uid, scope, secret) {
  const r = await run(CONFAB, ['token', '--uid', uid, '--scope', scope, '--ttl', '1h', '--jwt-secret', secret]);
  check(r.code === 0 && r.stdout.trim(), `confab token --uid ${uid} --scope ${scope} failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

// ---------------------------------------------------------------------------------------------
// The browser.

async function launchBrowser(profileDir) {
  step(`launching ${CHROMIUM} (headless)`);
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    timeout: TIMEOUT_MS,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  context.setDefaultTimeout(TIMEOUT_MS);
  context.setDefaultNavigationTimeout(TIMEOUT_MS);
  log(`Chromium ${context.browser()?.version() ?? ''} up`);
  return context;
}

/**
 * A new tab whose script errors are recorded (a page that throws fails its test) and whose
 * failed requests are logged; `expectRefusals`: 401 and 403 answers are expected, not logged.
 */
async function newPage(context, name, { expectRefusals = false } = {}) {
  const page = await context.newPage();
  page.pageErrors = [];
  const refusal = (status) => expectRefusals && (status === 401 || status === 403);
  page.on('pageerror', (e) => {
    page.pageErrors.push(e.message);
    log(`[${name}] page error: ${e.message}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !refusal(r.status())) log(`[${name}] HTTP ${r.status()} for ${r.url()}`);
  });
  // Chromium also logs each failed load as a console error (the favicon's only there, no response event).
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const status = Number(/status of (\d{3})/.exec(m.text())?.[1]);
    if (!refusal(status)) log(`[${name}] console error: ${m.text()}`);
  });
  return page;
}

async function screenshot(page, name) {
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

// ---------------------------------------------------------------------------------------------
// The chat page.

/** The page's reply line: `text  [intent {slots} policy]`. */
function parseReply(line) {
  const m = /^(.*)  \[(\S+) (\{.*\}) (\S+)\]$/s.exec(line);
  check(m, `a reply line that is not "text  [intent {slots} policy]": ${JSON.stringify(line)}`);
  return { text: m[1], intent: m[2], slots: JSON.parse(m[3]), policy: m[4] };
}

const chatLog = (page) =>
  page.evaluate(() => [...document.querySelectorAll('#log > div')].map((d) => ({ cls: d.className, text: d.textContent })));

async function chatConnect(page, port, chatToken, uid) {
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.fill('#token', chatToken);
  await page.click('#connect');
  await waitFor(`the chat page on :${port} to connect (#text enabled)`, () => page.isEnabled('#text'), {
    describe: () => chatLog(page),
  });
  const hello = await waitFor(
    `a hello line for ${uid} in #log`,
    async () => (await chatLog(page)).find((l) => l.cls === 'sys' && l.text.startsWith(`hello ${uid} on `)),
    { describe: () => chatLog(page) },
  );
  log(`  ${hello.text}`);
  const m = /^hello \S+ on (\S+), last_seq (\d+)$/.exec(hello.text);
  check(m, `unexpected hello line: ${hello.text}`);
  return { node: m[1], lastSeq: Number(m[2]) };
}

/** Sends one turn and returns the new bot line(s) past the `botsBefore` already shown. */
async function chatSay(page, text, botsBefore) {
  await page.fill('#text', text);
  await page.click('#send');
  const bots = await waitFor(
    `a reply to ${JSON.stringify(text)} in #log`,
    async () => {
      const lines = await chatLog(page);
      const errors = lines.filter((l) => l.cls === 'err');
      check(errors.length === 0, `the page shows errors: ${JSON.stringify(errors)}`);
      const bots = lines.filter((l) => l.cls === 'bot');
      return bots.length > botsBefore ? bots : null;
    },
    { describe: () => chatLog(page) },
  );
  return parseReply(bots[bots.length - 1].text);
}

async function testChat(context, cluster, secret) {
  const uid = `browser-${process.pid}-${Date.now() % 100000}`;
  const chatToken = await token(uid, 'chat', secret);
  const [p1, p2] = cluster.ports;

  step(`chat on node 1 (http://127.0.0.1:${p1}/) as ${uid}`);
  const page = await newPage(context, 'chat');
  try {
    const hello = await chatConnect(page, p1, chatToken, uid);
    check(hello.lastSeq === 0, `a new user's hello says last_seq ${hello.lastSeq}, expected 0`);
    const reply = await chatSay(page, '39码的黑色有货吗？', 0);
    log(`  reply: ${JSON.stringify(reply)}`);
    check(reply.intent === 'stock_query', `intent ${reply.intent}, expected stock_query`);
    check(String(reply.slots.size) === '39', `slot size ${JSON.stringify(reply.slots.size)}, expected 39`);
    check(reply.slots.colour === 'black', `slot colour ${JSON.stringify(reply.slots.colour)}, expected black`);
    check(reply.text.includes('39码') && reply.text.includes('黑色'), `reply text ${JSON.stringify(reply.text)} names neither 39码 nor 黑色`);
    check(/^v\d+/.test(reply.policy), `policy ${JSON.stringify(reply.policy)}, expected a version like v1`);
    const acks = (await chatLog(page)).filter((l) => l.cls === 'sys' && l.text.startsWith('ack '));
    check(acks.length === 1, `expected one ack line, saw ${JSON.stringify(acks)}`);
    await screenshot(page, 'chat.png');
    check(page.pageErrors.length === 0, `the chat page threw: ${page.pageErrors.join('; ')}`);
  } catch (e) {
    await screenshot(page, 'chat-failed.png').catch(() => {});
    throw e;
  } finally {
    await page.close();
  }

  step(`chat on node 2 (http://127.0.0.1:${p2}/) as the same user: the turn comes back, the slots stay`);
  const page2 = await newPage(context, 'chat-node2');
  try {
    const hello = await chatConnect(page2, p2, chatToken, uid);
    check(hello.lastSeq >= 1, `node 2's hello says last_seq ${hello.lastSeq}: the acked turn is hidden`);
    // The page resumes after seq 0 when the hello says more: the first turn's reply comes again.
    const replayed = await waitFor(
      'the first reply, resumed, in #log',
      async () => (await chatLog(page2)).find((l) => l.cls === 'bot'),
      { describe: () => chatLog(page2) },
    );
    const first = parseReply(replayed.text);
    check(
      first.intent === 'stock_query' && String(first.slots.size) === '39' && first.slots.colour === 'black',
      `the resumed reply differs: ${JSON.stringify(first)}`,
    );
    const reply = await chatSay(page2, '换成白色的', 1);
    log(`  reply: ${JSON.stringify(reply)}`);
    check(reply.slots.colour === 'white', `slot colour ${JSON.stringify(reply.slots.colour)}, expected white`);
    check(String(reply.slots.size) === '39', `slot size ${JSON.stringify(reply.slots.size)}, expected 39 kept from the first turn`);
    check(reply.text.includes('白色'), `reply text ${JSON.stringify(reply.text)} does not name 白色`);
    await screenshot(page2, 'chat-node2.png');
    check(page2.pageErrors.length === 0, `the chat page threw: ${page2.pageErrors.join('; ')}`);
  } catch (e) {
    await screenshot(page2, 'chat-node2-failed.png').catch(() => {});
    throw e;
  } finally {
    await page2.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The dashboard.

/** What the dashboard shows now, read from its DOM contract. */
const dashboardState = (page) =>
  page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? null;
    const owners = {};
    for (const c of document.querySelectorAll('svg#ring circle.vnode')) {
      const o = c.getAttribute('data-owner');
      owners[o] = (owners[o] || 0) + 1;
    }
    return {
      members: [...document.querySelectorAll('#members tbody tr[data-member]')].map((tr) => ({
        id: tr.getAttribute('data-member'),
        status: tr.getAttribute('data-status'),
      })),
      rows: document.querySelectorAll('#members tbody tr').length,
      vnodes: document.querySelectorAll('svg#ring circle.vnode').length,
      owners,
      epoch: text('epoch'),
      dlq: text('dlq'),
      policy: text('policy'),
      canary: text('canary'),
      migrations: text('migrations'),
      error: text('error'),
      refreshes: Number(document.body.dataset.refreshes || 0),
      notReloaded: window.__confabNotReloaded === true,
    };
  });

async function waitForRefreshes(page, more) {
  const from = (await dashboardState(page)).refreshes;
  await waitFor(
    `the dashboard to refresh by itself ${more} more times (body[data-refreshes] past ${from + more - 1})`,
    async () => (await dashboardState(page)).refreshes >= from + more,
    { describe: () => dashboardState(page) },
  );
}

async function testDashboardRefuses(context, cluster, secret) {
  const [p1] = cluster.ports;
  const wrong = await token('ops', 'admin', 'not-the-cluster-secret-0123456789abcdef');
  const chatOnly = await token('ops', 'chat', secret);
  const cases = [
    { name: 'a token signed with another secret (#token= in the URL)', shot: 'dashboard-bad-token.png', via: 'hash', token: wrong },
    { name: 'a chat-only token (typed into #token, then #load)', shot: 'dashboard-chat-token.png', via: 'input', token: chatOnly },
  ];
  for (const c of cases) {
    step(`dashboard refuses ${c.name}`);
    // The refused requests are logged by Chromium as console errors: expected here.
    const page = await newPage(context, 'dashboard-refused', { expectRefusals: true });
    try {
      if (c.via === 'hash') {
        await page.goto(`http://127.0.0.1:${p1}/dashboard#token=${encodeURIComponent(c.token)}`);
      } else {
        await page.goto(`http://127.0.0.1:${p1}/dashboard`);
        await page.fill('#token', c.token);
        await page.click('#load');
      }
      const state = await waitFor('an error in #error', async () => {
        const s = await dashboardState(page);
        return s.error ? s : null;
      }, { describe: () => dashboardState(page) });
      log(`  #error: ${state.error}`);
      // It must stay that way: no member rows and no ring over a few of the page's refresh periods.
      const until = Date.now() + 3000;
      while (Date.now() < until) {
        const s = await dashboardState(page);
        check(s.rows === 0 && s.vnodes === 0, `the refused dashboard shows data: ${JSON.stringify(s)}`);
        check(s.error, `#error went empty with a refused token: ${JSON.stringify(s)}`);
        await sleep(250);
      }
      await screenshot(page, c.shot);
    } catch (e) {
      await screenshot(page, c.shot.replace('.png', '-failed.png')).catch(() => {});
      throw e;
    } finally {
      await page.close();
    }
  }
}

/**
 * Opens sessions through the chat socket so that the drain has some to move: `onDrained` of them
 * owned by node-3 (chosen with the admin API's locate, which touches nothing) and `others` elsewhere.
 * Each gets one turn ("40码的红色有货吗？"). Returns [{ uid, token, node, seq }].
 */
async function openSessions(context, cluster, secret, admin, { onDrained, others }) {
  const [p1] = cluster.ports;
  const picked = [];
  let want = { 'node-3': onDrained, other: others };
  for (let i = 0; (want['node-3'] > 0 || want.other > 0) && i < 1000; i++) {
    const uid = `drain-${process.pid}-${i}`;
    const where = await adminJson(p1, `/admin/v1/sessions/${encodeURIComponent(uid)}/locate`, admin);
    const kind = where.owner === 'node-3' ? 'node-3' : 'other';
    if (want[kind] > 0) {
      want[kind]--;
      picked.push({ uid, owner: where.owner, token: await token(uid, 'chat', secret) });
    }
  }
  check(want['node-3'] === 0 && want.other === 0, `could not find uids for each owner: ${JSON.stringify(want)}`);
  const page = await newPage(context, 'sessions');
  try {
    await page.goto(`http://127.0.0.1:${p1}/`);
    const opened = await page.evaluate(
      ({ sessions, port, timeout }) =>
        Promise.all(
          sessions.map(
            (s, i) =>
              new Promise((resolve, reject) => {
                const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?token=${encodeURIComponent(s.token)}`);
                let node = null;
                const timer = setTimeout(() => reject(new Error(`${s.uid}: no reply within ${timeout} ms`)), timeout);
                ws.onmessage = (e) => {
                  const f = JSON.parse(e.data);
                  if (f.type === 'hello') {
                    node = f.node;
                    ws.send(JSON.stringify({ type: 'say', id: `m-${i}`, text: '40码的红色有货吗？' }));
                  } else if (f.type === 'reply') {
                    clearTimeout(timer);
                    ws.close();
                    resolve({ ...s, node, seq: f.seq, slots: f.slots });
                  } else if (f.type === 'error') {
                    clearTimeout(timer);
                    reject(new Error(`${s.uid}: ${f.code}: ${f.message}`));
                  }
                };
                ws.onerror = () => reject(new Error(`${s.uid}: the socket failed`));
              }),
          ),
        ),
      { sessions: picked, port: p1, timeout: TIMEOUT_MS },
    );
    const per = {};
    for (const s of opened) {
      per[s.node] = (per[s.node] || 0) + 1;
      check(s.node === s.owner, `${s.uid}: hello says node ${s.node}, locate said ${s.owner}`);
      check(String(s.slots.size) === '40' && s.slots.colour === 'red', `${s.uid}: slots ${JSON.stringify(s.slots)}`);
    }
    log(`  ${opened.length} sessions opened with one turn each, owners: ${JSON.stringify(per)}`);
    return opened;
  } finally {
    await page.close();
  }
}

/** After the drain: a session node-3 owned answers on its new owner with its turn and its slots. */
async function checkMovedSession(context, cluster, s) {
  const [, p2] = cluster.ports;
  const page = await newPage(context, 'moved-session');
  try {
    const hello = await chatConnect(page, p2, s.token, s.uid);
    check(hello.node !== 'node-3', `${s.uid} is still on node-3 after the drain`);
    check(hello.lastSeq >= s.seq, `${s.uid}: hello last_seq ${hello.lastSeq} hides the acked turn (reply seq ${s.seq})`);
    const replayed = await waitFor(
      `${s.uid}'s first reply, resumed, in #log`,
      async () => (await chatLog(page)).find((l) => l.cls === 'bot'),
      { describe: () => chatLog(page) },
    );
    const first = parseReply(replayed.text);
    check(String(first.slots.size) === '40' && first.slots.colour === 'red', `${s.uid}: resumed reply ${JSON.stringify(first)}`);
    const reply = await chatSay(page, '换成蓝色的', 1);
    log(`  ${s.uid}, moved from node-3 to ${hello.node}: ${JSON.stringify(reply)}`);
    check(reply.slots.colour === 'blue', `${s.uid}: slot colour ${JSON.stringify(reply.slots.colour)}, expected blue`);
    check(String(reply.slots.size) === '40', `${s.uid}: slot size ${JSON.stringify(reply.slots.size)}, expected 40 kept across the drain`);
  } catch (e) {
    await screenshot(page, 'moved-session-failed.png').catch(() => {});
    throw e;
  } finally {
    await page.close();
  }
}

async function testDashboardDrain(context, cluster, secret) {
  const [p1, , p3] = cluster.ports;
  const admin = await token('ops', 'admin', secret);
  const expectedOwners = Array.from({ length: NODES }, (_, i) => `node-${i + 1}`);

  step(`dashboard on node 1 with an admin token in the URL fragment`);
  const page = await newPage(context, 'dashboard');
  let sessions = [];
  try {
    await page.goto(`http://127.0.0.1:${p1}/dashboard#token=${encodeURIComponent(admin)}`);
    await page.evaluate(() => {
      window.__confabNotReloaded = true;
    });
    const shown = await waitFor(
      `3 member rows and ${NODES * VNODES_PER_NODE} circle.vnode (${VNODES_PER_NODE} for each of ${expectedOwners.join(', ')})`,
      async () => {
        const s = await dashboardState(page);
        const ok =
          s.members.length === NODES &&
          s.rows === NODES &&
          s.vnodes === NODES * VNODES_PER_NODE &&
          expectedOwners.every((o) => s.owners[o] === VNODES_PER_NODE) &&
          Object.keys(s.owners).length === NODES &&
          s.members.every((m) => m.status === 'up');
        return ok ? s : null;
      },
      { describe: () => dashboardState(page) },
    );
    log(`  shown: ${JSON.stringify(shown)}`);
    check(
      JSON.stringify(shown.members.map((m) => m.id).sort()) === JSON.stringify(expectedOwners),
      `member rows ${JSON.stringify(shown.members)}, expected ${expectedOwners.join(', ')}`,
    );
    check(!shown.error, `#error shows ${JSON.stringify(shown.error)} with a good token`);

    // The figures agree with the admin API (waited for: the page catches up within a refresh).
    const api = await adminJson(p1, '/admin/v1/status', admin);
    const ring = await adminJson(p1, '/admin/v1/ring', admin);
    await waitFor(
      `#epoch = ${ring.epoch}, #dlq = ${api.dlq_depth}, #policy = ${api.policy.canary.stable} (the admin API's)`,
      async () => {
        const s = await dashboardState(page);
        return s.epoch === String(ring.epoch) && s.dlq === String(api.dlq_depth) && s.policy === String(api.policy.canary.stable);
      },
      { describe: () => dashboardState(page) },
    );
    const facts = await dashboardState(page);
    check(facts.canary && facts.canary !== '-', `#canary shows nothing: ${JSON.stringify(facts.canary)}`);
    check(/^\d+$/.test(facts.migrations), `#migrations is not a count: ${JSON.stringify(facts.migrations)}`);
    await waitForRefreshes(page, 2);
    await screenshot(page, 'dashboard.png');

    sessions = await openSessions(context, cluster, secret, admin, { onDrained: 3, others: 6 });

    const before = await dashboardState(page);
    step(`confabctl nodes drain node-3 (the dashboard stays open, not reloaded)`);
    // Sample the open page while the drain runs: what it showed on the way, for the log.
    const seen = new Set();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          const s = await dashboardState(page);
          for (const m of s.members) seen.add(`${m.id}:${m.status}`);
        } catch (_) {}
        await sleep(200);
      }
    })();
    const drainArgs = ['--node', `http://127.0.0.1:${p1}`, '--token', admin, 'nodes', 'drain', 'node-3', '--wait-s', String(Math.max(60, Math.round(TIMEOUT_MS / 1000)))];
    const drain = await run(CONFABCTL, drainArgs, { timeout: TIMEOUT_MS + 60_000 });
    sampling = false;
    await sampler;
    log(`  confabctl exit ${drain.code}: ${drain.stdout.trim()} ${drain.stderr.trim()}`);
    log(`  member states the open dashboard showed during the drain: ${[...seen].sort().join(', ')}`);
    check(drain.code === 0, `confabctl nodes drain node-3 failed (exit ${drain.code}):\n${drain.stdout}${drain.stderr}`);

    const drained = await waitFor(
      `the open dashboard to show 2 members and ${2 * VNODES_PER_NODE} vnodes, none owned by node-3`,
      async () => {
        const s = await dashboardState(page);
        const ok =
          s.members.length === NODES - 1 &&
          s.rows === NODES - 1 &&
          !s.members.some((m) => m.id === 'node-3') &&
          s.vnodes === (NODES - 1) * VNODES_PER_NODE &&
          !('node-3' in s.owners) &&
          s.owners['node-1'] === VNODES_PER_NODE &&
          s.owners['node-2'] === VNODES_PER_NODE;
        return ok ? s : null;
      },
      { describe: () => dashboardState(page) },
    );
    log(`  shown: ${JSON.stringify(drained)}`);
    check(drained.notReloaded, 'the dashboard page was reloaded (the marker set before the drain is gone)');
    check(!drained.error, `#error shows ${JSON.stringify(drained.error)} after the drain`);
    check(
      Number(drained.epoch) > Number(before.epoch),
      `#epoch ${drained.epoch} did not move past ${before.epoch} when node-3 left`,
    );
    check(drained.refreshes > before.refreshes, 'body[data-refreshes] did not grow during the drain');
    const ringAfter = await adminJson(p1, '/admin/v1/ring', admin);
    await waitFor(`#epoch = ${ringAfter.epoch} (the admin API's after the drain)`, async () => {
      const s = await dashboardState(page);
      return s.epoch === String(ringAfter.epoch);
    }, { describe: () => dashboardState(page) });
    await screenshot(page, 'dashboard-drained.png');
    check(page.pageErrors.length === 0, `the dashboard threw: ${page.pageErrors.join('; ')}`);
  } catch (e) {
    await screenshot(page, 'dashboard-failed.png').catch(() => {});
    throw e;
  } finally {
    await page.close();
  }

  step('the sessions node-3 owned answer on their new owners with their slots');
  for (const s of sessions.filter((s) => s.node === 'node-3')) await checkMovedSession(context, cluster, s);

  step('what confab up does with the drained node');
  await waitFor(
    'confab up to say that node-3 left the cluster and stopped',
    () => /node-3 left the cluster and stopped/.test(cluster.output),
    { describe: () => tail(cluster.output, 15) },
  );
  log('  confab up: "node-3 left the cluster and stopped"');
  const health = await http(p3, '/healthz');
  log(`  node-3's /healthz (:${p3}) now: ${health.status === 0 ? `no answer (${health.error})` : `HTTP ${health.status}`}`);
  check(health.status === 0, `node-3 still answers on :${p3} after it left: HTTP ${health.status}`);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  rmSync(path.join(SHOTS, 'confab-up.log'), { force: true });
  for (const [name, file] of [['confab', CONFAB], ['confabctl', CONFABCTL], ['chromium', CHROMIUM]]) {
    check(existsSync(file), `${name} not found at ${file}`);
  }
  const version = await run(CONFAB, ['--version']);
  log(`${version.stdout.trim()} from ${BIN_DIR}; screenshots and the cluster log in ${SHOTS}`);

  const cluster = new Cluster();
  let context = null;
  const failures = [];
  const passed = [];

  const emergency = () => cluster.killNow();
  process.on('exit', emergency);
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, async () => {
      if (interrupted) return;
      interrupted = true;
      console.error(`${stamp()} ${sig}: stopping the cluster and exiting`);
      await context?.close().catch(() => {});
      await cluster.stop().catch(() => {});
      cluster.removeTmp();
      process.exit(130);
    });
  }
  const watchdog = setTimeout(() => {
    console.error(`${stamp()} error: the browser tests ran past ${WATCHDOG_MS / 60000} minutes: killing the cluster`);
    cluster.killNow();
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();

  const test = async (name, fn) => {
    step(`TEST ${name}`);
    const began = Date.now();
    try {
      await fn();
      passed.push(name);
      log(`ok   ${name} (${((Date.now() - began) / 1000).toFixed(1)}s)`);
      return true;
    } catch (e) {
      failures.push(name);
      log(`FAIL ${name}: ${e instanceof Failure ? e.message : e.stack}`);
      return false;
    }
  };

  try {
    let secret = null;
    const up = await test('confab up: a 3-node cluster, every /readyz 200', async () => {
      await cluster.start();
      secret = cluster.secret();
      log(`dev JWT secret read from ${path.join(cluster.dataDir, 'dev-jwt-secret')}`);
      context = await launchBrowser(path.join(cluster.tmp, 'chromium-profile'));
    });
    if (up) {
      await test('chat page: a turn fills size and colour; another node resumes it and keeps the slots', () =>
        testChat(context, cluster, secret));
      const dash = await http(cluster.httpPort, '/dashboard');
      if (dash.status !== 200) {
        failures.push('dashboard');
        log(`FAIL dashboard: GET /dashboard answers HTTP ${dash.status || dash.error}: this binary has no dashboard`);
      } else {
        await test('dashboard: a wrong token or a chat-only token shows #error and no data', () =>
          testDashboardRefuses(context, cluster, secret));
        await test('dashboard: 3 members and 96 vnodes, then follows a drain of node-3 without a reload', () =>
          testDashboardDrain(context, cluster, secret));
      }
    }
  } finally {
    if (context) await context.close().catch((e) => log(`closing Chromium: ${e.message}`));
    const restarted = /node-3 restarted/.test(cluster.output);
    const stopped = await cluster.stop().catch((e) => {
      log(`stopping the cluster: ${e.message}`);
      return null;
    });
    if (restarted) {
      failures.push('drained node let go');
      log('FAIL drained node let go: confab up restarted node-3 after it drained and left');
    }
    if (stopped && stopped.seconds > 0 && (stopped.killed || stopped.code !== 0)) {
      failures.push('clean stop');
      log(`FAIL clean stop: confab up after SIGINT: ${JSON.stringify(stopped)}`);
    }
    cluster.removeTmp();
    process.off('exit', emergency);
    if (failures.length) {
      log(`the cluster log (last 60 lines of ${cluster.logPath}):\n${tail(cluster.output, 60)}`);
    }
  }
  log(`${passed.length} passed, ${failures.length} failed${failures.length ? `: ${failures.join('; ')}` : ''}`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`${stamp()} error: ${e.stack || e}`);
    process.exit(1);
  },
);
