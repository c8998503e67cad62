import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool, request } from 'undici';
import { EST_MEDIA, decodeBase64Body, decodeCertsOnly, normalizeSerial } from '@rampart/shared/pki';
import { freshDatabase, type BenchDatabase } from './lib/databases.js';
import { closedLoop, fixedCount } from './lib/load.js';
import {
  OpensslCa,
  assertSameAsOpenssl,
  certIdTemplate,
  makeCsrs,
  ocspRequest,
  ocspSingleStatus,
  ocspSuccessful,
  opensslVerifyOcsp,
  type CertIdTemplate,
  type DeviceCsr,
} from './lib/pki.js';
import { startRampart, type RunningRampart } from './lib/processes.js';
import { record } from './lib/report.js';
import { createSoftHsmToken, type BenchToken } from './lib/softhsm.js';
import { fmt, median, percentile } from './lib/stats.js';

const CONCURRENCY = 16;
const ROUNDS = 3;
/** `openssl ocsp -multi`: one responder process per core of the 2-core reference machine. */
const OPENSSL_OCSP_PROCESSES = 2;
const ENROLL_TARGET = 1000;
const OCSP_TARGET = 5000;

/** What users compare a CA with: published figures, printed beside the results, never measured here. */
export const PUBLISHED =
  'managed IoT services allow 10–15 certificate registrations per second per account; ' +
  'self-hosted CAs report 20–200 issuances per second';

type KeyStoreKind = 'file' | 'pkcs11';
const KINDS: KeyStoreKind[] = ['file', 'pkcs11'];
const LABEL: Record<KeyStoreKind, string> = { file: 'file key store', pkcs11: 'PKCS#11 (SoftHSM2)' };

interface Issuing {
  pemFile: string;
  /** Root and issuing CA, for openssl to verify OCSP answers. */
  chainFile: string;
  x509: X509Certificate;
  template: CertIdTemplate;
}

interface Server {
  kind: KeyStoreKind;
  rampart: RunningRampart;
  est: Pool;
  estPath: string;
  pki: Pool;
  issuing: Issuing | null;
  stop(): Promise<void>;
}

interface Throughput {
  rate: number;
  p50: number;
  p99: number;
}

interface ServerRound {
  enroll: Throughput;
  /** Each certificate's first OCSP request: looked up and signed. */
  ocspFirst: Throughput;
  /** Repeated requests for the same certificates for a few seconds: pre-signed answers. */
  ocsp: Throughput;
}

interface Round {
  servers: Record<KeyStoreKind, ServerRound>;
  opensslCa: number;
  opensslOcsp: Throughput;
}

const through = (r: { completed: number; seconds: number; latenciesMs: number[] }): Throughput => ({
  rate: r.completed / r.seconds,
  p50: percentile(r.latenciesMs, 50),
  p99: percentile(r.latenciesMs, 99),
});

const loadNow = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ');

const say = (line: string) => process.stdout.write(`  ${line}\n`);

async function startServer(kind: KeyStoreKind, cpuProfDir: string | undefined): Promise<Server> {
  const db: BenchDatabase = await freshDatabase('sqlite');
  const token: BenchToken | null = kind === 'pkcs11' ? createSoftHsmToken() : null;
  // SQLite with its default durability (synchronous = full): every enrollment is on disk when answered.
  const settings: Record<string, string> = {};
  if (token)
    Object.assign(settings, {
      'keystore.backend': 'pkcs11',
      'keystore.pkcs11.module': token.module,
      'keystore.pkcs11.tokenLabel': token.tokenLabel,
    });
  let rampart: RunningRampart;
  try {
    rampart = await startRampart(db.dir, db.url, settings, {
      env: token ? { ...token.env, RAMPART_KEYSTORE_PASSPHRASE: undefined } : {},
      nodeArgs: cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', join(cpuProfDir, kind)] : [],
    });
  } catch (err) {
    token?.cleanup();
    await db.drop();
    throw err;
  }
  const estUrl = new URL(rampart.listeners.est!);
  // HTTPS keep-alive with the platform's root pinned, as a device's EST client would.
  const est = new Pool(estUrl.origin, {
    connect: { ca: readFileSync(join(db.dir, 'ca.pem'), 'utf8') },
    connections: CONCURRENCY,
  });
  const pki = new Pool(rampart.listeners.pki!, { connections: CONCURRENCY });
  return {
    kind,
    rampart,
    est,
    estPath: estUrl.pathname,
    pki,
    issuing: null,
    async stop() {
      await est.close();
      await pki.close();
      await rampart.stop();
      token?.cleanup();
      await db.drop();
    },
  };
}

