import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createReadStream, statSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Transform } from 'node:stream';
import { Command, Option } from 'commander';
import {
  RELEASE_STATES,
  type DirectorRotationView,
  type ReleaseView,
  type RepositoryView,
  type SigningRequestView,
} from '@rampart/shared/api';
import {
  ARTIFACT_KINDS,
  DETACHED_SIGNATURE_FORMAT,
  isTopLevelRole,
  signDetached,
  tufKeyId,
  tufKeyOf,
  unsupportedKeyProblem,
  type DetachedSignature,
} from '@rampart/shared/updates';
import { collect, globalsOf, withExamples } from '../command.js';
import { withClient, type ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import {
  color,
  counter as secondsCounter,
  output,
  printFields,
  printJson,
  printTable,
  progress,
  shortTime,
} from '../output.js';
import { mustNotExist, readJson, readText } from './files.js';

/** What `rampart release request ID --out FILE` writes: the document to sign and what it is. */
export const SIGNING_REQUEST_FORMAT = 'rampart-tuf-signing-request/1';

interface SigningRequestFile {
  format: typeof SIGNING_REQUEST_FORMAT;
  id: number;
  role: string;
  version: number;
  metadata: { signed: Record<string, unknown>; signatures: unknown[] };
}

const PASSPHRASE_ENV = 'RAMPART_RELEASE_KEY_PASSPHRASE';

function readPrivateKey(path: string): KeyObject {
  const pem = readText(path, 'release key');
  let key: KeyObject;
  try {
    key = createPrivateKey(
      process.env[PASSPHRASE_ENV] ? { key: pem, passphrase: process.env[PASSPHRASE_ENV] } : { key: pem },
    );
  } catch (err) {
    const encrypted = pem.includes('ENCRYPTED');
    throw new CliError(`${path} is not a usable private key: ${(err as Error).message}`, EXIT.usage, [
      encrypted
        ? `the key is encrypted: set ${PASSPHRASE_ENV} to its passphrase`
        : 'expected a PEM private key (PKCS#8), as `rampart release keygen` writes',
    ]);
  }
  const problem = unsupportedKeyProblem(key);
  if (problem) throw new CliError(`${path}: ${problem}`, EXIT.usage);
  return key;
}

function readPublicKeyFile(path: string): KeyObject {
  const text = readText(path, 'public key');
  try {
    return createPublicKey(text);
  } catch {
    throw new CliError(`${path} is not a PEM public (or private) key`, EXIT.usage);
  }
}

/** The metadata to sign and its role: a signing-request file, or a bare TUF document with --role. */
function readToSign(path: string, role?: string): { role: string; doc: SigningRequestFile['metadata'] } {
  const json = readJson(path, 'metadata') as Partial<SigningRequestFile> &
    Partial<SigningRequestFile['metadata']>;
  if (json.format === SIGNING_REQUEST_FORMAT && json.metadata && typeof json.role === 'string') {
    if (role && role !== json.role)
      throw new CliError(`${path} is a request for role ${json.role}, not ${role}`, EXIT.usage);
    return { role: json.role, doc: json.metadata };
  }
  const signed = json.signed;
  if (
    !signed ||
    typeof signed !== 'object' ||
    typeof signed.version !== 'number' ||
    typeof signed._type !== 'string'
  )
    throw new CliError(`${path} is neither a signing request nor TUF metadata`, EXIT.usage, [
      'download one with `rampart release request ID --out FILE`',
    ]);
  const type = signed._type as string;
  const name = role ?? type;
  if (!isTopLevelRole(type) || (type !== 'targets' && name !== type))
    throw new CliError(`${path} is ${type} metadata, which role ${name} cannot be`, EXIT.usage);
  return { role: name, doc: json as SigningRequestFile['metadata'] };
}

function counting(path: string, opts: { json?: boolean }): Transform {
  const bar = progress(`uploading ${basename(path)}`, statSync(path).size, opts);
  return new Transform({
    transform(chunk: Buffer, _e, done) {
      bar.increment(chunk.length);
      done(null, chunk);
    },
    flush(done) {
      bar.stop();
      done();
    },
  });
}

const STATE_TEXT: Record<ReleaseView['state'], string> = {
  published: color.green('published'),
  pending: color.yellow('pending signatures'),
  preparing: color.yellow('preparing deltas'),
  failed: color.red('failed'),
};

function deltasText(r: ReleaseView): string {
  return r.deltas
    .map((d) => `from ${d.fromVersion}: ${d.length} B (${(d.ratio * 100).toFixed(1)}%)`)
    .join(', ');
}

/** Poll a release until it leaves `preparing` (deltas being generated), with a line of seconds waited on standard error. */
async function untilPrepared(
  client: ApiClient,
  release: ReleaseView,
  opts: { json?: boolean },
): Promise<ReleaseView> {
  const line = secondsCounter('generating deltas from earlier releases, seconds', opts, 0);
  try {
    while (release.state === 'preparing') {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      line.increment(1);
      const list = await client.get<{ items: ReleaseView[] }>('/api/v1/updates/releases', {
        path: release.path,
      });
      if (!list.items[0])
        throw new CliError(
          `release ${release.path} is gone; see rampart audit for what happened`,
          EXIT.failed,
        );
      release = list.items[0];
    }
  } finally {
    line.stop();
  }
  return release;
}

function printRelease(r: ReleaseView): void {
  printFields([
    ['Path', r.path],
    ['State', STATE_TEXT[r.state] ?? r.state],
    ['Role', r.role],
    ['Version', r.version],
    ['Kind', r.custom.kind],
    ['Models', r.custom.models.join(', ')],
    ['Hardware', r.custom.hardwareRevisions?.join(', ') ?? 'any revision'],
    ['Counter', r.custom.releaseCounter],
    ['SHA-256', r.sha256],
    ['Length', r.length],
    [
      'Encrypted',
      r.custom.encryption
        ? `yes (AES-256-GCM; plaintext ${r.custom.encryption.length} bytes, SHA-256 ${r.custom.encryption.sha256})`
        : 'no',
    ],
    ['Download', r.url ?? '-'],
    ['Deltas', r.state === 'preparing' ? 'being generated' : deltasText(r) || 'none'],
    ...(r.signingRequest !== null ? ([['Request', r.signingRequest]] as [string, unknown][]) : []),
    ...(r.failure ? ([['Failure', r.failure]] as [string, unknown][]) : []),
  ]);
  if (r.signingRequest !== null)
    process.stdout.write(
      `\nIt is published once enough keys sign request ${r.signingRequest}:\n` +
        `  rampart release request ${r.signingRequest} --out req.json   # then, on the signing machine:\n` +
        `  rampart release sign req.json --key KEY.pem --out sig.json\n` +
        `  rampart release submit sig.json\n`,
    );
}

function printRequest(r: SigningRequestView): void {
  printFields([
    ['Request', r.id],
    ['Role', `${r.role} v${r.version}`],
    ['State', r.state],
    ['Reason', r.reason],
    ['Signed by', r.signedBy.length ? r.signedBy.map((k) => k.slice(0, 16)).join(', ') : '-'],
    ['Digest', r.signedDigest],
    ['Created', `${shortTime(r.createdAt)} by ${r.createdBy}`],
  ]);
  for (const m of r.missing)
    process.stdout.write(
      `needs ${m.needed} more signature(s) for ${m.role} from: ${m.keyIds.map((k) => k.slice(0, 16)).join(', ')}\n`,
    );
}

export function releaseCommand(): Command {
  const cmd = new Command('release').description(
    'The TUF release repository: publish releases, approve them with offline keys (M-of-N), manage roles',
  );

  withExamples(
    cmd
      .command('create')
      .description('Upload an artifact and publish it as a release (a TUF target)')
      .argument('<file>', 'the artifact')
      .requiredOption('--version <version>', 'release version, e.g. 1.4.2')
      .option('--model <model>', 'compatible device model (repeatable; at least one)', collect)
      .option('--name <name>', 'software name (default: the file name without extension)')
      .addOption(
        new Option('--kind <kind>', 'what it installs').choices([...ARTIFACT_KINDS]).default('firmware'),
      )
      .option('--hardware-revision <rev>', 'compatible hardware revision (repeatable; default all)', collect)
      .option(
        '--release-counter <n>',
        'anti-rollback counter (default: one more than the highest for the model)',
      )
      .option('--dependency <dep>', 'NAME or NAME>=VERSION it needs installed (repeatable)', collect)
      .option(
        '--measurement <component=sha256>',
        'reference measurement of a component it runs (repeatable)',
        collect,
      )
      .option('--path <path>', 'TUF target path (default <model>/<name>-<version><ext>)')
      .option(
        '--encrypt',
        'store and serve it encrypted (AES-256-GCM; each device gets the key wrapped to its own key) even ' +
          'when no model requires it (rampart model update M --encrypt-updates); always so when one does',
      )
      .option(
        '--no-wait',
        'return at once, also while deltas from earlier releases are being generated (state preparing)',
      )
      .action(async (file: string, _o, command: Command) => {
        const o = globalsOf<{
          version: string;
          model?: string[];
          name?: string;
          kind: string;
          hardwareRevision?: string[];
          releaseCounter?: string;
          dependency?: string[];
          measurement?: string[];
          path?: string;
          encrypt?: boolean;
          wait: boolean;
        }>(command);
        if (!o.model?.length)
          throw new CliError('at least one --model is required', EXIT.usage, ['e.g. --model DW100']);
        try {
          statSync(file);
        } catch {
          throw new CliError(`cannot read ${file}`, EXIT.usage);
        }
        const counter = o.releaseCounter === undefined ? undefined : Number(o.releaseCounter);
        if (counter !== undefined && (!Number.isInteger(counter) || counter < 0))
          throw new CliError('--release-counter must be a whole number ≥ 0', EXIT.usage);
        const name = o.name ?? basename(file).replace(/\.[A-Za-z0-9]{1,10}$/, '');
        await withClient(o, async (client) => {
          const query = new URLSearchParams({
            name,
            version: o.version,
            kind: o.kind,
            fileName: basename(file),
          });
          for (const m of o.model!) query.append('model', m);
          for (const h of o.hardwareRevision ?? []) query.append('hardwareRevision', h);
          for (const d of o.dependency ?? []) query.append('dependency', d);
          for (const m of o.measurement ?? []) query.append('measurement', m);
          if (counter !== undefined) query.set('releaseCounter', String(counter));
          if (o.path) query.set('path', o.path);
          if (o.encrypt) query.set('encrypt', 'true');
          const body = createReadStream(file).pipe(counting(file, o));
          const res = await client.call<ReleaseView>(`/api/v1/updates/releases?${query.toString()}`, {
            method: 'POST',
            raw: { contentType: 'application/octet-stream', data: body },
          });
          // With earlier releases stored, the server first generates deltas from them, then signs it.
          const release = o.wait ? await untilPrepared(client, res.body, o) : res.body;
          output(o, release, printRelease);
          if (release.state === 'failed') process.exitCode = EXIT.failed;
        });
      }),
    [
      'rampart release create build/sensor-fw.bin --version 1.4.2 --model DW100',
      'rampart release create app.tar --version 2.0.0 --model DW100 --model DW200 --kind application --hardware-revision B --json',
      'rampart release create secret-fw.bin --version 1.5.0 --model DW100 --encrypt',
      'rampart release create sensor-fw-1.4.3.bin --version 1.4.3 --model DW100 --no-wait --json | jq .state',
    ],
  );

  withExamples(
    cmd
      .command('list')
      .description('List releases')
      .option('--model <model>', 'only releases for this model')
      .addOption(
        new Option('--state <state>', 'preparing, published, pending or failed').choices([...RELEASE_STATES]),
      )
      .action(async (_o, command: Command) => {
        const o = globalsOf<{ model?: string; state?: string }>(command);
        await withClient(o, async (client) => {
          const r = await client.get<{ items: ReleaseView[] }>('/api/v1/updates/releases', {
            model: o.model,
            state: o.state,
          });
          output(o, r, (v) =>
            printTable(v.items, [
              ['PATH', (x) => x.path],
              ['VERSION', (x) => x.version],
              ['KIND', (x) => x.custom.kind],
              ['MODELS', (x) => x.custom.models.join(',')],
              ['COUNTER', (x) => x.custom.releaseCounter],
              ['STATE', (x) => x.state],
              ['ROLE', (x) => x.role],
              ['DELTAS FROM', (x) => x.deltas.map((d) => d.fromVersion).join(',')],
              ['CREATED', (x) => shortTime(x.createdAt)],
            ]),
          );
        });
      }),
    ['rampart release list', 'rampart release list --model DW100 --state pending --json'],
  );

  withExamples(
    cmd
      .command('status')
      .description(
        'The repository: development or not, the updates listener, every TUF role; with a target path, that release: ' +
          'its state and the deltas offered with it',
      )
      .argument('[path]', 'a release (target path)')
      .action(async (path: string | undefined, _o, command: Command) => {
        const o = globalsOf(command);
        await withClient(o, async (client) => {
          if (path !== undefined) {
            const list = await client.get<{ items: ReleaseView[] }>('/api/v1/updates/releases', { path });
            if (!list.items[0])
              throw new CliError(`no release ${path}`, EXIT.notFound, ['rampart release list shows them']);
            output(o, list.items[0], printRelease);
            return;
          }
          const r = await client.get<RepositoryView>('/api/v1/updates/repository');
          output(o, r, (v) => {
            if (v.warning) process.stdout.write(color.yellow(`WARNING: ${v.warning}`) + '\n\n');
            printFields([
              ['Listener', v.url ?? '-'],
              ['Initialised', v.initialized ? 'yes' : 'no'],
            ]);
            process.stdout.write('\n');
            printTable(v.roles, [
              ['ROLE', (x) => x.name + (x.delegated ? ' (delegated)' : '')],
              ['VERSION', (x) => x.version],
              ['EXPIRES', (x) => shortTime(x.expires)],
              ['THRESHOLD', (x) => `${x.threshold} of ${x.keyIds.length}`],
              ['ONLINE KEYS', (x) => x.onlineKeyIds.length],
              ['PATHS', (x) => x.paths?.join(' ') ?? ''],
              ['PENDING', (x) => x.pendingRequest ?? ''],
            ]);
          });
        });
      }),
    [
      'rampart release status',
      'rampart release status DW100/sensor-fw-1.4.3.bin',
      'rampart release status --json',
    ],
  );

  withExamples(
    cmd
      .command('requests')
      .description('List signing requests (metadata waiting for offline signatures)')
      .addOption(
        new Option('--state <state>', 'pending, published or cancelled').choices([
          'pending',
          'published',
          'cancelled',
        ]),
      )
      .action(async (_o, command: Command) => {
        const o = globalsOf<{ state?: string }>(command);
        await withClient(o, async (client) => {
          const r = await client.get<{ items: SigningRequestView[] }>('/api/v1/updates/signing-requests', {
            state: o.state,
          });
          output(o, r, (v) =>
            printTable(v.items, [
              ['ID', (x) => x.id],
              ['ROLE', (x) => `${x.role} v${x.version}`],
              ['STATE', (x) => x.state],
              ['SIGNED', (x) => x.signedBy.length],
              ['NEEDS', (x) => x.missing.map((m) => `${m.needed} (${m.role})`).join(', ')],
              ['REASON', (x) => x.reason],
            ]),
          );
        });
      }),
    ['rampart release requests --state pending'],
  );

  withExamples(
    cmd
      .command('request')
      .description(
        'Show a signing request; --out writes the document to sign (carry it to the signing machine)',
      )
      .argument('<id>', 'signing request id')
      .option('--out <file>', 'write the document to sign to this new file')
      .action(async (id: string, _o, command: Command) => {
        const o = globalsOf<{ out?: string }>(command);
        if (o.out) mustNotExist(o.out);
        await withClient(o, async (client) => {
          const view = await client.get<SigningRequestView>(
            `/api/v1/updates/signing-requests/${encodeURIComponent(id)}`,
          );
          if (o.out) {
            const metadata = await client.get<SigningRequestFile['metadata']>(
              `/api/v1/updates/signing-requests/${encodeURIComponent(id)}/metadata`,
            );
            const file: SigningRequestFile = {
              format: SIGNING_REQUEST_FORMAT,
              id: view.id,
              role: view.role,
              version: view.version,
              metadata,
            };
            writeFileSync(o.out, JSON.stringify(file, null, 2) + '\n', { mode: 0o644, flag: 'wx' });
          }
          output(o, view, printRequest);
        });
      }),
    ['rampart release request 7', 'rampart release request 7 --out /media/usb/request-7.json'],
  );

  withExamples(
    cmd
      .command('sign')
      .description(
        'Sign a metadata document offline with a release key: writes a detached signature (needs no server)',
      )
      .argument('<file>', 'what `rampart release request ID --out` wrote (or bare TUF metadata with --role)')
      .requiredOption('--key <file>', `private key, PEM (encrypted keys: passphrase in ${PASSPHRASE_ENV})`)
      .option('--role <role>', 'role of a bare TUF targets document (delegated role name)')
      .option('--out <file>', 'write the signature to this new file (default: standard output)')
      .action((file: string, _o, command: Command) => {
        const o = globalsOf<{ key: string; role?: string; out?: string }>(command);
        if (o.out) mustNotExist(o.out);
        const { role, doc } = readToSign(file, o.role);
        const key = readPrivateKey(o.key);
        const sig = signDetached(doc, role, key);
        const text = JSON.stringify(sig, null, 2) + '\n';
        if (o.out) {
          writeFileSync(o.out, text, { mode: 0o644, flag: 'wx' });
          if (!o.json)
            process.stderr.write(
              `signed ${role} v${sig.version} with key ${sig.keyid.slice(0, 16)}… → ${o.out}\n`,
            );
          else printJson(sig);
        } else process.stdout.write(text);
      }),
    [
      'rampart release sign request-7.json --key /media/token/release-1.pem --out sig-7-alice.json',
      `${PASSPHRASE_ENV}=... rampart release sign request-7.json --key alice.pem > sig.json`,
    ],
  );

  withExamples(
    cmd
      .command('submit')
      .description('Hand a detached signature to the server; it publishes once the threshold is met')
      .argument('<signature>', 'what `rampart release sign` wrote')
      .option('--request <id>', 'the signing request (default: the pending one for its role and version)')
      .action(async (file: string, _o, command: Command) => {
        const o = globalsOf<{ request?: string }>(command);
        const sig = readJson(file, 'signature') as DetachedSignature;
        if (sig?.format !== DETACHED_SIGNATURE_FORMAT)
          throw new CliError(
            `${file} is not a detached signature (${DETACHED_SIGNATURE_FORMAT})`,
            EXIT.usage,
          );
        await withClient(o, async (client) => {
          let id = o.request;
          if (!id) {
            const pending = await client.get<{ items: SigningRequestView[] }>(
              '/api/v1/updates/signing-requests',
              {
                state: 'pending',
              },
            );
            const match = pending.items.find((r) => r.role === sig.role && r.version === sig.version);
            if (!match)
              throw new CliError(
                `no pending signing request for ${sig.role} v${sig.version}`,
                EXIT.notFound,
                ['see `rampart release requests`'],
              );
            id = String(match.id);
          }
          const view = await client.post<SigningRequestView>(
            `/api/v1/updates/signing-requests/${encodeURIComponent(id)}/signatures`,
            sig,
          );
          output(o, view, (v) => {
            process.stdout.write(
              v.state === 'published'
                ? `${color.green('published')} ${v.role} v${v.version}\n`
                : `accepted; ${v.role} v${v.version} still waits for signatures\n`,
            );
            printRequest(v);
          });
        });
      }),
    ['rampart release submit sig-7-alice.json', 'rampart release submit sig.json --request 7 --json'],
  );

  withExamples(
    cmd
      .command('keygen')
      .description('Create an offline release key (ECDSA P-256 or Ed25519) and print its TUF public key')
      .requiredOption('--out <file>', 'new file for the private key (PEM, mode 0600)')
      .option('--ed25519', 'an Ed25519 key instead of ECDSA P-256')
      .option('--public-out <file>', 'also write the public key (PEM) to this new file')
      .action((_o, command: Command) => {
        const o = globalsOf<{ out: string; ed25519?: boolean; publicOut?: string }>(command);
        mustNotExist(o.out);
        if (o.publicOut) mustNotExist(o.publicOut);
        const { privateKey } = o.ed25519
          ? generateKeyPairSync('ed25519')
          : generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const passphrase = process.env[PASSPHRASE_ENV];
        const pem = privateKey.export(
          passphrase
            ? { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }
            : { type: 'pkcs8', format: 'pem' },
        ) as string;
        writeFileSync(o.out, pem, { mode: 0o600, flag: 'wx' });
        const tuf = tufKeyOf(privateKey);
        if (o.publicOut) writeFileSync(o.publicOut, tuf.keyval.public, { mode: 0o644, flag: 'wx' });
        const out = { keyid: tufKeyId(tuf), key: tuf, file: o.out, encrypted: !!passphrase };
        output(o, out, (v) => {
          process.stdout.write(`key ${v.keyid}\nwritten to ${v.file}${v.encrypted ? ' (encrypted)' : ''}\n`);
          if (!v.encrypted)
            process.stderr.write(
              color.yellow(`the key is not encrypted: set ${PASSPHRASE_ENV} to encrypt it; keep it offline`) +
                '\n',
            );
        });
      }),
    [
      'rampart release keygen --out /media/token/alice.pem --public-out alice.pub.pem',
      `${PASSPHRASE_ENV}=... rampart release keygen --out bob.pem --ed25519 --json`,
    ],
  );

  withExamples(
    cmd
      .command('init')
      .description(
        'Initialise a production repository (updates.development: false) with offline root and targets keys: ' +
          'root v1 and targets v1 wait as signing requests until the offline keys sign them, then the repository serves',
      )
      .option('--root-key <file>', 'offline root public key, PEM (repeatable; at least one)', collect)
      .option('--root-threshold <n>', 'root signatures needed (1 to the number of root keys)')
      .option('--targets-key <file>', 'offline targets public key, PEM (repeatable; at least one)', collect)
      .option('--targets-threshold <n>', 'targets signatures needed (1 to the number of targets keys)')
      .action(async (_o, command: Command) => {
        const o = globalsOf<{
          rootKey?: string[];
          rootThreshold?: string;
          targetsKey?: string[];
          targetsThreshold?: string;
        }>(command);
        const role = (name: 'root' | 'targets', files?: string[], threshold?: string) => {
          if (!files?.length)
            throw new CliError(`at least one --${name}-key is required`, EXIT.usage, [
              `make one offline: rampart release keygen --out ${name}-1.pem --public-out ${name}-1.pub.pem`,
            ]);
          const n = Number(threshold);
          if (threshold === undefined || !Number.isInteger(n) || n < 1 || n > files.length)
            throw new CliError(
              `--${name}-threshold must be a whole number from 1 to ${files.length} (the number of --${name}-key)`,
              EXIT.usage,
            );
          return { keys: files.map((f) => tufKeyOf(readPublicKeyFile(f))), threshold: n };
        };
        const body = {
          root: role('root', o.rootKey, o.rootThreshold),
          targets: role('targets', o.targetsKey, o.targetsThreshold),
        };
        type Proposal = {
          role: string;
          version: number;
          published: boolean;
          signingRequest: SigningRequestView | null;
        };
        await withClient(o, async (client) => {
          const r = await client.post<{ root: Proposal; targets: Proposal }>(
            '/api/v1/updates/repository/init',
            body,
          );
          output(o, r, (v) => {
            process.stdout.write(
              `root v1 and targets v1 wait for offline signatures; the repository serves once both are signed\n\n`,
            );
            for (const p of [v.root, v.targets]) {
              if (p.signingRequest) printRequest(p.signingRequest);
              process.stdout.write('\n');
            }
            const ids = [v.root, v.targets].map((p) => p.signingRequest?.id).filter((id) => id !== undefined);
            process.stdout.write(
              'Next, for each request:\n' +
                ids.map((id) => `  rampart release request ${id} --out request-${id}.json\n`).join('') +
                '  rampart release sign request-ID.json --key KEY.pem --out sig.json   # on each offline machine\n' +
                '  rampart release submit sig.json\n',
            );
          });
        });
      }),
    [
      'rampart release keygen --out /media/token/root-1.pem --public-out root-1.pub.pem   # offline; root-2 likewise',
      'rampart release keygen --out /media/token/targets-1.pem --public-out targets-1.pub.pem   # offline',
      'rampart release init --root-key root-1.pub.pem --root-key root-2.pub.pem --root-threshold 2 --targets-key targets-1.pub.pem --targets-threshold 1',
      'rampart release request 1 --out request-1.json   # root v1; request 2 (targets v1) likewise',
      'rampart release sign request-1.json --key /media/token/root-1.pem --out sig-root-1.json   # offline; root-2 likewise',
      'rampart release sign request-2.json --key /media/token/targets-1.pem --out sig-targets-1.json   # offline',
      'rampart release submit sig-root-1.json && rampart release submit sig-root-2.json && rampart release submit sig-targets-1.json',
      'rampart release init --root-key r1.pub.pem --root-threshold 1 --targets-key t1.pub.pem --targets-threshold 1 --json',
    ],
  );

  const role = cmd.command('role').description('TUF roles: keys, thresholds, delegations, online keys');
  withExamples(
    role
      .command('set')
      .description(
        'Set the keys and threshold of a role or delegation (a root or targets change: may need offline signatures)',
      )
      .argument('<name>', 'root, targets, snapshot, timestamp, or a delegated role name')
      .option('--key <file>', 'public key file, PEM (repeatable; replaces the role keys)', collect)
      .option('--threshold <n>', 'signatures needed')
      .option('--paths <pattern>', 'delegated roles: target path pattern it may sign (repeatable)', collect)
      .option('--online-key', 'rotate to a fresh key in the server key store (online roles)')
      .action(async (name: string, _o, command: Command) => {
        const o = globalsOf<{ key?: string[]; threshold?: string; paths?: string[]; onlineKey?: boolean }>(
          command,
        );
        const threshold = o.threshold === undefined ? undefined : Number(o.threshold);
        if (threshold !== undefined && (!Number.isInteger(threshold) || threshold < 1))
          throw new CliError('--threshold must be a whole number ≥ 1', EXIT.usage);
        const keys = (o.key ?? []).map((f) => tufKeyOf(readPublicKeyFile(f)));
        await withClient(o, async (client) => {
          const r = await client.put<{
            role: string;
            version: number;
            published: boolean;
            signingRequest: SigningRequestView | null;
          }>(`/api/v1/updates/roles/${encodeURIComponent(name)}`, {
            ...(threshold !== undefined ? { threshold } : {}),
            ...(keys.length ? { keys } : {}),
            ...(o.paths ? { paths: o.paths } : {}),
            ...(o.onlineKey ? { onlineKey: true } : {}),
          });
          output(o, r, (v) => {
            process.stdout.write(
              v.published
                ? `${color.green('published')} ${v.role} v${v.version}\n`
                : `${v.role} v${v.version} waits for signatures\n`,
            );
            if (v.signingRequest) printRequest(v.signingRequest);
          });
        });
      }),
    [
      'rampart release role set acme --key alice.pub.pem --key bob.pub.pem --key carol.pub.pem --threshold 2 --paths "acme/*"',
      'rampart release role set timestamp --online-key',
      'rampart release role set root --key r1.pub.pem --key r2.pub.pem --key r3.pub.pem --threshold 2',
    ],
  );
  withExamples(
    cmd
      .command('director-rotate')
      .description(
        "Rotate the director's root key, its online targets key, or both: a new director root, signed by the old and the new root key, that devices walk to",
      )
      .option('--root', 'a new director root key')
      .option('--targets', 'a new online key for the per-device targets metadata')
      .action(async (_o, command: Command) => {
        const o = globalsOf<{ root?: boolean; targets?: boolean }>(command);
        const roles = [...(o.root ? ['root'] : []), ...(o.targets ? ['targets'] : [])];
        if (roles.length === 0)
          throw new CliError('name what to rotate: --root, --targets or both', EXIT.usage, [
            'rampart release director-rotate --root --targets',
          ]);
        await withClient(o, async (client) => {
          const r = await client.post<DirectorRotationView>('/api/v1/updates/director/rotate', { roles });
          output(o, r, (v) => {
            process.stdout.write(
              `${color.green('rotated')} ${v.rotated.join(' and ')}: director root v${v.version}\n`,
            );
            printFields([
              ['Root keys', v.rootKeyIds.join(', ')],
              ['Targets keys', v.targetsKeyIds.join(', ')],
              ['Signed by', v.signedBy.join(', ')],
              ['Expires', v.expires],
            ]);
          });
        });
      }),
    ['rampart release director-rotate --targets', 'rampart release director-rotate --root --targets --json'],
  );
  withExamples(cmd, [
    'rampart release create build/sensor-fw.bin --version 1.4.2 --model DW100',
    'rampart release status',
    'rampart release sign request-7.json --key alice.pem --out sig.json   # offline',
  ]);
  withExamples(role, ['rampart release role set timestamp --online-key']);
  return cmd;
}
