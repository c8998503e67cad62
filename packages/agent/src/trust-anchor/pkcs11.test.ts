import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes, verify, type KeyObject } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCsr } from '@rampart/shared/pki';
import { trustAnchorFor } from '../anchor.js';
import { loadAgentConfig } from '../config.js';
import { AgentError } from '../errors.js';
import { createDeviceCsr } from '../identity/csr.js';
import {
  createSoftHsmToken,
  generateSignOnlyKey,
  withTokenSession,
  inspectKeys,
  type SoftHsmToken,
} from '../test-support/softhsm.js';
import { Pkcs11TrustAnchor, ecdsaSignatureToDer, type Pkcs11TrustAnchorOptions } from './pkcs11.js';
import { wrapLikeDirector } from '../test-support/content-key.js';

/** The PKCS#11 trust anchor against a real token: SoftHSM2 through pkcs11js. */

let token: SoftHsmToken;
/** Only for the wrong-PIN tests, so that its login state is theirs alone. */
let pinToken: SoftHsmToken;
/** Only used by the command-line tests, in their own processes. */
let cliToken: SoftHsmToken;
const opened: Pkcs11TrustAnchor[] = [];

beforeAll(() => {
  // Every token exists before the first anchor initialises the module (SoftHSM2 reads its tokens then).
  token = createSoftHsmToken();
  pinToken = createSoftHsmToken();
  cliToken = createSoftHsmToken();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((a) => a.close()));
});
afterAll(() => {
  for (const t of [token, pinToken, cliToken]) t?.cleanup();
});

function anchorOn(t: SoftHsmToken, options: Partial<Pkcs11TrustAnchorOptions> = {}): Pkcs11TrustAnchor {
  const anchor = new Pkcs11TrustAnchor({
    module: t.module,
    tokenLabel: t.tokenLabel,
    pin: t.pin,
    ...options,
  });
  opened.push(anchor);
  return anchor;
}

const fingerprint = (k: KeyObject) =>
  createHash('sha256')
    .update(k.export({ type: 'spki', format: 'der' }))
    .digest('hex');

async function agentError(promise: Promise<unknown>): Promise<AgentError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    return err as AgentError;
  }
  throw new Error('expected an AgentError');
}

