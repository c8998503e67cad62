import { createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { pcrDigest, parseTpmPublic, parseTpmsAttest } from '@rampart/shared/attestation';
import { der, toPem } from '@rampart/shared/pki';
import { writeFileAtomic } from '../identity/files.js';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import type { OpensslKey } from '../tls/openssl-tunnel.js';
import { openEcdhEsJwe } from './jwe-ecdh.js';
import { certify, loadKey } from './tpm-commands.js';
import { TpmConnection, runTpm2 } from './tpm-tools.js';
import type { TrustAnchor } from './trust-anchor.js';

export interface TpmTrustAnchorOptions {
  /** Where the TPM-wrapped key blobs live (only this TPM can load them). */
  dir: string;
  /** The TSS2 TCTI: `device:/dev/tpmrm0` on a device, `swtpm:host=127.0.0.1,port=2321` for swtpm. */
  tcti: string;
  /**
   * Persistent handle of the storage primary key the identity key is created under. Created (ECC
   * P-256, owner hierarchy) and made persistent on first use if the TPM has none there.
   */
  parentHandle?: number;
  /** Time limit of one tpm2-tools command. Default 30 s. */
  timeoutMs?: number;
}

/** The storage root key's handle in the TCG provisioning guidance. */
export const DEFAULT_PARENT_HANDLE = 0x81000001;

const PUBLIC_BLOB = 'tpm-key.pub';
const PRIVATE_BLOB = 'tpm-key.priv';
const AK_PUBLIC_BLOB = 'ak.pub';
const AK_PRIVATE_BLOB = 'ak.priv';

/** A key's wrapped blobs: TPM2B_PUBLIC and TPM2B_PRIVATE, as tpm2_create writes them. */
interface KeyBlobs {
  pub: string;
  priv: string;
}

/**
 * Qualifying data longer than a SHA-512 digest is refused before it reaches the TPM, whose own limit
 * (a TPMT_HA) is 34 to 66 bytes depending on its hash algorithms. attestationQualifyingData gives 32.
 */
const MAX_QUALIFYING_DATA = 64;

/**
 * The identity key's attributes: an unrestricted ECC P-256 key that both signs (ECDSA, the scheme
 * given with each command) and decrypts (TPM2_ECDH_ZGen, for the content keys of encrypted
 * releases). A key that does both must have no scheme of its own (TPM_ALG_NULL), hence `null:null`.
 * Keys created before the agent unwrapped content keys are `sign` only: they still sign, and
 * `unwrapKey` refuses them.
 */
const IDENTITY_KEY_ALG = 'ecc256:null:null';
const IDENTITY_KEY_ATTRIBUTES = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|decrypt';

/**
 * A TPM 2.0 trust anchor through tpm2-tools: the identity key (ECC P-256 for ECDSA and ECDH,
 * `fixedtpm|fixedparent`) is created inside the TPM and never leaves it; the agent keeps only the TPM-wrapped blobs, which
 * no other TPM can load. Signing loads the key, signs the SHA-256 digest inside the TPM and flushes
 * it again, one command at a time (a TPM has few object slots, and without a resource manager, as
 * with swtpm, nothing else frees them).
 *
 * For remote attestation the anchor also keeps an attestation key (AK): an ECDSA P-256 key under
 * the same parent, `restricted`, so the TPM signs with it only structures it generated itself —
 * quotes of its PCRs, certifications of its objects —, never data chosen by the caller. The identity
 * key certifies the AK (TPM2_Certify, both keys loaded at once, bound to the verifier's qualifying
 * data), and the endorsement key's public half identifies the TPM.
 *
 * Mutual TLS (the gateway, renewal) signs in the TPM too: `tlsKey()` is null, and `opensslKey()`
 * hands the TLS tunnel (openssl s_client with the tpm2-openssl provider) a TSS2 key file made of the
 * same wrapped blobs. The tunnel holds its TPM connection for as long as the TLS connection lasts,
 * so it needs a resource manager (`device:/dev/tpmrm0`, or tpm2-abrmd), never a TPM that serves one
 * client at a time. Written on tpm2-tools rather than a TSS binding: no maintained Node.js binding
 * of the TSS exists, and tpm2-tools is what device images ship.
 */
export class TpmTrustAnchor implements TrustAnchor {
  readonly kind = 'tpm';
  readonly strength = 'hardware' as const;
  private readonly parent: string;
  private readonly timeoutMs: number;
  private publicKeyObject: KeyObject | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: TpmTrustAnchorOptions) {
    this.parent = `0x${(options.parentHandle ?? DEFAULT_PARENT_HANDLE).toString(16)}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  private get pubFile(): string {
    return join(this.options.dir, PUBLIC_BLOB);
  }

  private get privFile(): string {
    return join(this.options.dir, PRIVATE_BLOB);
  }

  private get identityBlobs(): KeyBlobs {
    return { pub: this.pubFile, priv: this.privFile };
  }

  private get akBlobs(): KeyBlobs {
    return { pub: join(this.options.dir, AK_PUBLIC_BLOB), priv: join(this.options.dir, AK_PRIVATE_BLOB) };
  }

  async ensureKey(): Promise<KeyObject> {
    return this.exclusive(async () => {
      await this.createKey(this.identityBlobs, IDENTITY_KEY_ALG, IDENTITY_KEY_ATTRIBUTES);
      return this.loadPublic();
    });
  }

  async publicKey(): Promise<KeyObject | null> {
    if (this.publicKeyObject) return this.publicKeyObject;
    if (!existsSync(this.pubFile) || !existsSync(this.privFile)) return null;
    return this.exclusive(() => this.loadPublic());
  }

  /** Null: the key cannot leave the TPM; mutual TLS goes through `opensslKey()`. */
  async tlsKey(): Promise<KeyObject | null> {
    return null;
  }

  /**
   * The identity key as the tpm2-openssl provider loads it: a TSS2 key file (`TSS2 PRIVATE KEY`,
   * the TPM-wrapped blobs under the persistent parent, no authorization value) and the TCTI. The
   * file holds nothing another TPM could use. Throws TRUST_ANCHOR without a key, and for a TCTI that
   * serves one client at a time (see the class comment).
   */
  async opensslKey(): Promise<OpensslKey> {
    this.requireKey(this.identityBlobs, 'identity key', 'run: rampart-agent identity init');
    const single = singleClientTcti(this.options.tcti);
    if (single)
      throw new AgentError(
        'TRUST_ANCHOR',
        `mutual TLS with the TPM key keeps a connection to the TPM open while the device is connected, and ${single}; ` +
          "set tpm.tcti (RAMPART_AGENT_TPM_TCTI) to a resource manager: device:/dev/tpmrm0 (the kernel's), or tabrmd (tpm2-abrmd)",
      );
    const keyPem = tssPrivateKeyPem(
      Number(this.parent),
      readFileSync(this.identityBlobs.pub),
      readFileSync(this.identityBlobs.priv),
    );
    return { kind: 'tpm2', keyPem, tcti: this.options.tcti };
  }

  async sign(data: Uint8Array): Promise<Buffer> {
    if (!existsSync(this.pubFile) || !existsSync(this.privFile))
      throw new AgentError(
        'TRUST_ANCHOR',
        'the device has no identity key in the TPM yet; run: rampart-agent identity init',
      );
    return this.exclusive(() =>
      this.withScratch(async (scratch) => {
        const message = join(scratch, 'message');
        const signature = join(scratch, 'signature');
        writeFileSync(message, data);
        await this.withLoadedKey(scratch, (ctx) =>
          this.tpm('tpm2_sign', [
            '-c',
            ctx,
            '-g',
            'sha256',
            '-s',
            'ecdsa',
            '-f',
            'plain',
            '-o',
            signature,
            message,
          ]),
        );
        return readFileSync(signature);
      }),
    );
  }

  /**
   * Open a JWE encrypted to the identity key (`ECDH-ES+A256KW` / `A256GCM`): the ECDH with the
   * sender's ephemeral key is TPM2_ECDH_ZGen (`tpm2_ecdhzgen`) inside the TPM, the rest is
   * jwe-ecdh.ts. Refuses a key created before this was possible (without the `decrypt` attribute).
   */
  async unwrapKey(jwe: string): Promise<Uint8Array> {
    this.requireKey(this.identityBlobs, 'identity key', 'run: rampart-agent identity init');
    let decrypts: boolean;
    try {
      decrypts = parseTpmPublic(readFileSync(this.pubFile)).flags.decrypt;
    } catch (err) {
      throw new AgentError('TRUST_ANCHOR', `the identity key blob ${this.pubFile} is not a TPM2B_PUBLIC`, {
        cause: err,
      });
    }
    if (!decrypts)
      throw new AgentError(
        'TRUST_ANCHOR',
        `the identity key in ${this.options.dir} was created before the agent could unwrap content keys with a TPM ` +
          '(it lacks the decrypt attribute), so it cannot open encrypted releases; re-provision the device ' +
          '(a new identity key and certificate), or publish unencrypted releases for it',
      );
    return openEcdhEsJwe(jwe, (epk) => this.ecdhZGen(epk));
  }

  /** Z, the x coordinate of the identity key's private scalar times `peer` (a P-256 point), from the TPM. */
  private ecdhZGen(peer: KeyObject): Promise<Buffer> {
    const jwk = peer.export({ format: 'jwk' });
    const x = Buffer.from(jwk.x ?? '', 'base64url');
    const y = Buffer.from(jwk.y ?? '', 'base64url');
    return this.exclusive(() =>
      this.withScratch(async (scratch) => {
        const point = join(scratch, 'peer.point');
        const out = join(scratch, 'z.point');
        writeFileSync(point, eccPoint(x, y));
        try {
          await this.withLoadedKey(scratch, (ctx) =>
            this.tpm('tpm2_ecdhzgen', ['-c', ctx, '-u', point, '-o', out]),
          );
        } finally {
          // tpm2_ecdhzgen (5.4) leaves the authorization session it started loaded; a TPM without a
          // resource manager (swtpm) has only three session slots. Safe for the same reason as
          // flushTransient: one operation at a time, and the agent keeps no session of its own.
          await this.tpm('tpm2_flushcontext', ['-l']).catch(() => undefined);
        }
        const z = eccPointX(readFileSync(out));
        rmSync(out, { force: true });
        return z;
      }),
    );
  }

  /**
   * Create the attestation key if there is none yet (a restricted ECDSA P-256 signing key,
   * `fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign`, under the same parent
   * as the identity key; its blobs are `ak.pub` and `ak.priv` next to the identity key's). Resolves
   * with its public area as TPM2B_PUBLIC.
   */
  async ensureAttestationKey(): Promise<Buffer> {
    return this.exclusive(async () => {
      await this.createKey(
        this.akBlobs,
        // `:null` names no symmetric algorithm: with `restricted`, tpm2-tools would otherwise add
        // AES-128-CFB, which the TPM refuses for a signing key.
        'ecc256:ecdsa-sha256:null',
        'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign',
      );
      return this.readAttestationKey();
    });
  }

  /** The attestation key's public area (TPM2B_PUBLIC), or null when there is none yet. */
  async attestationKeyPublic(): Promise<Buffer | null> {
    const ak = this.akBlobs;
    if (!existsSync(ak.pub) || !existsSync(ak.priv)) return null;
    return this.readAttestationKey();
  }

  /**
   * The endorsement key's public area (TPM2B_PUBLIC): ECC P-256 from the TCG default template. It is
   * derived again from the TPM's endorsement seed each time, so one TPM always gives the same EK.
   */
  async endorsementKeyPublic(): Promise<Buffer> {
    return this.exclusive(() =>
      this.withScratch(async (scratch) => {
        const out = join(scratch, 'ek.pub');
        try {
          await this.tpm('tpm2_createek', ['-c', join(scratch, 'ek.ctx'), '-G', 'ecc', '-u', out]);
        } finally {
          await this.flushTransient();
        }
        return readFileSync(out);
      }),
    );
  }

  /**
   * TPM2_Certify of the attestation key by the identity key (ECDSA, SHA-256), with `qualifyingData`
   * in the attestation. Resolves with the TPMS_ATTEST and its signature as TPMT_SIGNATURE (what
   * `tpm2_certify -o` and `-s` write). Sent as raw commands over one connection (see
   * tpm-commands.ts): tpm2_certify 5.4 cannot pass qualifying data.
   */
  async certifyAttestationKey(qualifyingData: Buffer): Promise<{ attest: Buffer; signature: Buffer }> {
    this.checkQualifyingData(qualifyingData);
    this.requireKey(this.identityBlobs, 'identity key', 'run: rampart-agent identity init');
    this.requireKey(this.akBlobs, 'attestation key', 'create it first (ensureAttestationKey)');
    return this.exclusive(async () => {
      const tpm = new TpmConnection(this.options.tcti, this.timeoutMs);
      try {
        const parent = Number(this.parent);
        const load = (key: KeyBlobs) =>
          loadKey(tpm, this.options.tcti, parent, readFileSync(key.pub), readFileSync(key.priv));
        const ak = await load(this.akBlobs);
        const identity = await load(this.identityBlobs);
        return await certify(tpm, this.options.tcti, ak, identity, qualifyingData);
      } finally {
        // Behind a resource manager closing the connection flushes both keys; without one (swtpm,
        // /dev/tpm0) they stay loaded until flushed.
        await tpm.close();
        await this.flushTransient();
      }
    });
  }

  /**
   * TPM2_Quote of SHA-256 PCRs `pcrs` with the attestation key, with `qualifyingData` as extraData.
   * Resolves with the TPMS_ATTEST, its signature as TPMT_SIGNATURE, and the PCR values tpm2_quote
   * read next to the quote (TPM2_PCR_Read, `-o` with `-F values`: 32 bytes per PCR, ascending).
   * Those values are checked against the quote's pcrDigest: a PCR extended between the two is an
   * error (quote again), never a set of values the quote does not prove.
   */
  async quote(
    pcrs: readonly number[],
    qualifyingData: Buffer,
  ): Promise<{ attest: Buffer; signature: Buffer; pcrValues: Map<number, string> }> {
    this.checkQualifyingData(qualifyingData);
    const sorted = [...new Set(pcrs)].sort((a, b) => a - b);
    if (sorted.length === 0 || sorted.some((p) => !Number.isInteger(p) || p < 0 || p > 23))
      throw new AgentError('TRUST_ANCHOR', `cannot quote PCRs ${pcrs.join(', ') || '(none)'}: PCRs are 0–23`);
    this.requireKey(this.akBlobs, 'attestation key', 'create it first (ensureAttestationKey)');
    return this.exclusive(() =>
      this.withScratch(async (scratch) => {
        const files = {
          attest: join(scratch, 'attest'),
          sig: join(scratch, 'sig'),
          values: join(scratch, 'pcrs'),
        };
        await this.withLoadedKey(
          scratch,
          (ctx) =>
            this.tpm('tpm2_quote', [
              '-c',
              ctx,
              '-l',
              `sha256:${sorted.join(',')}`,
              ...(qualifyingData.length ? ['-q', qualifyingData.toString('hex')] : []),
              '-g',
              'sha256',
              '-m',
              files.attest,
              '-s',
              files.sig,
              '-o',
              files.values,
              '-F',
              'values',
            ]),
          this.akBlobs,
        );
        const attest = readFileSync(files.attest);
        const values = readFileSync(files.values);
        if (values.length !== 32 * sorted.length)
          throw new AgentError(
            'TRUST_ANCHOR',
            `tpm2_quote returned ${values.length} bytes of values for ${sorted.length} SHA-256 PCRs`,
          );
        const pcrValues = new Map(
          sorted.map((pcr, i) => [pcr, values.subarray(32 * i, 32 * (i + 1)).toString('hex')]),
        );
        const quoted = parseTpmsAttest(attest).quote?.pcrDigest;
        if (!quoted?.equals(pcrDigest(pcrValues, sorted)))
          throw new AgentError('TRUST_ANCHOR', 'a PCR changed while it was being quoted; quote again');
        return { attest, signature: readFileSync(files.sig), pcrValues };
      }),
    );
  }

  /** The AK's TPM2B_PUBLIC from its blob, checked to be what ensureAttestationKey creates. */
  private readAttestationKey(): Buffer {
    const blob = readFileSync(this.akBlobs.pub);
    if (!isAttestationKey(blob))
      throw new AgentError(
        'TRUST_ANCHOR',
        `the attestation key in ${this.options.dir} is not a restricted ECDSA P-256 signing key fixed to the TPM`,
      );
    return blob;
  }

  private requireKey(key: KeyBlobs, what: string, hint: string): void {
    if (!existsSync(key.pub) || !existsSync(key.priv))
      throw new AgentError('TRUST_ANCHOR', `the device has no ${what} in the TPM yet; ${hint}`);
  }

  private checkQualifyingData(data: Buffer): void {
    if (data.length > MAX_QUALIFYING_DATA)
      throw new AgentError(
        'TRUST_ANCHOR',
        `qualifying data is ${data.length} bytes; a TPM takes at most ${MAX_QUALIFYING_DATA}`,
      );
  }

  /**
   * Create a key under the parent unless its blobs exist: the TPM-wrapped blobs are each written
   * whole, the private one last, since a key counts as present when both are.
   */
  private async createKey(blobs: KeyBlobs, scheme: string, attributes: string): Promise<void> {
    if (existsSync(blobs.pub) && existsSync(blobs.priv)) return;
    mkdirSync(this.options.dir, { recursive: true, mode: 0o700 });
    await this.ensureParent();
    await this.withScratch(async (scratch) => {
      const pub = join(scratch, 'key.pub');
      const priv = join(scratch, 'key.priv');
      await this.tpm('tpm2_create', [
        '-C',
        this.parent,
        '-G',
        scheme,
        '-a',
        attributes,
        '-u',
        pub,
        '-r',
        priv,
      ]);
      writeFileAtomic(blobs.pub, readFileSync(pub), 0o600);
      writeFileAtomic(blobs.priv, readFileSync(priv), 0o600);
    });
  }

  private async loadPublic(): Promise<KeyObject> {
    if (this.publicKeyObject) return this.publicKeyObject;
    const der = await this.withScratch(async (scratch) => {
      const out = join(scratch, 'public.der');
      await this.withLoadedKey(scratch, (ctx) =>
        this.tpm('tpm2_readpublic', ['-c', ctx, '-f', 'der', '-o', out]),
      );
      return readFileSync(out);
    });
    const key = createPublicKey({ key: der, format: 'der', type: 'spki' });
    if (key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
      throw new AgentError('TRUST_ANCHOR', `the TPM key in ${this.options.dir} is not an ECDSA P-256 key`);
    this.publicKeyObject = key;
    return key;
  }

  /**
   * Load a key (the identity key unless told otherwise) under its parent, run `fn` with its context
   * file, and flush it whatever happens.
   */
  private async withLoadedKey(
    scratch: string,
    fn: (ctx: string) => Promise<unknown>,
    key: KeyBlobs = this.identityBlobs,
  ): Promise<void> {
    const ctx = join(scratch, 'key.ctx');
    await this.tpm('tpm2_load', ['-C', this.parent, '-u', key.pub, '-r', key.priv, '-c', ctx]);
    try {
      await fn(ctx);
    } finally {
      await this.flushTransient();
    }
  }

  /**
   * Flush every transient object. Safe: operations run one at a time, and nothing else of the
   * agent's is transient. (A context file written by tpm2_load is not accepted by flushcontext.)
   */
  private flushTransient(): Promise<unknown> {
    return this.tpm('tpm2_flushcontext', ['-t']).catch(() => undefined);
  }

  /** The storage primary at the parent handle, created and made persistent when missing. */
  private async ensureParent(): Promise<void> {
    const present = await this.tpm('tpm2_readpublic', ['-c', this.parent]).then(
      () => true,
      () => false,
    );
    if (present) return;
    await this.withScratch(async (scratch) => {
      const ctx = join(scratch, 'primary.ctx');
      await this.tpm('tpm2_createprimary', ['-C', 'o', '-g', 'sha256', '-G', 'ecc256', '-c', ctx]);
      try {
        await this.tpm('tpm2_evictcontrol', ['-C', 'o', '-c', ctx, this.parent]);
      } finally {
        await this.flushTransient();
      }
    });
  }

  private async withScratch<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    mkdirSync(this.options.dir, { recursive: true, mode: 0o700 });
    const dir = mkdtempSync(join(this.options.dir, '.tpm-'));
    try {
      return await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** One TPM operation at a time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private tpm(tool: string, args: string[]): Promise<string> {
    return runTpm2(tool, args, this.options.tcti, this.timeoutMs);
  }
}

/**
 * Whether a TPM2B_PUBLIC is what ensureAttestationKey creates: a restricted P-256 signing key fixed
 * to its TPM.
 */
function isAttestationKey(blob: Buffer): boolean {
  try {
    const ak = parseTpmPublic(blob);
    return (
      ak.type === 'ecc' &&
      ak.flags.restricted &&
      ak.flags.sign &&
      ak.flags.fixedTPM &&
      ak.publicKey.asymmetricKeyDetails?.namedCurve === 'prime256v1'
    );
  } catch {
    return false;
  }
}

/** A TPM2B_ECC_POINT (as tpm2-tools reads and writes it): size, then x and y, each a TPM2B. */
function eccPoint(x: Buffer, y: Buffer): Buffer {
  const u16 = (n: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    return b;
  };
  return Buffer.concat([u16(4 + x.length + y.length), u16(x.length), x, u16(y.length), y]);
}

/** The x coordinate of a P-256 TPM2B_ECC_POINT (what tpm2_ecdhzgen writes): Z of the ECDH. */
function eccPointX(blob: Buffer): Buffer {
  const size = blob.length >= 4 ? blob.readUInt16BE(0) : -1;
  const xLength = blob.length >= 4 ? blob.readUInt16BE(2) : -1;
  if (size + 2 !== blob.length || xLength !== 32 || blob.length < 4 + xLength)
    throw new AgentError(
      'TRUST_ANCHOR',
      'tpm2_ecdhzgen returned a point that is not a P-256 TPM2B_ECC_POINT',
    );
  const x = Buffer.from(blob.subarray(4, 4 + xLength));
  blob.fill(0);
  return x;
}

/**
 * Why a TCTI cannot be shared by the agent and the TLS tunnel, or null when it can: a TPM device
 * node without the kernel's resource manager, or a simulator socket (swtpm, mssim), serves one
 * client at a time and has only a few object slots for all of them.
 */
export function singleClientTcti(tcti: string): string | null {
  const [name = '', conf = ''] = tcti.split(/:(.*)/s);
  const module = name.replace(/^libtss2-tcti-/, '').replace(/\.so(\.\d+)*$/, '');
  if (module === 'device' && !/^\/dev\/tpmrm\d+$/.test(conf || '/dev/tpm0'))
    return `${conf || '/dev/tpm0'} is the TPM without the kernel's resource manager`;
  if (module === 'swtpm' || module === 'mssim')
    return `${tcti} reaches a simulated TPM directly, without a resource manager`;
  return null;
}

/** OID 2.23.133.10.1.3: a loadable TPM key (the TSS2 key file format). */
const TSS2_LOADABLE_KEY = Buffer.from('06066781050a0103', 'hex');

/**
 * The TSS2 key file (PEM `TSS2 PRIVATE KEY`, the format of tpm2-openssl and tpm2-tss-engine):
 * SEQUENCE { type OID, emptyAuth [0] EXPLICIT BOOLEAN TRUE, parent INTEGER, pubkey OCTET STRING
 * (TPM2B_PUBLIC), privkey OCTET STRING (TPM2B_PRIVATE) }.
 */
export function tssPrivateKeyPem(parent: number, pub: Buffer, priv: Buffer): string {
  const handle = Buffer.alloc(4);
  handle.writeUInt32BE(parent);
  const body = der.sequence(
    TSS2_LOADABLE_KEY,
    der.context(0, Buffer.from([0x01, 0x01, 0xff])),
    der.unsignedInteger(handle),
    der.octetString(pub),
    der.octetString(priv),
  );
  return toPem('TSS2 PRIVATE KEY', body);
}
