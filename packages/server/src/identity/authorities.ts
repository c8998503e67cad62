import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { type Name } from '@peculiar/asn1-x509';
import { buildName, nameToString, serialFromBytes } from '@rampart/shared/pki';
import { RampartError, conflict, notFound } from '../errors.js';
import type { KeyAlgorithm, KeyStore, PlatformKey } from '../keystore/index.js';
import type { Executor, Storage } from '../storage/index.js';
import type { CertificateAuthoritiesTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import {
  KeyUsageFlags,
  extensions,
  randomSerial,
  signCertificate,
  spkiDerOf,
  spkiOfCertificate,
  subjectNameOf,
} from './x509.js';

/**
 * The CA hierarchy: an (optionally offline) root, the issuing CA that signs device certificates
 * and Rampart's own server certificates, and the manufacturing CA that signs birth certificates.
 * Each CA is a row plus a key in the key store; a rollover adds a new generation and leaves the
 * previous one `retiring`: it no longer issues, but its CRL, OCSP answers and chain are still served
 * until its last certificate expires.
 */
export type CaKind = 'root' | 'issuing' | 'manufacturing';
export type CaStatus = 'active' | 'retiring' | 'retired';

export interface CaRecord {
  id: string;
  kind: CaKind;
  generation: number;
  parentId: string | null;
  keyLabel: string;
  keyAlgorithm: KeyAlgorithm;
  keyState: 'online' | 'offline';
  keyExportedAt: string | null;
  subject: string;
  serial: string;
  certificatePem: string;
  der: Buffer;
  /** Subject Name, for use as the issuer of what this CA signs. */
  name: Name;
  /** DER of `name`, as written into the certificates this CA issues. */
  nameDer: Buffer;
  spkiDer: Buffer;
  notBefore: string;
  notAfter: string;
  status: CaStatus;
  createdAt: string;
}

export interface HierarchySettings {
  organization: string;
  keyAlgorithm: KeyAlgorithm;
  rootValidityDays: number;
  issuingValidityDays: number;
  manufacturingValidityDays: number;
}

export const DEFAULT_HIERARCHY: HierarchySettings = {
  organization: 'Rampart',
  keyAlgorithm: 'ec-p256',
  rootValidityDays: 20 * 365,
  issuingValidityDays: 5 * 365,
  manufacturingValidityDays: 20 * 365,
};

const TITLES: Record<CaKind, string> = {
  root: 'Root CA',
  issuing: 'Device Issuing CA',
  manufacturing: 'Manufacturing CA',
};

function toRecord(row: CertificateAuthoritiesTable): CaRecord {
  const x = new X509Certificate(row.certificate);
  return {
    id: row.id,
    kind: row.kind as CaKind,
    generation: row.generation,
    parentId: row.parent_id,
    keyLabel: row.key_label,
    keyAlgorithm: row.key_algorithm as KeyAlgorithm,
    keyState: row.key_state as 'online' | 'offline',
    keyExportedAt: row.key_exported_at,
    subject: row.subject,
    serial: row.serial,
    certificatePem: row.certificate,
    der: Buffer.from(x.raw),
    name: subjectNameOf(x.raw),
    nameDer: Buffer.from(AsnConvert.serialize(subjectNameOf(x.raw))),
    spkiDer: spkiOfCertificate(x.raw),
    notBefore: row.not_before,
    notAfter: row.not_after,
    status: row.status as CaStatus,
    createdAt: row.created_at,
  };
}

export class CertificateAuthorities {
  private cache: CaRecord[] = [];
  private readonly signers = new Map<string, PlatformKey>();

  constructor(
    private readonly storage: Storage,
    private readonly keys: KeyStore,
  ) {}

  /** (Re)read the hierarchy from storage. */
  async load(db: Executor = this.storage.db): Promise<CaRecord[]> {
    const rows = await db.selectFrom('certificate_authorities').selectAll().orderBy('created_at').execute();
    this.cache = rows.map(toRecord);
    return this.cache;
  }

  all(): readonly CaRecord[] {
    return this.cache;
  }

  get(id: string): CaRecord {
    const ca = this.cache.find((c) => c.id === id);
    if (!ca) throw notFound(`certificate authority ${id}`);
    return ca;
  }

  find(id: string): CaRecord | undefined {
    return this.cache.find((c) => c.id === id);
  }

  /** The CA of a kind that issues now. */
  active(kind: CaKind): CaRecord {
    const ca = [...this.cache].reverse().find((c) => c.kind === kind && c.status === 'active');
    if (!ca)
      throw new RampartError(
        'CONFLICT',
        `there is no active ${TITLES[kind]}; create the hierarchy first: rampart ca init`,
      );
    return ca;
  }

  root(): CaRecord {
    return this.active('root');
  }

  /** CAs whose certificates are still served (active and retiring), root first. */
  served(kind?: CaKind): CaRecord[] {
    return this.cache.filter((c) => c.status !== 'retired' && (!kind || c.kind === kind));
  }

  isInitialized(): boolean {
    return this.cache.some((c) => c.kind === 'root');
  }

  /** The signing key of a CA; a clear error when it is offline. */
  async signer(ca: CaRecord): Promise<PlatformKey> {
    const cached = this.signers.get(ca.keyLabel);
    if (cached) return cached;
    if (ca.keyState === 'offline')
      throw new RampartError(
        'CONFLICT',
        `the ${ca.kind} CA key (${ca.id}) is offline; bring it back first: rampart ca root import FILE`,
      );
    const key = await this.keys.get(ca.keyLabel);
    if (!key)
      throw new RampartError(
        'KEYSTORE',
        `the key ${ca.keyLabel} of CA ${ca.id} is missing from the ${this.keys.backend} key store`,
      );
    this.signers.set(ca.keyLabel, key);
    return key;
  }

  /** Create root, issuing and manufacturing CAs. Refuses when a hierarchy exists. */
  async initialize(settings: HierarchySettings): Promise<CaRecord[]> {
    await this.load();
    if (this.isInitialized())
      throw conflict('the CA hierarchy already exists; see it with: rampart ca status');
    const rootKey = await this.freshKey('ca-root-1', settings.keyAlgorithm, true);
    const rootName = buildName([
      ['O', settings.organization],
      ['CN', `${settings.organization} ${TITLES.root}`],
    ]);
    const now = new Date();
    const notBefore = new Date(now.getTime() - 60_000);
    const rootSpki = spkiDerOf(rootKey.publicKey);
    const rootDer = await signCertificate(
      {
        serial: randomSerial(),
        issuer: rootName,
        subject: rootName,
        notBefore,
        notAfter: new Date(now.getTime() + settings.rootValidityDays * 86400_000),
        subjectPublicKeyDer: rootSpki,
        extensions: [
          extensions.basicConstraints(true),
          extensions.keyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign),
          extensions.subjectKeyIdentifier(rootSpki),
        ],
      },
      rootKey,
    );
    const created: CaRecord[] = [];
    await this.storage.db.transaction().execute(async (tx) => {
      created.push(await this.insert(tx, 'root', 1, null, rootKey, rootDer));
    });
    await this.load();
    const root = this.root();
    for (const kind of ['issuing', 'manufacturing'] as const) {
      const days = kind === 'issuing' ? settings.issuingValidityDays : settings.manufacturingValidityDays;
      created.push(
        await this.createSubordinate(root, kind, 1, settings.organization, settings.keyAlgorithm, days),
      );
    }
    await this.load();
    return created;
  }

  /**
   * Issuing-CA rollover: a new generation signed by the root becomes active; the previous one is
   * `retiring` (still served, no longer issuing). Needs the root key online.
   */
  async rollover(
    kind: 'issuing' | 'manufacturing',
    settings: HierarchySettings,
  ): Promise<{ previous: CaRecord; next: CaRecord }> {
    await this.load();
    const previous = this.active(kind);
    const root = this.root();
    await this.signer(root);
    const next = await this.createSubordinate(
      root,
      kind,
      previous.generation + 1,
      settings.organization,
      previous.keyAlgorithm,
      kind === 'issuing' ? settings.issuingValidityDays : settings.manufacturingValidityDays,
      async (tx) => {
        await tx
          .updateTable('certificate_authorities')
          .set({ status: 'retiring' })
          .where('id', '=', previous.id)
          .execute();
      },
    );
    await this.load();
    return { previous: this.get(previous.id), next };
  }

  /** A retiring CA stops being served (its certificates should all have expired). */
  async retire(id: string): Promise<CaRecord> {
    const ca = this.get(id);
    if (ca.status !== 'retiring')
      throw conflict(`CA ${id} is ${ca.status}; only a retiring CA (replaced by a rollover) can be retired`);
    await this.storage.db
      .updateTable('certificate_authorities')
      .set({ status: 'retired' })
      .where('id', '=', id)
      .execute();
    await this.load();
    return this.get(id);
  }

  /** The root key as encrypted PKCS#8 PEM (PBES2: PBKDF2 + AES-256-CBC), as openssl reads it. */
  async exportRootKey(passphrase: string): Promise<{ keyPem: string; certificatePem: string }> {
    const root = this.root();
    if (root.keyState === 'offline')
      throw conflict(
        'the root key is already offline; the export made before removing it is the copy to use',
      );
    if (passphrase.length < 12)
      throw new RampartError('VALIDATION', 'the export passphrase must have at least 12 characters', [
        { field: 'passphrase', message: 'must have at least 12 characters' },
      ]);
    const key = await this.keys.exportPrivateKey(root.keyLabel);
    const keyPem = key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string;
    await this.storage.db
      .updateTable('certificate_authorities')
      .set({ key_exported_at: isoNow() })
      .where('id', '=', root.id)
      .execute();
    await this.load();
    return { keyPem, certificatePem: root.certificatePem };
  }

  /** Delete the root key from the key store (after an export). */
  async removeRootKey(): Promise<CaRecord> {
    const root = this.root();
    if (root.keyState === 'offline') throw conflict('the root key is already offline');
    if (!root.keyExportedAt)
      throw conflict(
        'export the root key before removing it, or it is lost for good: rampart ca root export --out FILE',
      );
    await this.keys.delete(root.keyLabel);
    this.signers.delete(root.keyLabel);
    await this.storage.db
      .updateTable('certificate_authorities')
      .set({ key_state: 'offline' })
      .where('id', '=', root.id)
      .execute();
    await this.load();
    return this.root();
  }

  /** Bring an exported root key back (for a rollover); it must match the root certificate. */
  async importRootKey(keyPem: string, passphrase: string): Promise<CaRecord> {
    const root = this.root();
    if (root.keyState === 'online') throw conflict('the root key is online already');
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: keyPem, format: 'pem', passphrase });
    } catch (err) {
      throw new RampartError(
        'VALIDATION',
        `cannot read the root key: ${(err as Error).message}; check the file and the passphrase`,
      );
    }
    const spki = spkiDerOf(createPublicKey(key));
    if (!spki.equals(root.spkiDer))
      throw new RampartError(
        'VALIDATION',
        `that key does not belong to the root CA ${root.id} (${root.subject})`,
      );
    await this.keys.importPrivateKey(root.keyLabel, root.keyAlgorithm, key, { exportable: true });
    await this.storage.db
      .updateTable('certificate_authorities')
      .set({ key_state: 'online' })
      .where('id', '=', root.id)
      .execute();
    await this.load();
    return this.root();
  }

  private async freshKey(label: string, algorithm: KeyAlgorithm, exportable: boolean): Promise<PlatformKey> {
    // A key left by an interrupted initialization is reused rather than stranded.
    return (await this.keys.get(label)) ?? this.keys.create(label, algorithm, { exportable });
  }

  private async createSubordinate(
    parent: CaRecord,
    kind: 'issuing' | 'manufacturing',
    generation: number,
    organization: string,
    algorithm: KeyAlgorithm,
    validityDays: number,
    alsoInTx?: (tx: Executor) => Promise<void>,
  ): Promise<CaRecord> {
    const parentKey = await this.signer(parent);
    const key = await this.freshKey(`ca-${kind}-${generation}`, algorithm, false);
    const spki = spkiDerOf(key.publicKey);
    const now = Date.now();
    const notAfter = Math.min(now + validityDays * 86400_000, Date.parse(parent.notAfter));
    const der = await signCertificate(
      {
        serial: randomSerial(),
        issuer: parent.name,
        subject: buildName([
          ['O', organization],
          ['CN', `${organization} ${TITLES[kind]}${generation > 1 ? ` ${generation}` : ''}`],
        ]),
        notBefore: new Date(now - 60_000),
        notAfter: new Date(notAfter),
        subjectPublicKeyDer: spki,
        extensions: [
          extensions.basicConstraints(true, 0),
          extensions.keyUsage(
            KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature,
          ),
          extensions.subjectKeyIdentifier(spki),
          extensions.authorityKeyIdentifier(parent.spkiDer),
        ],
      },
      parentKey,
    );
    return this.storage.db.transaction().execute(async (tx) => {
      await alsoInTx?.(tx);
      return this.insert(tx, kind, generation, parent.id, key, der);
    });
  }

  private async insert(
    tx: Executor,
    kind: CaKind,
    generation: number,
    parentId: string | null,
    key: PlatformKey,
    der: Buffer,
  ): Promise<CaRecord> {
    const x = new X509Certificate(der);
    const row: CertificateAuthoritiesTable = {
      id: `${kind}-${generation}`,
      kind,
      generation,
      parent_id: parentId,
      key_label: key.label,
      key_algorithm: key.algorithm,
      key_state: 'online',
      key_exported_at: null,
      subject: nameToString(subjectNameOf(der)),
      serial: serialFromBytes(Buffer.from(x.serialNumber, 'hex')),
      certificate: x.toString(),
      not_before: new Date(x.validFrom).toISOString(),
      not_after: new Date(x.validTo).toISOString(),
      status: 'active',
      crl_number: 0,
      created_at: isoNow(),
    };
    await tx.insertInto('certificate_authorities').values(row).execute();
    return toRecord(row);
  }
}