describe('PKCS#11 trust anchor (SoftHSM2)', () => {
  it('generates a P-256 key in the token that is sensitive and not extractable', async () => {
    const anchor = anchorOn(token);
    expect(anchor.kind).toBe('pkcs11');
    expect(anchor.strength).toBe('hardware');
    expect(await anchor.publicKey()).toBeNull();
    const pub = await anchor.ensureKey();
    expect(pub.asymmetricKeyType).toBe('ec');
    expect(pub.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(fingerprint((await anchor.publicKey())!)).toBe(fingerprint(pub));
    expect(await anchor.tlsKey()).toBeNull();
    await anchor.close();

    // What the token says, asked directly.
    const { privateKeys, publicKeys } = await inspectKeys(token, 'rampart-device');
    expect(publicKeys).toBe(1);
    expect(privateKeys).toEqual([
      {
        token: true,
        sensitive: true,
        extractable: false,
        alwaysSensitive: true,
        neverExtractable: true,
        sign: true,
        derive: true,
        valueRead: 'CKR_ATTRIBUTE_SENSITIVE',
      },
    ]);
  });

  it('signs in the token: DER ECDSA over SHA-256 that node:crypto verifies', async () => {
    const anchor = anchorOn(token);
    const pub = await anchor.ensureKey();
    const data = Buffer.from('signed inside the token');
    const signature = await anchor.sign(data);
    expect(signature[0]).toBe(0x30);
    expect(verify('sha256', data, pub, signature)).toBe(true);
    expect(verify('sha256', Buffer.from('something else'), pub, signature)).toBe(false);

    // Concurrent callers are served one at a time on the one session.
    const messages = Array.from({ length: 16 }, (_, i) => Buffer.from(`message ${i}`));
    const signatures = await Promise.all(messages.map((m) => anchor.sign(m)));
    messages.forEach((m, i) => expect(verify('sha256', m, pub, signatures[i]!)).toBe(true));
  });

  it('signs a certificate request that parses and verifies', async () => {
    const anchor = anchorOn(token);
    const der = await createDeviceCsr(anchor, 'hsm-device-1');
    const csr = parseCsr(der);
    expect(csr.signatureValid).toBe(true);
    expect(csr.commonName).toBe('hsm-device-1');
    expect(fingerprint(csr.publicKey!)).toBe(fingerprint((await anchor.publicKey())!));
  });

  it('finds the same key from a second anchor, at the same time and after the first closed', async () => {
    const first = anchorOn(token);
    const second = anchorOn(token);
    const a = await first.ensureKey();
    const b = await second.ensureKey();
    expect(fingerprint(b)).toBe(fingerprint(a));
    await first.close();
    // The second keeps its session (and the login) when the first lets go.
    const data = Buffer.from('after the first closed');
    expect(verify('sha256', data, a, await second.sign(data))).toBe(true);
    await second.close();

    const third = anchorOn(token);
    expect(fingerprint(await third.ensureKey())).toBe(fingerprint(a));
    // A closed anchor opens the token again when used.
    await third.close();
    expect(verify('sha256', data, a, await third.sign(data))).toBe(true);
    await third.close();
    const { privateKeys, publicKeys } = await inspectKeys(token, 'rampart-device');
    expect(privateKeys).toHaveLength(1);
    expect(publicKeys).toBe(1);
  });

  it('keeps keys with another label apart, and signs nothing (creating nothing) before there is a key', async () => {
    const anchor = anchorOn(token, { keyLabel: 'other-identity' });
    expect(await anchor.publicKey()).toBeNull();
    const err = await agentError(anchor.sign(Buffer.from('x')));
    expect(err.code).toBe('TRUST_ANCHOR');
    expect(err.message).toContain('no identity key "other-identity" yet; run: rampart-agent identity init');
    await anchor.close();
    expect((await inspectKeys(token, 'other-identity')).privateKeys).toHaveLength(0);

    const other = await anchor.ensureKey();
    expect(fingerprint(other)).not.toBe(fingerprint((await anchorOn(token).publicKey())!));
  });

  it('refuses a wrong PIN, saying so without showing it, whether or not the token is logged in already', async () => {
    const wrong = 'not-the-pin-1234';
    // Nobody logged in: the token itself refuses (CKR_PIN_INCORRECT).
    const refused = await agentError(anchorOn(pinToken, { pin: wrong }).ensureKey());
    expect(refused.code).toBe('TRUST_ANCHOR');
    expect(refused.message).toContain(`the PIN does not log in to PKCS#11 token "${pinToken.tokenLabel}"`);
    expect(refused.message).toContain('CKR_PIN_INCORRECT');
    expect(refused.message).toContain('RAMPART_AGENT_PKCS11_PIN');
    expect(refused.message).not.toContain(wrong);
    expect(refused.message).not.toContain(pinToken.pin);

    // Logged in by another anchor of the process: C_Login would not check, the anchor does.
    const good = anchorOn(pinToken);
    await good.ensureKey();
    const second = await agentError(anchorOn(pinToken, { pin: wrong }).publicKey());
    expect(second.message).toContain('the PIN does not log in');
    expect(second.message).not.toContain(wrong);
    expect(second.message).not.toContain(pinToken.pin);
    // The right PIN still works, and the failed attempts disturbed nothing.
    const data = Buffer.from('still fine');
    expect(verify('sha256', data, (await good.publicKey())!, await good.sign(data))).toBe(true);
  });

  it('names the tokens there are when the label matches none', async () => {
    const err = await agentError(anchorOn(token, { tokenLabel: 'no-such-token' }).ensureKey());
    expect(err.code).toBe('TRUST_ANCHOR');
    expect(err.message).toContain('no PKCS#11 token labelled "no-such-token"');
    for (const t of [token, pinToken, cliToken]) expect(err.message).toContain(`"${t.tokenLabel}"`);
    expect(err.message).toContain('RAMPART_AGENT_PKCS11_TOKEN_LABEL');
  });

  it('says which library cannot be loaded', async () => {
    const missing = '/nonexistent/libpkcs11-missing.so';
    const err = await agentError(anchorOn(token, { module: missing }).ensureKey());
    expect(err.code).toBe('TRUST_ANCHOR');
    expect(err.message).toContain(`cannot load the PKCS#11 library ${missing}`);
    expect(err.message).toContain('RAMPART_AGENT_PKCS11_MODULE');
  });

  it('is what trustAnchorFor makes of a pkcs11 configuration', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'rampart-pkcs11-config-'));
    try {
      const { config } = loadAgentConfig({
        env: {
          RAMPART_AGENT_DATA_DIR: dataDir,
          RAMPART_AGENT_TRUST_ANCHOR: 'pkcs11',
          RAMPART_AGENT_PKCS11_MODULE: token.module,
          RAMPART_AGENT_PKCS11_TOKEN_LABEL: token.tokenLabel,
          RAMPART_AGENT_PKCS11_PIN: token.pin,
        },
      });
      const anchor = trustAnchorFor(config);
      expect(anchor).toBeInstanceOf(Pkcs11TrustAnchor);
      opened.push(anchor as Pkcs11TrustAnchor);
      expect((anchor as Pkcs11TrustAnchor).keyLabel).toBe('rampart-device');
      expect(fingerprint(await anchor.ensureKey())).toBe(fingerprint((await anchorOn(token).publicKey())!));
      // Nothing of the key is kept in the data directory.
      expect(existsSync(dataDir) ? readdirSync(dataDir) : []).toEqual([]);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('opens a content key wrapped to its key with the ECDH in the token, and refuses one wrapped to another key', async () => {
    const anchor = anchorOn(token);
    const pub = await anchor.ensureKey();
    const contentKey = randomBytes(32);
    const opened = await anchor.unwrapKey(await wrapLikeDirector(contentKey, pub, 'hsm-device-1'));
    expect(Buffer.from(opened).equals(contentKey)).toBe(true);
    const keys = Array.from({ length: 4 }, () => randomBytes(32));
    const jwes = await Promise.all(keys.map((k) => wrapLikeDirector(k, pub, 'hsm-device-1')));
    const all = await Promise.all(jwes.map((j) => anchor.unwrapKey(j)));
    all.forEach((k, i) => expect(Buffer.from(k).equals(keys[i]!)).toBe(true));

    const elsewhere = await wrapLikeDirector(
      contentKey,
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
      'hsm-device-1',
    );
    const err = await agentError(anchor.unwrapKey(elsewhere));
    expect(err.code).toBe('TRUST_ANCHOR');
    expect(err.message).toMatch(/does not unwrap with this device key/);
    // The derived secrets were destroyed at once: none is left, not even in the anchor's open session
    // (session objects are visible to every session of the process).
    expect(await secretKeysOn(token)).toBe(0);
    await anchor.close();
    const { privateKeys, publicKeys } = await inspectKeys(token, 'rampart-device');
    expect(privateKeys).toHaveLength(1);
    expect(privateKeys[0]).toMatchObject({ sensitive: true, extractable: false, derive: true });
    expect(publicKeys).toBe(1);
  });

  it('refuses to unwrap with a key generated before it could (no CKA_DERIVE), saying what to do; that key still signs', async () => {
    await generateSignOnlyKey(token, 'sign-only');
    const anchor = anchorOn(token, { keyLabel: 'sign-only' });
    const pub = await anchor.ensureKey();
    const err = await agentError(
      anchor.unwrapKey(await wrapLikeDirector(randomBytes(32), pub, 'hsm-device-1')),
    );
    expect(err.code).toBe('TRUST_ANCHOR');
    expect(err.message).toMatch(/"sign-only" .* generated before .* lacks CKA_DERIVE/);
    expect(err.message).toMatch(/re-provision the device .* or publish unencrypted releases/);
    const data = Buffer.from('still signs');
    expect(verify('sha256', data, pub, await anchor.sign(data))).toBe(true);
  });

  it('turns r || s into a DER ECDSA-Sig-Value, with the zero bytes DER needs', () => {
    const r = Buffer.alloc(32, 0);
    r[1] = 0x01; // leading zero byte dropped
    const s = Buffer.alloc(32, 0xff); // high bit set: a zero byte added
    const encoded = ecdsaSignatureToDer(Buffer.concat([r, s]));
    expect(encoded.toString('hex')).toBe(
      `3044021f${r.subarray(1).toString('hex')}022100${s.toString('hex')}`,
    );
  });
});

/**
 * How many secret-key objects (token or session objects, of any session of this process) the token
 * shows; works while an anchor of the process has the module open and is logged in.
 */
function secretKeysOn(t: SoftHsmToken): Promise<number> {
  return withTokenSession(t, (lib, session, p11) => {
    lib.C_FindObjectsInit(session, [{ type: p11.CKA_CLASS, value: p11.CKO_SECRET_KEY }]);
    const found = lib.C_FindObjects(session, 100);
    lib.C_FindObjectsFinal(session);
    return found.length;
  });
}

/** The built command (tests run after `tsc -b`, as `npm test` does). */
const BIN = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));