async function api(server: Server, method: 'POST', path: string, body: string, contentType: string) {
  const r = server.rampart;
  const res = await request(`${r.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${r.token}`, 'content-type': contentType },
    body,
    dispatcher: r.dispatcher,
  });
  const text = await res.body.text();
  return { status: res.statusCode, text };
}

/** Devices through the bulk import and one enrollment token each through the API: setup, not measured. */
async function registerDevices(server: Server, ids: readonly string[]): Promise<string[]> {
  const csv = ['id,model', ...ids.map((id) => `${id},DW100`)].join('\n') + '\n';
  const imported = await api(server, 'POST', '/api/v1/devices/import', csv, 'text/csv');
  if (imported.status !== 200) throw new Error(`device import failed: ${imported.status} ${imported.text}`);
  const tokens: string[] = new Array<string>(ids.length);
  const made = await fixedCount({
    concurrency: CONCURRENCY,
    count: ids.length,
    request: async (n) => {
      const r = await api(
        server,
        'POST',
        '/api/v1/enrollment-tokens',
        JSON.stringify({ deviceId: ids[n], expiresIn: '6h' }),
        'application/json',
      );
      if (r.status !== 201) throw new Error(`enrollment token for ${ids[n]} failed: ${r.status} ${r.text}`);
      tokens[n] = (JSON.parse(r.text) as { token: string }).token;
      return true;
    },
  });
  if (made.failed) throw new Error(`${made.failed} enrollment tokens failed`);
  return tokens;
}

/** EST simpleenroll for each CSR (HTTP Basic device:token); every answer must be 200. Returns the certificates. */
async function enroll(
  server: Server,
  csrs: readonly DeviceCsr[],
  tokens: readonly string[],
): Promise<{ result: Throughput; certs: X509Certificate[] }> {
  const auth = csrs.map((c, i) => `Basic ${Buffer.from(`${c.id}:${tokens[i]}`).toString('base64')}`);
  const bodies: string[] = new Array<string>(csrs.length);
  let firstFailure = '';
  const r = await fixedCount({
    concurrency: CONCURRENCY,
    count: csrs.length,
    request: async (n) => {
      const res = await server.est.request({
        method: 'POST',
        path: `${server.estPath}/simpleenroll`,
        headers: { authorization: auth[n]!, 'content-type': EST_MEDIA.pkcs10 },
        body: csrs[n]!.body,
      });
      bodies[n] = await res.body.text();
      if (res.statusCode !== 200) firstFailure ||= `${res.statusCode} ${bodies[n]}`;
      return res.statusCode === 200;
    },
  });
  if (r.failed) throw new Error(`${r.failed} of ${csrs.length} enrollments failed; first: ${firstFailure}`);
  const certs = bodies.map((b, i) => {
    const [der, ...rest] = decodeCertsOnly(decodeBase64Body(b, 'PKCS#7'));
    if (!der || rest.length) throw new Error(`enrollment ${i} did not return exactly one certificate`);
    const x = new X509Certificate(der);
    if (!x.subject.split('\n').includes(`CN=${csrs[i]!.id}`))
      throw new Error(`certificate ${i} is for ${x.subject}, not ${csrs[i]!.id}`);
    return x;
  });
  return { result: through(r), certs };
}

/** The issuing CA from EST cacerts, and the CertID hashes openssl puts in requests for its certificates. */
async function learnIssuer(server: Server, cert: X509Certificate, scratch: string): Promise<Issuing> {
  const res = await server.est.request({ method: 'GET', path: `${server.estPath}/cacerts` });
  const cas = decodeCertsOnly(decodeBase64Body(await res.body.text(), 'PKCS#7')).map(
    (d) => new X509Certificate(d),
  );
  const x509 = cas.find((c) => cert.checkIssued(c) && cert.verify(c.publicKey));
  if (!x509) throw new Error(`no CA from cacerts issued ${cert.subject}`);
  const pemFile = join(scratch, `${server.kind}-issuing.pem`);
  const chainFile = join(scratch, `${server.kind}-chain.pem`);
  writeFileSync(pemFile, x509.toString());
  writeFileSync(chainFile, cas.map((c) => c.toString()).join(''));
  const template = certIdTemplate(pemFile, scratch);
  return { pemFile, chainFile, x509, template };
}