function agent(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('rampart-agent with trustAnchor pkcs11', () => {
  let dataDir: string;
  let env: Record<string, string>;
  beforeAll(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'rampart-pkcs11-cli-'));
    env = {
      ...cliToken.env,
      RAMPART_AGENT_DATA_DIR: dataDir,
      RAMPART_AGENT_TRUST_ANCHOR: 'pkcs11',
      RAMPART_AGENT_PKCS11_MODULE: cliToken.module,
      RAMPART_AGENT_PKCS11_TOKEN_LABEL: cliToken.tokenLabel,
      RAMPART_AGENT_PKCS11_PIN: cliToken.pin,
    };
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('creates the identity key in the token and shows it as hardware', async () => {
    const init = await agent(['identity', 'init', '--json'], env);
    expect(init.code, init.stderr).toBe(0);
    const created = JSON.parse(init.stdout) as {
      trustAnchor: string;
      strength: string;
      publicKeyFingerprint: string;
    };
    expect(created).toMatchObject({ trustAnchor: 'pkcs11', strength: 'hardware' });
    const show = await agent(['identity', 'show', '--json'], env);
    expect(show.code, show.stderr).toBe(0);
    expect(JSON.parse(show.stdout).publicKeyFingerprint).toBe(created.publicKeyFingerprint);
    expect((await inspectKeys(cliToken, 'rampart-device')).privateKeys).toHaveLength(1);
  });

  it('never prints the PIN: not in `config`, not when it is wrong', async () => {
    const config = await agent(['config', '--json'], env);
    expect(config.code, config.stderr).toBe(0);
    expect(JSON.parse(config.stdout).pkcs11).toEqual({
      module: cliToken.module,
      tokenLabel: cliToken.tokenLabel,
      pin: '(redacted)',
      keyLabel: 'rampart-device',
    });
    expect(config.stdout).not.toContain(cliToken.pin);

    const wrong = await agent(['identity', 'show'], { ...env, RAMPART_AGENT_PKCS11_PIN: 'wrong-pin-5678' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('the PIN does not log in');
    expect(wrong.stderr).not.toContain('wrong-pin-5678');
  });
});