/** Issued certificates verify under the issuing CA (a sample of them: every 50th and the last). */
function verifySample(certs: readonly X509Certificate[], issuing: X509Certificate): void {
  certs.forEach((c, i) => {
    if ((i % 50 === 0 || i === certs.length - 1) && !(c.checkIssued(issuing) && c.verify(issuing.publicKey)))
      throw new Error(`certificate ${c.serialNumber} does not verify under ${issuing.subject}`);
  });
}

/**
 * POST one OCSP request after another from CONCURRENCY clients over HTTP keep-alive: every request
 * once (`count`), or round and round for `durationMs`. Every answer must be a successful
 * OCSPResponse; a sample is parsed in full and must say "good" for the serial asked about.
 */
async function ocspLoad(
  pool: Pool,
  path: string,
  requests: readonly Buffer[],
  serials: readonly string[],
  mode: { count: number } | { durationMs: number },
): Promise<{ result: Throughput; sample: Buffer }> {
  const samples: [number, Buffer][] = [];
  let firstFailure = '';
  const one = async (n: number) => {
    const i = n % requests.length;
    const res = await pool.request({
      method: 'POST',
      path,
      headers: { 'content-type': 'application/ocsp-request' },
      body: requests[i]!,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    const ok = res.statusCode === 200 && ocspSuccessful(body);
    if (!ok) firstFailure ||= `${res.statusCode} ${body.toString('hex').slice(0, 40)}`;
    if (n % 211 === 0 && samples.length < 50) samples.push([i, body]);
    return ok;
  };
  const r =
    'count' in mode
      ? await fixedCount({ concurrency: CONCURRENCY, count: mode.count, request: one })
      : await closedLoop({ concurrency: CONCURRENCY, durationMs: mode.durationMs, request: one });
  if (r.failed)
    throw new Error(`${r.failed} of ${r.failed + r.completed} OCSP requests failed; first: ${firstFailure}`);
  for (const [i, der] of samples) {
    const s = ocspSingleStatus(der);
    if (s.serial !== serials[i] || s.status !== 'good')
      throw new Error(`OCSP answer for ${serials[i]} says ${s.serial} is ${s.status}`);
  }
  return { result: through(r), sample: samples[0]![1] };
}

export async function benchCa(options: { quick: boolean; cpuProfDir?: string }): Promise<void> {
  const n = options.quick ? 600 : 3000;
  const warm = options.quick ? 48 : 160;
  const ocspMs = options.quick ? 3000 : 5000;
  const scratch = mkdtempSync(join(tmpdir(), 'rampart-bench-ca-'));
  const servers: Server[] = [];
  const rounds: Round[] = [];
  say(`load average at start (1/5/15 min): ${loadNow()}`);
  try {
    for (const kind of KINDS) servers.push(await startServer(kind, options.cpuProfDir));
    for (const s of servers) {
      const m = await api(
        s,
        'POST',
        '/api/v1/device-models',
        JSON.stringify({ id: 'DW100', name: 'Door sensor' }),
        'application/json',
      );
      if (m.status !== 201) throw new Error(`creating the model failed: ${m.status} ${m.text}`);
    }
    const peer = new OpensslCa(join(scratch, 'openssl-ca'));
    const peerTemplate = certIdTemplate(peer.caPem, scratch);

    for (let round = 1; round <= ROUNDS; round++) {
      say(
        `round ${round} of ${ROUNDS}: ${n.toLocaleString('en-US')} enrollments per key store, load average ${loadNow()}`,
      );
      const ids = Array.from({ length: warm + n }, (_, i) => `ca-r${round}-${String(i).padStart(6, '0')}`);
      // Same devices and CSRs on both platforms (each has its own registry) and for openssl ca.
      const csrs = await makeCsrs(ids);
      const measured = csrs.slice(warm);
      const result = { servers: {} } as Round;

      for (const s of servers) {
        const tokens = await registerDevices(s, ids);
        // Warm-up: connections, TLS sessions, JIT, SQLite page cache.
        const w = await enroll(s, csrs.slice(0, warm), tokens.slice(0, warm));
        s.issuing ??= await learnIssuer(s, w.certs[0]!, scratch);
        const e = await enroll(s, measured, tokens.slice(warm));
        verifySample(e.certs, s.issuing.x509);
        const serials = e.certs.map((c) => normalizeSerial(c.serialNumber));
        assertSameAsOpenssl(s.issuing.template, s.issuing.pemFile, serials[0]!, scratch);
        const reqs = serials.map((serial) => ocspRequest(s.issuing!.template, serial));
        const first = await ocspLoad(s.pki, '/ocsp', reqs, serials, { count: reqs.length });
        const steady = await ocspLoad(s.pki, '/ocsp', reqs, serials, { durationMs: ocspMs });
        const verified = opensslVerifyOcsp(
          first.sample,
          s.issuing.chainFile,
          s.issuing.pemFile,
          serials[0]!,
          scratch,
        );
        if (!verified.endsWith('good'))
          throw new Error(`openssl does not accept Rampart's OCSP answer: ${verified}`);
        result.servers[s.kind] = { enroll: e.result, ocspFirst: first.result, ocsp: steady.result };
        say(
          `${LABEL[s.kind]}: ${fmt(e.result.rate)} enrollments/s (p50 ${fmt(e.result.p50, 1)} ms, p99 ${fmt(e.result.p99, 1)} ms); ` +
            `OCSP ${fmt(steady.result.rate)} responses/s (p50 ${fmt(steady.result.p50, 1)} ms, p99 ${fmt(steady.result.p99, 1)} ms), ` +
            `first answer per certificate ${fmt(first.result.rate)}/s`,
        );
      }

      // Peers: openssl ca issuing from the same CSRs, then openssl ocsp answering for what it issued.
      const issued = await peer.issue(measured);
      result.opensslCa = measured.length / issued.seconds;
      assertSameAsOpenssl(peerTemplate, peer.caPem, issued.serials[0]!, scratch);
      const peerReqs = issued.serials.map((serial) => ocspRequest(peerTemplate, serial));
      const responder = await peer.startResponder(OPENSSL_OCSP_PROCESSES);
      const peerClient = new Pool(responder.url, { connections: CONCURRENCY });
      try {
        const r = await ocspLoad(peerClient, '/', peerReqs, issued.serials, { durationMs: ocspMs });
        result.opensslOcsp = r.result;
      } finally {
        await peerClient.close();
        await responder.stop();
      }
      say(
        `openssl ca: ${fmt(result.opensslCa)} issuances/s; openssl ocsp -multi ${OPENSSL_OCSP_PROCESSES}: ` +
          `${fmt(result.opensslOcsp.rate)} responses/s (p50 ${fmt(result.opensslOcsp.p50, 1)} ms, p99 ${fmt(result.opensslOcsp.p99, 1)} ms)`,
      );
      rounds.push(result);
    }
  } finally {
    for (const s of servers)
      await s.stop().catch((err: unknown) => say(`stopping ${s.kind}: ${String(err)}`));
    rmSync(scratch, { recursive: true, force: true });
  }
  report(rounds, n, ocspMs);
}

function report(rounds: readonly Round[], n: number, ocspMs: number): void {
  const med = (f: (r: Round) => number) => median(rounds.map(f));
  const caPeer = med((r) => r.opensslCa);
  const ocspPeer = med((r) => r.opensslOcsp.rate);
  const of = `median of ${rounds.length} rounds`;
  for (const kind of KINDS) {
    const s = (f: (x: ServerRound) => number) => med((r) => f(r.servers[kind]));
    record({
      bench: 'ca: EST simpleenroll',
      dialect: `sqlite, ${LABEL[kind]}`,
      metric: `${fmt(n)} enrollments, ${CONCURRENCY} concurrent over HTTPS keep-alive, ${of} (p50 ${fmt(
        s((x) => x.enroll.p50),
        1,
      )} ms, p99 ${fmt(
        s((x) => x.enroll.p99),
        1,
      )} ms)`,
      value: s((x) => x.enroll.rate),
      unit: 'certificates/s',
      target: { op: '>=', value: ENROLL_TARGET, advisory: true },
      peer: { name: `openssl ca -batch -infiles (${fmt(n)} CSRs, one process)`, value: caPeer },
    });
    record({
      bench: 'ca: OCSP',
      dialect: `sqlite, ${LABEL[kind]}`,
      metric: `POST /ocsp, no nonce, ${CONCURRENCY} concurrent over HTTP keep-alive, ${ocspMs / 1000} s over ${fmt(n)} certificates, ${of} (p50 ${fmt(
        s((x) => x.ocsp.p50),
        1,
      )} ms, p99 ${fmt(
        s((x) => x.ocsp.p99),
        1,
      )} ms)`,
      value: s((x) => x.ocsp.rate),
      unit: 'responses/s',
      target: { op: '>=', value: OCSP_TARGET, advisory: true },
      peer: { name: `openssl ocsp -multi ${OPENSSL_OCSP_PROCESSES}`, value: ocspPeer },
    });
    record({
      bench: 'ca: OCSP, first answer per certificate',
      dialect: `sqlite, ${LABEL[kind]}`,
      metric: `each of ${fmt(n)} certificates asked once (looked up and signed), ${of} (p50 ${fmt(
        s((x) => x.ocspFirst.p50),
        1,
      )} ms, p99 ${fmt(
        s((x) => x.ocspFirst.p99),
        1,
      )} ms)`,
      value: s((x) => x.ocspFirst.rate),
      unit: 'responses/s',
      peer: { name: `openssl ocsp -multi ${OPENSSL_OCSP_PROCESSES}`, value: ocspPeer },
    });
  }

  const row = (cells: string[]) => process.stdout.write(`  | ${cells.join(' | ')} |\n`);
  const cell = (t: Throughput) => `${fmt(t.rate)}/s (p50 ${fmt(t.p50, 1)} ms, p99 ${fmt(t.p99, 1)} ms)`;
  const medT = (f: (r: Round) => Throughput): Throughput => ({
    rate: med((r) => f(r).rate),
    p50: med((r) => f(r).p50),
    p99: med((r) => f(r).p99),
  });
  const ratio = (kind: KeyStoreKind, f: (x: ServerRound) => number, peer: number) =>
    fmt(med((r) => f(r.servers[kind])) / peer, 2);
  const met = (v: number, t: number) => (v >= t ? 'met' : 'MISSED');
  process.stdout.write(
    `\n  CA throughput, ${of}, ${CONCURRENCY} concurrent clients, SQLite (synchronous = full)\n`,
  );
  row([
    'measurement',
    'file key store',
    'PKCS#11 (SoftHSM2)',
    'peer (same run)',
    'Rampart ÷ peer (file / PKCS#11)',
    'target',
  ]);
  row(['---', '---:', '---:', '---:', '---:', '---']);
  const e = (k: KeyStoreKind) => medT((r) => r.servers[k].enroll);
  const o = (k: KeyStoreKind) => medT((r) => r.servers[k].ocsp);
  const f = (k: KeyStoreKind) => medT((r) => r.servers[k].ocspFirst);
  const peerOcsp = medT((r) => r.opensslOcsp);
  row([
    `EST simpleenroll, ${fmt(n)} devices`,
    cell(e('file')),
    cell(e('pkcs11')),
    `openssl ca: ${fmt(caPeer)} issuances/s`,
    `${ratio('file', (x) => x.enroll.rate, caPeer)} / ${ratio('pkcs11', (x) => x.enroll.rate, caPeer)}`,
    `≥ ${fmt(ENROLL_TARGET)}/s: ${met(e('file').rate, ENROLL_TARGET)} / ${met(e('pkcs11').rate, ENROLL_TARGET)}`,
  ]);
  row([
    `OCSP, ${ocspMs / 1000} s of repeated requests`,
    cell(o('file')),
    cell(o('pkcs11')),
    `openssl ocsp -multi ${OPENSSL_OCSP_PROCESSES}: ${cell(peerOcsp)}`,
    `${ratio('file', (x) => x.ocsp.rate, ocspPeer)} / ${ratio('pkcs11', (x) => x.ocsp.rate, ocspPeer)}`,
    `≥ ${fmt(OCSP_TARGET)}/s: ${met(o('file').rate, OCSP_TARGET)} / ${met(o('pkcs11').rate, OCSP_TARGET)}`,
  ]);
  row([
    'OCSP, first answer per certificate (signed)',
    cell(f('file')),
    cell(f('pkcs11')),
    `openssl ocsp -multi ${OPENSSL_OCSP_PROCESSES} (signs every answer)`,
    `${ratio('file', (x) => x.ocspFirst.rate, ocspPeer)} / ${ratio('pkcs11', (x) => x.ocspFirst.rate, ocspPeer)}`,
    '-',
  ]);
  process.stdout.write(`  Published, not measured here: ${PUBLISHED}.\n`);
  process.stdout.write(`  Load average at the end (1/5/15 min): ${loadNow()}\n`);
}
